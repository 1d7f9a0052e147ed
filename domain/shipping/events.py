"""Facts shipping records."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from domain.shared.messages import Event


class OrderShipped(Event):
    type: Literal["OrderShipped"] = "OrderShipped"
    order_id: str
    tracking: str
    shipped_at: datetime


class OrderDelivered(Event):
    type: Literal["OrderDelivered"] = "OrderDelivered"
    order_id: str
    delivered_at: datetime


class ShipmentIntercepted(Event):
    type: Literal["ShipmentIntercepted"] = "ShipmentIntercepted"
    order_id: str
    refund_id: str
    tracking: str


class ShipmentInterceptFailed(Event):
    type: Literal["ShipmentInterceptFailed"] = "ShipmentInterceptFailed"
    order_id: str
    refund_id: str
    reason: str
