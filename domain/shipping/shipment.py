"""Shipment: the parcel of one order."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from domain.shared.aggregate import AggregateRoot
from domain.shared.errors import InvalidCommand
from domain.shipping.commands import ConfirmDelivery, InterceptShipment, ShipOrder
from domain.shipping.events import OrderDelivered, OrderShipped, ShipmentIntercepted, ShipmentInterceptFailed


class ShipmentStatus(StrEnum):
    IN_TRANSIT = "in_transit"
    DELIVERED = "delivered"
    INTERCEPTED = "intercepted"  # the carrier was asked to stop it, and said it would


class Shipment(AggregateRoot):
    tracking: str
    status: ShipmentStatus
    shipped_at: datetime
    # Whether whoever shipped it said when (`ship --at`); else `shipped_at` is only when the
    # shipment reached settleflow. Recorded before it was kept: taken as said.
    departure_stated: bool = True
    delivered_at: datetime | None = None

    @classmethod
    def ship(cls, command: ShipOrder) -> Shipment:
        shipped_at = command.shipped_at or command.issued_at
        if shipped_at > command.issued_at:
            raise InvalidCommand("shipped_in_future", "a parcel cannot be recorded as shipped before it leaves")
        shipment = cls(
            id=command.order_id, tracking=command.tracking, status=ShipmentStatus.IN_TRANSIT, shipped_at=shipped_at,
            departure_stated=command.shipped_at is not None,
        )
        shipment.record(
            command, OrderShipped(order_id=shipment.id, tracking=shipment.tracking, shipped_at=shipment.shipped_at)
        )
        return shipment

    def confirm_delivery(self, command: ConfirmDelivery) -> None:
        """A delivery dated by whoever confirms it (`delivered_at`), or else when it reached
        settleflow — but never before the parcel left: one dated before a departure nobody
        dated (facts out of order: the shipment reached settleflow later) is dated when the
        parcel left. Only dates stated by people can contradict each other, and are refused then.
        A parcel it was asked to stop can still arrive — the carrier's scan of a delivery made
        before the stop, or a stop that did not take: that delivery happened, and is kept."""
        if self.status not in (ShipmentStatus.IN_TRANSIT, ShipmentStatus.INTERCEPTED):
            raise InvalidCommand("not_in_transit", f"the parcel of order {self.id} is {self.status.value}")
        stated = command.delivered_at
        if stated is not None and stated > command.issued_at:
            raise InvalidCommand("delivery_in_future", "a delivery cannot be confirmed before it happens")
        if stated is not None and stated < self.shipped_at and self.departure_stated:
            raise InvalidCommand("delivered_before_shipped", "a parcel cannot arrive before it was shipped")
        delivered_at = max(stated or command.issued_at, self.shipped_at)
        self.status, self.delivered_at = ShipmentStatus.DELIVERED, delivered_at
        self.record(command, OrderDelivered(order_id=self.id, delivered_at=delivered_at))

    def intercept(self, command: InterceptShipment) -> None:
        """A parcel can be stopped only while it is on the road; otherwise that is a fact too."""
        if self.status is ShipmentStatus.IN_TRANSIT:
            self.status = ShipmentStatus.INTERCEPTED
            self.record(
                command, ShipmentIntercepted(order_id=self.id, refund_id=command.refund_id, tracking=self.tracking)
            )
        else:
            self.record(
                command,
                ShipmentInterceptFailed(order_id=self.id, refund_id=command.refund_id, reason=f"parcel {self.status.value}"),
            )
