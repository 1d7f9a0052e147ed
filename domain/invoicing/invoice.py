"""Invoice: the bill for one captured payment (tax-free)."""

from __future__ import annotations

import hashlib
from datetime import datetime

from domain.billing.commands import OrderLine
from domain.invoicing.commands import CreateInvoice
from domain.invoicing.events import InvoiceCreated
from domain.shared.aggregate import AggregateRoot
from domain.shared.errors import InvalidCommand
from domain.shared.money import Money, total


def invoice_number(command: CreateInvoice) -> str:
    # Derived from the order, so asking twice can only ever name the same invoice.
    digest = hashlib.sha256(command.order_id.encode()).hexdigest()[:12].upper()
    return f"INV-{digest}"


class Invoice(AggregateRoot):
    order_id: str
    customer_id: str
    lines: list[OrderLine]
    total: Money
    payment_reference: str
    issued_at: datetime

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
