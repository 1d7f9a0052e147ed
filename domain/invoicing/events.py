"""Facts invoicing records."""

from __future__ import annotations

from typing import Literal

from domain.shared.messages import Event
from domain.shared.money import Money


class InvoiceCreated(Event):
    type: Literal["InvoiceCreated"] = "InvoiceCreated"
    invoice_number: str
    order_id: str
    customer_id: str
    total: Money


class InvoiceCredited(Event):
    """A credit note against the invoice, for money paid back to the customer."""

    type: Literal["InvoiceCredited"] = "InvoiceCredited"
    credit_note_number: str
    invoice_number: str
    order_id: str
    customer_id: str
    refund_id: str
    amount: Money
