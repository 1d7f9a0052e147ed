"""Billing refuses facts dated before the facts they depend on, and order lines that
are not worth anything: with a reason code, and without changing the order."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from domain.billing.commands import ClearOrderForShipping, PlaceOrder, RecordDelivery, RecordShipment
from domain.billing.order import Fulfilment, Order
from domain.shared.actor import Actor, Role
from domain.shared.errors import InvalidCommand, NotAuthorized
from tests.unit.builders import T0, assert_refused, command, days, eur, paid_order, place_order, shipped_order


def test_a_shipment_dated_before_the_order_was_placed_is_refused():
    order = paid_order()  # placed at T0
    early = command(RecordShipment, order_id=order.id, tracking="TRK-1", shipped_at=T0 - days(1))
    assert_refused(order, lambda: order.record_shipment(early), InvalidCommand, "shipped_before_placed")
    assert order.fulfilment is Fulfilment.PENDING


def test_a_parcel_dated_before_the_order_was_placed_is_refused_before_it_may_leave():
    """Billing answers the warehouse's flow before shipping records anything."""
    order = paid_order()  # placed at T0
    early = command(ClearOrderForShipping, order_id=order.id, shipped_at=T0 - days(1))
    assert_refused(order, lambda: order.clear_for_shipping(early), InvalidCommand, "shipped_before_placed")


def test_a_shipment_dated_when_the_order_was_placed_is_recorded():
    order = paid_order()
    order.record_shipment(command(RecordShipment, order_id=order.id, tracking="TRK-1", shipped_at=T0))
    assert order.fulfilment is Fulfilment.SHIPPED and order.shipped_at == T0


def test_a_delivery_dated_before_its_shipment_is_refused():
    order = shipped_order(shipped_at=T0 + days(3))
    early = command(RecordDelivery, order_id=order.id, delivered_at=T0 + days(2), issued_at=T0 + days(4))
    assert_refused(order, lambda: order.record_delivery(early), InvalidCommand, "delivered_before_shipped")
    assert order.fulfilment is Fulfilment.SHIPPED and order.delivered_at is None


def test_an_order_placed_before_billing_kept_dates_still_takes_its_facts():
    stored = paid_order().model_dump()
    stored.pop("placed_at")
    order = Order.model_validate(stored)
    order.record_shipment(command(RecordShipment, order_id=order.id, tracking="TRK-1", shipped_at=T0 - days(9)))
    order.record_delivery(command(RecordDelivery, order_id=order.id, delivered_at=T0 - days(8)))
    assert order.fulfilment is Fulfilment.DELIVERED


@pytest.mark.parametrize("amounts", [("20.00", "-5.00"), ("20.00", "0.00"), ("0.01", "-0.00", "10.00")])
def test_every_order_line_must_be_greater_than_zero_not_only_the_total(amounts):
    with pytest.raises(InvalidCommand) as refused:
        Order.place(place_order(*amounts))
    assert refused.value.code == "line_not_positive"


def test_an_order_of_positive_lines_totals_them():
    order = Order.place(place_order("20.00", "0.01"))
    assert order.total == eur("20.01") and order.placed_at == T0


def test_an_order_placed_earlier_keeps_that_date_and_takes_a_shipment_after_it():
    order = Order.place(place_order(placed_at=T0).model_copy(update={"placed_at": T0 - days(50)}))
    order.record_shipment(command(RecordShipment, order_id=order.id, tracking="TRK-1", shipped_at=T0 - days(45)))
    assert order.placed_at == T0 - days(50) and order.fulfilment is Fulfilment.SHIPPED


def test_an_order_cannot_be_recorded_as_placed_in_the_future():
    with pytest.raises(InvalidCommand) as refused:
        Order.place(place_order().model_copy(update={"placed_at": T0 + days(1)}))
    assert refused.value.code == "placed_in_future"


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("order_id", "o-\x00", "NUL"),
        ("order_id", "o-\udcff", "unicode"),
        ("customer_id", "c" * 201, "at most 200"),
        ("customer_id", "   ", "blank"),
    ],
)
def test_a_command_with_an_id_no_database_can_store_cannot_even_be_asked_for(field, value, words):
    with pytest.raises(ValidationError) as refused:
        PlaceOrder.model_validate({**place_order().model_dump(), field: value})
    assert words in str(refused.value)


def test_a_customer_places_an_order_only_in_their_own_name():
    another = Actor(role=Role.CUSTOMER, id="c-2")
    with pytest.raises(NotAuthorized) as refused:
        Order.place(place_order().model_copy(update={"actor": another}))
    assert refused.value.code == "not_your_order"
    support = Actor(role=Role.SUPPORT, id="sam")  # support may place one for any customer
    assert Order.place(place_order().model_copy(update={"actor": support})).customer_id == "c-1"
