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
