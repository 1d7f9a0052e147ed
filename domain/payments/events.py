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
