"""Commands invoicing decides."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from domain.billing.commands import OrderLine
from domain.shared.actor import Role
from domain.shared.messages import Command, Id
from domain.shared.money import Money


class CreateInvoice(Command):
    """Invoice a captured payment. One invoice per captured payment, however often asked."""

    owner: ClassVar[str] = "invoicing"
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    order_id: Id
    customer_id: Id
    lines: list[OrderLine] = Field(min_length=1)
    total: Money
    payment_reference: Id


class CreditInvoice(Command):
    """Credit the order's invoice for a refund paid out: one credit note per refund, however
    often asked."""

    owner: ClassVar[str] = "invoicing"
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    order_id: Id
    refund_id: Id
    amount: Money
