"""Commands billing decides. Each says who may send it."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from domain.shared.actor import Role
from domain.shared.messages import DERIVED_ID_MAX, TEXT_MAX, Command, Message
from domain.shared.money import Money


class BillingCommand(Command):
    owner: ClassVar[str] = "billing"
    order_id: str = Field(min_length=1, max_length=200)


class OrderLine(Message):
    description: str = Field(min_length=1, max_length=500)
    amount: Money


class PlaceOrder(BillingCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.CUSTOMER, Role.SUPPORT, Role.SYSTEM})
    customer_id: str = Field(min_length=1, max_length=200)
    lines: list[OrderLine] = Field(min_length=1)


class MarkOrderPaid(BillingCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    amount: Money
    payment_reference: str


class RecordShipment(BillingCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    tracking: str
    shipped_at: datetime


class RecordDelivery(BillingCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    delivered_at: datetime


class ClearOrderForShipping(BillingCommand):
    """May this order's parcel leave? Billing answers before shipping acts."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})


class RecordInterceptOutcome(BillingCommand):
    """Shipping's answer to an intercept asked for by a refund: the parcel was stopped
    (it comes back to the shop) or it could not be (it is still on its way, or arrived)."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    refund_id: str = Field(min_length=1, max_length=DERIVED_ID_MAX)
    intercepted: bool
    reason: str = Field(default="", max_length=TEXT_MAX)  # why it could not be stopped


class RequestRefund(BillingCommand):
    """Customer, support or a policy asks for money back; billing decides."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.CUSTOMER, Role.SUPPORT, Role.SYSTEM})
    refund_id: str = Field(min_length=1, max_length=DERIVED_ID_MAX)  # a cancellation's refund id is derived
    amount: Money | None = None  # None: everything still refundable
    reason: str = Field(min_length=1, max_length=TEXT_MAX)


class CancelRefund(BillingCommand):
    """Compensation: the refund will not be paid (e.g. fraud review rejected)."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    refund_id: str
    reason: str


class CompleteRefund(BillingCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    refund_id: str
    gateway_reference: str


class FailRefund(BillingCommand):
    """Compensation: the gateway declined or never answered; the amount is refundable again."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    refund_id: str
    reason: str


class CancelOrder(BillingCommand):
    """Customer, support, or a policy (payment abandoned) asks to cancel the order."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.CUSTOMER, Role.SUPPORT, Role.SYSTEM})
    reason: str = Field(min_length=1, max_length=TEXT_MAX)
