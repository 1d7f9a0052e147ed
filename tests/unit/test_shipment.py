"""Shipping's Shipment: shipping, delivery, and stopping a parcel on the road."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from domain.shared.errors import InvalidCommand
from domain.shipping.commands import ConfirmDelivery, InterceptShipment, ShipOrder
from domain.shipping.events import OrderDelivered, OrderShipped, ShipmentIntercepted, ShipmentInterceptFailed
from domain.shipping.shipment import Shipment, ShipmentStatus
from tests.unit.builders import ORDER_ID, SUPPORT, T0, WAREHOUSE, assert_refused, command, days, names

SHIPPED_AT = T0
ONE_SECOND = timedelta(seconds=1)


def ship_cmd(shipped_at: datetime | None = None, issued_at: datetime = T0, actor=WAREHOUSE) -> ShipOrder:
    return command(ShipOrder, actor=actor, issued_at=issued_at, order_id=ORDER_ID, tracking="TRK-1", shipped_at=shipped_at)


def deliver_cmd(delivered_at: datetime | None = None, issued_at: datetime = T0 + days(2)) -> ConfirmDelivery:
    return command(ConfirmDelivery, actor=WAREHOUSE, issued_at=issued_at, order_id=ORDER_ID, delivered_at=delivered_at)


def intercept_cmd(refund_id: str = "r-1") -> InterceptShipment:
    return command(InterceptShipment, order_id=ORDER_ID, refund_id=refund_id, issued_at=T0 + days(1))


def in_transit() -> Shipment:
    shipment = Shipment.ship(ship_cmd(shipped_at=SHIPPED_AT, issued_at=SHIPPED_AT))
    shipment.clear_events()
    return shipment


def delivered() -> Shipment:
    shipment = in_transit()
    shipment.confirm_delivery(deliver_cmd())
    shipment.clear_events()
    return shipment


def intercepted() -> Shipment:
    shipment = in_transit()
    shipment.intercept(intercept_cmd())
    shipment.clear_events()
    return shipment


# == shipping ==============================================================================================
def test_shipping_an_order_puts_its_parcel_in_transit():
    shipment = Shipment.ship(ship_cmd(shipped_at=T0 - days(1), issued_at=T0))
    assert shipment.id == ORDER_ID and shipment.tracking == "TRK-1"
    assert shipment.status is ShipmentStatus.IN_TRANSIT and shipment.shipped_at == T0 - days(1)
    [shipped] = shipment.pending_events
    assert isinstance(shipped, OrderShipped)
    assert shipped.tracking == "TRK-1" and shipped.shipped_at == T0 - days(1) and shipped.order_id == ORDER_ID


def test_a_parcel_without_a_shipping_time_was_shipped_when_the_command_was_issued():
    shipment = Shipment.ship(ship_cmd(shipped_at=None, issued_at=T0 + days(4)))
    assert shipment.shipped_at == T0 + days(4)
    assert shipment.pending_events[0].shipped_at == T0 + days(4)


def test_a_parcel_may_be_recorded_as_shipped_at_the_moment_the_command_is_issued():
    assert Shipment.ship(ship_cmd(shipped_at=T0, issued_at=T0)).shipped_at == T0


def test_a_parcel_cannot_be_recorded_as_shipped_in_the_future():
    with pytest.raises(InvalidCommand) as refused:
        Shipment.ship(ship_cmd(shipped_at=T0 + ONE_SECOND, issued_at=T0))
    assert refused.value.code == "shipped_in_future"


def test_support_may_ship_too():
    assert names(Shipment.ship(ship_cmd(actor=SUPPORT)).pending_events) == ["OrderShipped"]


def test_a_shipping_time_without_a_time_zone_is_refused_as_an_invalid_command():
    naive = datetime(2025, 2, 28, 12, 0)
    with pytest.raises((InvalidCommand, ValueError)):
        Shipment.ship(ship_cmd(shipped_at=naive, issued_at=T0))


# == delivery ==============================================================================================
def test_confirming_delivery_marks_the_parcel_delivered():
    shipment = in_transit()
    shipment.confirm_delivery(deliver_cmd(delivered_at=T0 + days(1), issued_at=T0 + days(2)))
    [arrived] = shipment.pending_events
    assert isinstance(arrived, OrderDelivered) and arrived.delivered_at == T0 + days(1)
    assert shipment.status is ShipmentStatus.DELIVERED and shipment.delivered_at == T0 + days(1)


def test_a_delivery_without_a_time_happened_when_the_command_was_issued():
    shipment = in_transit()
    shipment.confirm_delivery(deliver_cmd(delivered_at=None, issued_at=T0 + days(3)))
    assert shipment.delivered_at == T0 + days(3)


def test_a_parcel_may_arrive_the_moment_it_was_shipped():
    shipment = in_transit()
    shipment.confirm_delivery(deliver_cmd(delivered_at=SHIPPED_AT))
    assert shipment.status is ShipmentStatus.DELIVERED


def test_a_parcel_cannot_arrive_before_it_was_shipped():
    shipment = in_transit()
    assert_refused(
        shipment,
        lambda: shipment.confirm_delivery(deliver_cmd(delivered_at=SHIPPED_AT - ONE_SECOND)),
        InvalidCommand,
        "delivered_before_shipped",
    )


def test_an_undated_delivery_that_reached_settleflow_before_its_shipment_is_dated_when_the_parcel_left():
    # Neither was dated by a person: each is dated when it reached settleflow, the delivery first
    # (it waited for its shipment). It is kept, never refused, and never dated before the parcel left.
    left_at = T0 + days(1)
    shipment = Shipment.ship(ship_cmd(issued_at=left_at))
    shipment.clear_events()

    shipment.confirm_delivery(deliver_cmd(issued_at=T0 + days(1) - timedelta(hours=2)))

    [delivered] = shipment.pending_events
    assert isinstance(delivered, OrderDelivered) and delivered.delivered_at == left_at
    assert shipment.status is ShipmentStatus.DELIVERED


def test_a_dated_delivery_before_a_departure_nobody_dated_is_dated_when_the_parcel_left():
    shipment = Shipment.ship(ship_cmd(issued_at=T0 + days(1)))  # no `--at`: dated when it reached settleflow
    shipment.clear_events()

    shipment.confirm_delivery(deliver_cmd(delivered_at=T0 + days(1) - timedelta(hours=1), issued_at=T0 + days(1)))

    [delivered] = shipment.pending_events
    assert delivered.delivered_at == T0 + days(1)


def test_a_delivery_cannot_be_confirmed_before_it_happens():
    shipment = in_transit()
    assert_refused(
        shipment,
        lambda: shipment.confirm_delivery(deliver_cmd(delivered_at=T0 + days(2) + ONE_SECOND, issued_at=T0 + days(2))),
        InvalidCommand,
        "delivery_in_future",
    )


def test_a_delivery_confirmed_at_the_moment_it_happens_is_accepted():
    shipment = in_transit()
    shipment.confirm_delivery(deliver_cmd(delivered_at=T0 + days(2), issued_at=T0 + days(2)))
    assert shipment.status is ShipmentStatus.DELIVERED


def test_a_delivered_parcel_cannot_be_delivered_again():
    shipment = delivered()
    assert_refused(shipment, lambda: shipment.confirm_delivery(deliver_cmd()), InvalidCommand, "not_in_transit")


def test_a_parcel_asked_to_stop_that_arrived_all_the_same_is_recorded_delivered():
    # The carrier's scan of a delivery made before the stop reaches settleflow after it.
    shipment = intercepted()
    shipment.confirm_delivery(deliver_cmd(delivered_at=T0 + days(0.5), issued_at=T0 + days(3)))
    [arrived] = shipment.pending_events
    assert isinstance(arrived, OrderDelivered) and arrived.delivered_at == T0 + days(0.5)
    assert (shipment.status, shipment.delivered_at) == (ShipmentStatus.DELIVERED, T0 + days(0.5))


# == interception ==========================================================================================
def test_a_parcel_in_transit_is_intercepted():
    shipment = in_transit()
    shipment.intercept(intercept_cmd("r-9"))
    [stopped] = shipment.pending_events
    assert isinstance(stopped, ShipmentIntercepted)
    assert stopped.refund_id == "r-9" and stopped.tracking == "TRK-1" and stopped.order_id == ORDER_ID
    assert shipment.status is ShipmentStatus.INTERCEPTED


@pytest.mark.parametrize(("build", "status"), [(delivered, "delivered"), (intercepted, "intercepted")])
def test_a_parcel_no_longer_in_transit_cannot_be_intercepted_and_that_is_a_fact(build, status):
    shipment = build()
    before = shipment.model_dump()
    shipment.intercept(intercept_cmd("r-2"))
    [failed] = shipment.pending_events
    assert isinstance(failed, ShipmentInterceptFailed)
    assert failed.refund_id == "r-2" and failed.reason == f"parcel {status}"
    assert shipment.model_dump() == before  # the parcel itself is unchanged
