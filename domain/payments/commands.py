"""Commands payments decides."""

from __future__ import annotations

from typing import ClassVar

from domain.shared.actor import Role
from domain.shared.messages import Command, DerivedId, Id
from domain.shared.money import Money


class PaymentsCommand(Command):
    owner: ClassVar[str] = "payments"
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    order_id: Id


class CapturePayment(PaymentsCommand):
    """Take the order's money from the customer's card."""

    customer_id: Id
    amount: Money
    card_token: Id


class SendRefundToGateway(PaymentsCommand):
    """Pay an approved refund back through the gateway; the refund id is the idempotency key."""

    refund_id: DerivedId
    amount: Money


class RetryPaymentCapture(PaymentsCommand):
    """Another attempt after a decline; payments decides whether one is still allowed."""


class UpdatePaymentMethod(PaymentsCommand):
    """The customer gave a new card during recovery."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.CUSTOMER, Role.SUPPORT, Role.SYSTEM})
    card_token: Id
