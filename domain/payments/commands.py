"""Commands payments decides."""

from __future__ import annotations

from typing import ClassVar

from domain.shared.actor import Role
from domain.shared.messages import Command, DerivedId, Id, Note, Text
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


class MarkRefundUnknown(PaymentsCommand):
    """The refund flow got no usable answer (retries ran out, a timeout after the request may
    have gone through, a refused request, an operator's Cancel): payments records what it knows."""

    refund_id: DerivedId
    reason: Text


class MarkCaptureUnknown(PaymentsCommand):
    """The payment flow got no usable answer for a capture attempt."""

    attempt_id: DerivedId
    reason: Text


class ReconcileGatewayRefund(PaymentsCommand):
    """Reconciliation asks the gateway what became of a refund whose answer is unknown (or
    that was sent long ago); payments decides what the gateway's answer means."""

    refund_id: DerivedId


class ReconcileCapture(PaymentsCommand):
    """The same for a capture attempt."""

    attempt_id: DerivedId


class RetryPaymentCapture(PaymentsCommand):
    """Another attempt after a decline; payments decides whether one is still allowed."""


class UpdatePaymentMethod(PaymentsCommand):
    """The customer gave a new card during recovery."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.CUSTOMER, Role.SUPPORT, Role.SYSTEM})
    card_token: Id
