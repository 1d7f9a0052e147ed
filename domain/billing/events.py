"""Facts billing records."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from domain.shared.messages import Event
from domain.shared.money import Money


class OrderPlaced(Event):
    type: Literal["OrderPlaced"] = "OrderPlaced"
    order_id: str
    customer_id: str
    total: Money


class OrderPaid(Event):
    type: Literal["OrderPaid"] = "OrderPaid"
    order_id: str
    amount: Money


class ShipmentRecorded(Event):
    type: Literal["ShipmentRecorded"] = "ShipmentRecorded"
    order_id: str
    tracking: str


class DeliveryRecorded(Event):
    type: Literal["DeliveryRecorded"] = "DeliveryRecorded"
    order_id: str
    delivered_at: datetime


class RefundApproved(Event):
    type: Literal["RefundApproved"] = "RefundApproved"
    order_id: str
    refund_id: str
    customer_id: str
    amount: Money


class RefundRejected(Event):
    type: Literal["RefundRejected"] = "RefundRejected"
    order_id: str
    refund_id: str
    customer_id: str
    reason_code: str
    detail: str


class ShipmentInterceptRequested(Event):
    type: Literal["ShipmentInterceptRequested"] = "ShipmentInterceptRequested"
    order_id: str
    refund_id: str
    tracking: str


class RefundCancelled(Event):
    type: Literal["RefundCancelled"] = "RefundCancelled"
    order_id: str
    refund_id: str
    customer_id: str
    amount: Money
    reason: str


class RefundCompleted(Event):
    type: Literal["RefundCompleted"] = "RefundCompleted"
    order_id: str
    refund_id: str
    customer_id: str
    amount: Money


class RefundFailed(Event):
    type: Literal["RefundFailed"] = "RefundFailed"
    order_id: str
    refund_id: str
    customer_id: str
    amount: Money
    reason: str


class OrderCancelled(Event):
    type: Literal["OrderCancelled"] = "OrderCancelled"
    order_id: str
    customer_id: str
    reason: str
    cancelled_by: str


class RefundOwed(Event):
    """A cancelled order had been paid: the money still refundable must go back."""

    type: Literal["RefundOwed"] = "RefundOwed"
    order_id: str
    customer_id: str
    amount: Money
