"""Billing's activities: load the Order, call one method, save."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities.handling import decide
from domain.billing.commands import (
    CancelOrder,
    CancelRefund,
    ClearOrderForShipping,
    CompleteRefund,
    FailRefund,
    MarkOrderPaid,
    PlaceOrder,
    RecordDelivery,
    RecordInterceptOutcome,
    RecordShipment,
    RequestRefund,
)
from domain.billing.fulfilment import RecordedFulfilment
from domain.billing.order import Order
from domain.contracts import Outcome


class BillingActivities:
    def __init__(self, uow_factory: Callable[[], Any]) -> None:
        self.uow = uow_factory

    @activity.defn(name=RecordedFulfilment.activity_name)
    def recorded_fulfilment(self, order_id: str) -> RecordedFulfilment:
        """Billing's record of the order's parcel. A read: decides nothing, changes nothing."""
        with self.uow() as uow:
            order = uow.orders.get(order_id)
        return RecordedFulfilment(order_id=order.id, fulfilment=order.fulfilment)

    @activity.defn(name=PlaceOrder.activity_name())
    def place_order(self, command: PlaceOrder) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.orders.add_new(Order.place(command)))

    @activity.defn(name=MarkOrderPaid.activity_name())
    def mark_order_paid(self, command: MarkOrderPaid) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.orders.get(command.order_id).mark_paid(command))

    @activity.defn(name=CancelOrder.activity_name())
    def cancel_order(self, command: CancelOrder) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.orders.get(command.order_id).cancel(command))

    @activity.defn(name=ClearOrderForShipping.activity_name())
    def clear_order_for_shipping(self, command: ClearOrderForShipping) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.orders.get(command.order_id).clear_for_shipping(command))

    @activity.defn(name=RecordInterceptOutcome.activity_name())
    def record_intercept_outcome(self, command: RecordInterceptOutcome) -> Outcome:
        return decide(
            self.uow, command, lambda uow: uow.orders.get(command.order_id).record_intercept_outcome(command)
        )

    @activity.defn(name=RecordShipment.activity_name())
    def record_shipment(self, command: RecordShipment) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.orders.get(command.order_id).record_shipment(command))

    @activity.defn(name=RecordDelivery.activity_name())
    def record_delivery(self, command: RecordDelivery) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.orders.get(command.order_id).record_delivery(command))

    @activity.defn(name=RequestRefund.activity_name())
    def request_refund(self, command: RequestRefund) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.orders.get(command.order_id).request_refund(command))

    @activity.defn(name=CancelRefund.activity_name())
    def cancel_refund(self, command: CancelRefund) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.orders.get(command.order_id).cancel_refund(command))

    @activity.defn(name=CompleteRefund.activity_name())
    def complete_refund(self, command: CompleteRefund) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.orders.get(command.order_id).complete_refund(command))

    @activity.defn(name=FailRefund.activity_name())
    def fail_refund(self, command: FailRefund) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.orders.get(command.order_id).fail_refund(command))
