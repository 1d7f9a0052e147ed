"""Facts payments records."""

from __future__ import annotations

from typing import Literal

from domain.shared.messages import Event
from domain.shared.money import Money


class CaptureAttempted(Event):
    """Payments asked the gateway to capture (before the answer is known)."""

    type: Literal["CaptureAttempted"] = "CaptureAttempted"
    order_id: str
    attempt_id: str
    amount: Money


class PaymentCaptured(Event):
    type: Literal["PaymentCaptured"] = "PaymentCaptured"
    order_id: str
    customer_id: str
    attempt_id: str
    amount: Money
    gateway_reference: str


class PaymentDeclined(Event):
    type: Literal["PaymentDeclined"] = "PaymentDeclined"
    order_id: str
    customer_id: str
    attempt_id: str
    amount: Money
    decline_code: str


class GatewayRefundRequested(Event):
    """Payments asked the gateway to refund (before the answer is known)."""

    type: Literal["GatewayRefundRequested"] = "GatewayRefundRequested"
    order_id: str
    refund_id: str
    amount: Money


class GatewayRefundSettled(Event):
    type: Literal["GatewayRefundSettled"] = "GatewayRefundSettled"
    order_id: str
    refund_id: str
    amount: Money
    gateway_reference: str


class GatewayRefundDeclined(Event):
    type: Literal["GatewayRefundDeclined"] = "GatewayRefundDeclined"
    order_id: str
    refund_id: str
    amount: Money
    decline_code: str


class CaptureOutcomeUnknown(Event):
    """Nobody knows whether this attempt charged the card: a fact, not a failure.
    Reconciliation asks the gateway; until then no new attempt may start."""

    type: Literal["CaptureOutcomeUnknown"] = "CaptureOutcomeUnknown"
    order_id: str
    attempt_id: str
    amount: Money
    reason: str


class GatewayRefundOutcomeUnknown(Event):
    """Nobody knows whether the gateway paid this refund: its amount stays counted as
    refunded (and billing keeps it reserved) until reconciliation learns the answer."""

    type: Literal["GatewayRefundOutcomeUnknown"] = "GatewayRefundOutcomeUnknown"
    order_id: str
    refund_id: str
    amount: Money
    reason: str


class GatewayRefundNotFound(Event):
    """The gateway confirmed, when asked by the refund id, that it holds no such refund:
    no money went out."""

    type: Literal["GatewayRefundNotFound"] = "GatewayRefundNotFound"
    order_id: str
    refund_id: str
    amount: Money


class GatewayRefundNotSent(Event):
    """Payments never asked the gateway for this refund (it refused the request itself):
    no money went out."""

    type: Literal["GatewayRefundNotSent"] = "GatewayRefundNotSent"
    order_id: str
    refund_id: str


class PaymentAbandoned(Event):
    """Payments gives up: a hard decline, or no attempts left."""

    type: Literal["PaymentAbandoned"] = "PaymentAbandoned"
    order_id: str
    customer_id: str
    reason: str  # "hard_decline:<code>" or "attempts_exhausted"
    attempts: int


class PaymentMethodUpdated(Event):
    type: Literal["PaymentMethodUpdated"] = "PaymentMethodUpdated"
    order_id: str
    card_token: str
