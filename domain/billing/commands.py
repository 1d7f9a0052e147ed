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
    """Compensation: payments confirmed that no money went out; the amount is refundable again.

    `confirmed_by` names payments' fact that confirms it (`GatewayRefundDeclined`,
    `GatewayRefundNotFound`, `GatewayRefundNotSent`) and `evidence` that event's id. "We do not
    know" (retries ran out, a timeout, a refused request) confirms nothing: billing refuses it.
    """

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    refund_id: str
    reason: str
    confirmed_by: str = ""
    evidence: str = ""


class CancelOrder(BillingCommand):
    """Customer, support, or a policy (payment abandoned) asks to cancel the order."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.CUSTOMER, Role.SUPPORT, Role.SYSTEM})
    reason: str = Field(min_length=1, max_length=TEXT_MAX)
