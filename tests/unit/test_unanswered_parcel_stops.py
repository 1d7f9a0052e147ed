"""A stop of a parcel billing asked for is never forgotten: one still unanswered an hour later,
while billing knows the parcel on the road, is what reconciliation asks Temporal about
(`domain/reconciliation/unanswered_stop.py`)."""

from __future__ import annotations

from datetime import timedelta

from domain.billing.commands import RecordDelivery, RequestRefund
from domain.reconciliation.unanswered_stop import UNANSWERED_AFTER, unanswered_stop
from tests.unit.builders import CUSTOMER, T0, command, days, shipped_order

ASKED_AT = T0 + days(1)


def order_asking_a_stop():
    order = shipped_order("100.00")
    order.request_refund(command(
        RequestRefund, actor=CUSTOMER, issued_at=ASKED_AT, order_id=order.id, refund_id="r-1", reason="broken",
    ))
    return order


def test_a_stop_unanswered_for_over_an_hour_is_asked_about():
    order = order_asking_a_stop()
    stop = unanswered_stop(order, ASKED_AT + UNANSWERED_AFTER + timedelta(seconds=1))
    assert (stop.refund_id, stop.asked_at) == ("r-1", ASKED_AT)


def test_a_stop_asked_for_less_than_an_hour_ago_is_left_to_its_flow():
    assert unanswered_stop(order_asking_a_stop(), ASKED_AT + UNANSWERED_AFTER - timedelta(seconds=1)) is None


def test_an_order_whose_parcel_arrived_has_no_stop_to_ask_about():
    order = order_asking_a_stop()
    order.record_delivery(command(RecordDelivery, issued_at=ASKED_AT, order_id=order.id, delivered_at=ASKED_AT))
    assert unanswered_stop(order, ASKED_AT + days(1)) is None


def test_an_order_that_never_asked_for_a_stop_has_none_to_ask_about():
    assert unanswered_stop(shipped_order("100.00"), T0 + days(30)) is None
