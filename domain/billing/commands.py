"""Commands billing decides. Each says who may send it."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from domain.shared.actor import Role
from domain.shared.messages import Command, DerivedId, Id, Message, Note, Text
from domain.shared.money import Money


class BillingCommand(Command):
    owner: ClassVar[str] = "billing"
    order_id: Id


class OrderLine(Message):
    description: Text
    amount: Money  # billing refuses a line that is not greater than zero (Order.place)


class PlaceOrder(BillingCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.CUSTOMER, Role.SUPPORT, Role.SYSTEM})
    customer_id: Id
    lines: list[OrderLine] = Field(min_length=1)
    placed_at: datetime | None = None  # None: placed when the command was issued


class MarkOrderPaid(BillingCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    amount: Money
    payment_reference: Id


class RecordShipment(BillingCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    tracking: Id
    shipped_at: datetime


class RecordDelivery(BillingCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    delivered_at: datetime


class ClearOrderForShipping(BillingCommand):
    """May this order's parcel leave? Billing answers before shipping acts. Sent with the
    warehouse's (or support's) own identity, so that nothing is recorded for a sender
    whose token does not hold."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM, Role.WAREHOUSE, Role.SUPPORT})
    shipped_at: datetime | None = None  # when the parcel leaves (None: asked by flows started before this)


class RecordInterceptOutcome(BillingCommand):
    """Shipping's answer to an intercept asked for by a refund: the parcel was stopped
    (it comes back to the shop) or it could not be (it is still on its way, or arrived)."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    refund_id: DerivedId
    intercepted: bool
    reason: Note = ""  # why it could not be stopped


class RequestRefund(BillingCommand):
    """Customer, support or a policy asks for money back; billing decides."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.CUSTOMER, Role.SUPPORT, Role.SYSTEM})
    refund_id: DerivedId  # a cancellation's refund id is derived
    amount: Money | None = None  # None: everything still refundable
    reason: Text


class CancelRefund(BillingCommand):
    """Compensation: the refund will not be paid (e.g. fraud review rejected)."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    refund_id: DerivedId
    reason: Text


class CompleteRefund(BillingCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    refund_id: DerivedId
    gateway_reference: Id


class FailRefund(BillingCommand):
    """Compensation: payments confirmed that no money went out; the amount is refundable again.

    `confirmed_by` names payments' fact that confirms it (`GatewayRefundDeclined`,
    `GatewayRefundNotFound`, `GatewayRefundNotSent`) and `evidence` that event's id. "We do not
    know" (retries ran out, a timeout, a refused request) confirms nothing: billing refuses it.
    """

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    refund_id: DerivedId
    reason: Text
    confirmed_by: str = ""  # the type of payments' event that confirms no money moved
    evidence: str = ""  # that event's id


class CancelOrder(BillingCommand):
    """Customer, support, or a policy (payment abandoned) asks to cancel the order."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.CUSTOMER, Role.SUPPORT, Role.SYSTEM})
    reason: Text
