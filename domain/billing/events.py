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


class CancelledOrderDelivered(Event):
    """A cancelled order's parcel reached its customer: its delivery became known only after
    the cancellation (it came before its shipment's record, or late), or it could not be
    stopped in time. The customer has the goods, and the order's money is owed or went back:
    support decides whether to ask for the goods."""

    type: Literal["CancelledOrderDelivered"] = "CancelledOrderDelivered"
    order_id: str
    customer_id: str
    delivered_at: datetime


class ReturnedParcelDelivered(Event):
    """A parcel stopped for a refund of all of its money reached its customer after all: the
    carrier's scan of a delivery made before the stop came late, or the stop did not take — or
    billing had recorded the delivery before shipping's "stopped" reached it (`returned_at` is
    then when that answer was recorded). The customer has the goods and the refund; support
    decides whether to ask for the goods back."""

    type: Literal["ReturnedParcelDelivered"] = "ReturnedParcelDelivered"
    order_id: str
    customer_id: str
    delivered_at: datetime
    returned_at: datetime


class DeliveryHeld(Event):
    """A delivery arrived before billing knew the parcel had shipped: it is kept and
    applied (DeliveryRecorded) as soon as the shipment is recorded."""

    type: Literal["DeliveryHeld"] = "DeliveryHeld"
    order_id: str
    delivered_at: datetime


class OrderClearedForShipping(Event):
    type: Literal["OrderClearedForShipping"] = "OrderClearedForShipping"
    order_id: str


class ShippingRefused(Event):
    """The order may not ship: not paid, or cancelled."""

    type: Literal["ShippingRefused"] = "ShippingRefused"
    order_id: str
    reason_code: str
    detail: str


class ParcelReturned(Event):
    """The parcel was intercepted (for a refund, or a cancellation): it goes back to the shop,
    and what is still refundable is owed back."""

    type: Literal["ParcelReturned"] = "ParcelReturned"
    order_id: str
    refund_id: str
    returned_at: datetime


class ParcelStillInTransit(Event):
    """The parcel could not be stopped (already delivered, or already stopped): the
    order stays as it was; its delivery, when recorded, starts the refund window."""

    type: Literal["ParcelStillInTransit"] = "ParcelStillInTransit"
    order_id: str
    refund_id: str
    reason: str


class RefundApproved(Event):
    type: Literal["RefundApproved"] = "RefundApproved"
    order_id: str
    refund_id: str
    customer_id: str
    amount: Money
    # Owed because the order was cancelled after it was paid: it goes back whatever a
    # review or a timer says (fraud clears it without a review).
    owed: bool = False
    requested_by: str = ""  # the id of the person who asked (separation of duties in review)


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
    """A cancelled order had been paid: the money still refundable must go back. Also
    recorded when a refund of a cancelled order fails or is cancelled: that amount is
    owed again, and support is told."""

    type: Literal["RefundOwed"] = "RefundOwed"
    order_id: str
    customer_id: str
    amount: Money
