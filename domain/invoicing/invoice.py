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
from domain.shared.errors import InvalidCommand
from domain.shared.money import Money, total


def invoice_number(command: CreateInvoice) -> str:
    # Derived from the order, so asking twice can only ever name the same invoice.
    return _derived_number("INV", command.order_id)


def credit_note_number(refund_id: str) -> str:
    # Derived from the refund, so crediting it twice can only ever name the same note.
    return _derived_number("CN", refund_id)


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

    def credit(self, command: CreditInvoice) -> None:
        """A credit note for a refund paid out. The same refund again changes nothing; the notes
        never credit more than the invoice billed, and only in its currency."""
        if any(note.refund_id == command.refund_id for note in self.credit_notes):
            return
        if command.amount.currency != self.total.currency:
            raise InvalidCommand("currency_mismatch", f"invoice {self.id} is in {self.total.currency}, "
                                 f"not {command.amount.currency}")
        if not command.amount.is_positive:
            raise InvalidCommand("amount_not_positive", f"a credit note is for a positive amount, not {command.amount}")
        if self.credited + command.amount > self.total:
            raise InvalidCommand("credit_exceeds_invoice", f"invoice {self.id} billed {self.total}, "
                                 f"{self.credited} is credited already: {command.amount} more is too much")
        note = CreditNote(number=credit_note_number(command.refund_id), refund_id=command.refund_id,
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
