"""Shipping's activities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities.handling import decide
from domain.contracts import Outcome
from domain.shipping.commands import ConfirmDelivery, InterceptShipment, ShipOrder
from domain.shipping.shipment import Shipment


class ShippingActivities:
    def __init__(self, uow_factory: Callable[[], Any]) -> None:
        self.uow = uow_factory

    @activity.defn(name=ShipOrder.activity_name())
    def ship_order(self, command: ShipOrder) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.shipments.add_new(Shipment.ship(command)))

    @activity.defn(name=ConfirmDelivery.activity_name())
    def confirm_delivery(self, command: ConfirmDelivery) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.shipments.get(command.order_id).confirm_delivery(command))

    @activity.defn(name=InterceptShipment.activity_name())
    def intercept_shipment(self, command: InterceptShipment) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.shipments.get(command.order_id).intercept(command))
