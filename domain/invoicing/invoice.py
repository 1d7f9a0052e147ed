"""Invoice: the bill for one captured payment (tax-free), and the credit notes against it
for the refunds paid out of that payment."""

from __future__ import annotations

import hashlib
from datetime import datetime

from domain.billing.commands import OrderLine
from pydantic import BaseModel

from domain.invoicing.commands import CreateInvoice, CreditInvoice
from domain.invoicing.events import InvoiceCreated, InvoiceCredited
from domain.shared.aggregate import AggregateRoot
from domain.shared.errors import InvalidCommand, NotFound
from domain.shared.money import Money, total


def invoice_number(command: CreateInvoice) -> str:
    # Derived from the order, so asking twice can only ever name the same invoice.
    return _derived_number("INV", command.order_id)


def credit_note_number(order_id: str, refund_id: str) -> str:
    # Derived from the refund (whose id is the order's own), so crediting it twice can only ever
    # name the same note, and two orders' refunds of one id never share a number.
    return _derived_number("CN", f"{order_id}/{refund_id}")


def _derived_number(prefix: str, business_id: str) -> str:
    return f"{prefix}-{hashlib.sha256(business_id.encode()).hexdigest()[:12].upper()}"


class CreditNote(BaseModel):
    number: str
    refund_id: str
    amount: Money
    issued_at: datetime


class Invoice(AggregateRoot):
    order_id: str
    customer_id: str
    lines: list[OrderLine]
    total: Money
    payment_reference: str
    issued_at: datetime
    credit_notes: list[CreditNote] = []

    @property
    def credited(self) -> Money:
        return total([note.amount for note in self.credit_notes], self.total.currency)

    @property
    def credited_refunds(self) -> frozenset[str]:
        """The refunds this invoice holds a credit note for."""
        return frozenset(note.refund_id for note in self.credit_notes)

    @staticmethod
    def credit_of(invoice: Invoice | None, command: CreditInvoice) -> None:
        """Credit the order's invoice; an order never invoiced has nothing to credit (refused)."""
        if invoice is None:
            raise NotFound(code="no_invoice", message=f"order {command.order_id} has no invoice to credit")
        invoice.credit(command)

    def credit(self, command: CreditInvoice) -> None:
        """A credit note for a refund paid out. The same refund again changes nothing (for
        another amount it is refused: one refund, one amount); the notes never credit more than
        the invoice billed, and only in its currency."""
        if (noted := next((n for n in self.credit_notes if n.refund_id == command.refund_id), None)) is not None:
            if noted.amount != command.amount:
                raise InvalidCommand("credit_note_conflict", f"refund {command.refund_id} was credited "
                                     f"{noted.amount} ({noted.number}), not {command.amount}")
            return
        if command.amount.currency != self.total.currency:
            raise InvalidCommand("currency_mismatch", f"invoice {self.id} is in {self.total.currency}, "
                                 f"not {command.amount.currency}")
        if not command.amount.is_positive:
            raise InvalidCommand("amount_not_positive", f"a credit note is for a positive amount, not {command.amount}")
        if self.credited + command.amount > self.total:
            raise InvalidCommand("credit_exceeds_invoice", f"invoice {self.id} billed {self.total}, "
                                 f"{self.credited} is credited already: {command.amount} more is too much")
        note = CreditNote(number=credit_note_number(self.order_id, command.refund_id), refund_id=command.refund_id,
                          amount=command.amount, issued_at=command.issued_at)
        self.credit_notes.append(note)
        self.record(command, InvoiceCredited(
            credit_note_number=note.number, invoice_number=self.id, order_id=self.order_id,
            customer_id=self.customer_id, refund_id=note.refund_id, amount=note.amount,
        ))

    @classmethod
    def create(cls, command: CreateInvoice, existing: Invoice | None) -> Invoice:
        """Create the order's invoice, unless it already has one (then nothing changes)."""
        if existing is not None:
            return existing
        lines_total = total([line.amount for line in command.lines], command.total.currency)
        if lines_total != command.total:
            raise InvalidCommand("total_mismatch", f"lines add up to {lines_total}, not {command.total}")
        invoice = cls(
            id=invoice_number(command),
            order_id=command.order_id,
            customer_id=command.customer_id,
            lines=command.lines,
            total=command.total,
            payment_reference=command.payment_reference,
            issued_at=command.issued_at,
        )
        invoice.record(
            command,
            InvoiceCreated(
                invoice_number=invoice.id, order_id=invoice.order_id, customer_id=invoice.customer_id, total=invoice.total
            ),
        )
        return invoice
