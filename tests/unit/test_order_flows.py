"""Billing's rules that keep every way a refund or an order can end a right one:
which refunds stop a parcel, what an intercept's answer means, facts that arrive out of
order, whether an order may ship, and money owed after a cancellation."""

from __future__ import annotations

from domain.billing.commands import (
    CancelOrder,
    CancelRefund,
    ClearOrderForShipping,
    CompleteRefund,
    FailRefund,
    RecordDelivery,
    RecordInterceptOutcome,
    RecordShipment,
    RequestRefund,
)
from domain.billing.order import Fulfilment, Order
from domain.fraud.commands import ScreenRefund
from domain.fraud.events import RefundCleared
from domain.fraud.review import FraudReview, ReviewStatus
from domain.fraud.screening import RefundScreening
from domain.shared.actor import Actor
from domain.shared.errors import InvalidCommand
from domain.shared.money import Money
from tests.unit.builders import (
    CUSTOMER,
    SUPPORT,
    T0,
    assert_refused,
    command,
    days,
    eur,
    names,
    paid_order,
    placed_order,
    shipped_order,
)


def refund(order: Order, refund_id: str = "r-1", amount: str | None = None, at=T0 + days(1)) -> RequestRefund:
    return command(
        RequestRefund, actor=CUSTOMER, issued_at=at, order_id=order.id, refund_id=refund_id,
        amount=eur(amount) if amount else None, reason="broken",
    )


def intercept_outcome(order: Order, intercepted: bool, at=T0 + days(1), refund_id: str = "r-1") -> RecordInterceptOutcome:
    return command(
        RecordInterceptOutcome, issued_at=at, order_id=order.id, refund_id=refund_id, intercepted=intercepted,
        reason="" if intercepted else "parcel delivered",
    )


# == which refunds stop a parcel ====================================================================
def test_a_partial_refund_of_a_parcel_in_transit_leaves_the_parcel_moving():
    order = shipped_order("100.00")
    order.request_refund(refund(order, amount="1.00"))
    assert names(order.pending_events) == ["RefundApproved"]


def test_the_refund_that_takes_the_last_of_a_parcels_money_stops_the_parcel():
    order = shipped_order("100.00")
    order.request_refund(refund(order, "r-1", amount="40.00"))
    order.complete_refund(command(CompleteRefund, order_id=order.id, refund_id="r-1", gateway_reference="re_1"))
    order.clear_events()
    order.request_refund(refund(order, "r-2"))
    assert names(order.pending_events) == ["RefundApproved", "ShipmentInterceptRequested"]
    assert order.pending_events[0].amount == eur("60.00")


# == a stop asked for is kept until it is answered ==================================================
def test_a_stop_of_the_parcel_is_kept_until_shippings_answer_is_recorded():
    order = shipped_order("100.00")
    order.request_refund(refund(order, at=T0 + days(1)))
    stop = order.parcel_stop
    assert (stop.refund_id, stop.tracking, stop.asked_at, stop.because) == ("r-1", order.tracking, T0 + days(1), "refund")

    order.record_intercept_outcome(intercept_outcome(order, False, at=T0 + days(2)))  # not stopped: answered too

    assert order.parcel_stop is None


def test_a_stop_asked_for_a_parcel_that_left_for_a_cancelled_order_is_kept_as_the_cancellations():
    order = cancelled_while_cleared()
    order.record_shipment(command(RecordShipment, issued_at=T0 + days(2), order_id=order.id, tracking="TRK-9",
                                  shipped_at=T0 + days(1)))
    assert (order.parcel_stop.because, order.parcel_stop.asked_at) == ("cancellation", T0 + days(2))

    order.record_intercept_outcome(intercept_outcome(order, True, at=T0 + days(3), refund_id="o-1-cancellation"))

    assert order.parcel_stop is None and order.fulfilment is Fulfilment.RETURNED


def test_a_refund_rejected_in_review_before_its_stop_was_carried_out_takes_the_stop_with_it():
    order = shipped_order("1500.00")
    order.request_refund(refund(order))
    assert order.parcel_stop is not None
    order.cancel_refund(command(CancelRefund, order_id=order.id, refund_id="r-1", reason="review_rejected"))
    assert order.parcel_stop is None  # its money stays: the parcel is not to be stopped


def test_a_refund_rejected_in_review_after_the_order_was_cancelled_leaves_its_stop_to_the_cancellation():
    # A full refund of a parcel on its way waits for fraud; support cancels the order meanwhile
    # (nothing is left to refund, so no refund of its own starts); then the review says no.
    order = shipped_order("1500.00")
    order.request_refund(refund(order, at=T0 + days(1)))
    order.cancel(command(CancelOrder, actor=SUPPORT, issued_at=T0 + days(2), order_id=order.id, reason="fraud"))
    order.clear_events()

    order.cancel_refund(command(CancelRefund, issued_at=T0 + days(3), order_id=order.id, refund_id="r-1",
                                reason="review_rejected"))

    assert names(order.pending_events) == ["RefundCancelled", "RefundOwed"]  # the money is owed back
    stop = order.parcel_stop  # and the goods are still to be stopped: flagged if nobody does
    assert (stop.refund_id, stop.asked_at, stop.because) == ("r-1", T0 + days(1), "cancellation")
    order.record_intercept_outcome(intercept_outcome(order, True, at=T0 + days(4)))
    assert order.parcel_stop is None and order.fulfilment is Fulfilment.RETURNED


def test_a_stop_that_took_after_the_parcel_was_recorded_delivered_is_recorded_as_not_stopped():
    # Shipping stopped it, but a delivery scan dated earlier reached billing in between.
    order = shipped_order("100.00")
    order.request_refund(refund(order))
    order.record_delivery(command(RecordDelivery, issued_at=T0 + days(2), order_id=order.id, delivered_at=T0 + days(2)))
    order.clear_events()

    order.record_intercept_outcome(intercept_outcome(order, True, at=T0 + days(2)))

    still, told = order.pending_events
    assert names([still, told]) == ["ParcelStillInTransit", "ReturnedParcelDelivered"]  # support is told
    assert (told.delivered_at, told.returned_at) == (T0 + days(2), T0 + days(2))
    assert order.fulfilment is Fulfilment.DELIVERED and order.refunds["r-1"].in_flight  # the refund goes on


def test_a_stop_that_took_after_a_cancelled_orders_delivery_tells_support_nothing_more():
    # The cancelled order's delivery told support already (CancelledOrderDelivered).
    order = shipped_order("100.00")
    order.cancel(command(CancelOrder, actor=SUPPORT, issued_at=T0 + days(1), order_id=order.id, reason="fraud"))
    order.request_refund(command(
        RequestRefund, actor=Actor.system("billing"), issued_at=T0 + days(1), order_id=order.id,
        refund_id="o-1-cancellation", reason="cancelled",
    ))
    order.record_delivery(command(RecordDelivery, issued_at=T0 + days(2), order_id=order.id, delivered_at=T0 + days(2)))
    told = names(order.pending_events)

    order.record_intercept_outcome(intercept_outcome(order, True, at=T0 + days(3), refund_id="o-1-cancellation"))

    assert "CancelledOrderDelivered" in told
    assert names(order.pending_events)[len(told):] == ["ParcelStillInTransit"]


def test_a_parcel_not_stopped_and_then_delivered_tells_support_nothing():
    order = shipped_order("100.00")
    order.request_refund(refund(order))
    order.record_intercept_outcome(intercept_outcome(order, False, at=T0 + days(2)))
    order.clear_events()

    order.record_delivery(command(RecordDelivery, issued_at=T0 + days(3), order_id=order.id, delivered_at=T0 + days(3)))

    assert names(order.pending_events) == ["DeliveryRecorded"]  # it was on its way, as shipping said


def test_a_delivery_recorded_while_a_stop_waits_for_its_answer_leaves_nothing_to_stop():
    order = shipped_order("100.00")
    order.request_refund(refund(order))
    order.record_delivery(command(RecordDelivery, issued_at=T0 + days(2), order_id=order.id, delivered_at=T0 + days(2)))
    assert order.parcel_stop is None


# == what shipping's answer means =====================================================================
def test_an_intercepted_parcel_is_recorded_as_returned_and_a_later_refund_stops_nothing():
    order = shipped_order("100.00")
    order.request_refund(refund(order))
    returned_at = T0 + days(2)
    order.record_intercept_outcome(intercept_outcome(order, True, at=returned_at))
    assert order.fulfilment is Fulfilment.RETURNED and order.returned_at == returned_at
    assert names(order.pending_events)[-1] == "ParcelReturned"
    # The refund fails: the money is owed back again, and a new refund asks for no intercept.
    order.fail_refund(command(
        FailRefund, order_id=order.id, refund_id="r-1", reason="declined:x",
        confirmed_by="GatewayRefundDeclined", evidence="evt-declined-r-1",
    ))
    order.clear_events()
    order.request_refund(refund(order, "r-2", at=returned_at + days(30)))
    assert names(order.pending_events) == ["RefundApproved"]  # no second intercept: it is back


def test_a_returned_parcel_delivered_after_all_is_recorded_delivered_and_named_for_support():
    # Stopped for a full refund, then the carrier's scan: it was delivered before the stop took.
    order = shipped_order("100.00")
    order.request_refund(refund(order))
    returned_at = T0 + days(2)
    order.record_intercept_outcome(intercept_outcome(order, True, at=returned_at))
    order.clear_events()

    order.record_delivery(command(RecordDelivery, issued_at=T0 + days(3), order_id=order.id, delivered_at=T0 + days(1.5)))

    recorded, late = order.pending_events
    assert names([recorded, late]) == ["DeliveryRecorded", "ReturnedParcelDelivered"]
    assert (late.delivered_at, late.returned_at) == (T0 + days(1.5), returned_at)
    assert (order.fulfilment, order.delivered_at) == (Fulfilment.DELIVERED, T0 + days(1.5))


def test_money_a_returned_parcel_owed_is_no_longer_owed_once_the_parcel_turns_out_delivered():
    order = shipped_order("100.00")
    order.request_refund(refund(order))
    order.record_intercept_outcome(intercept_outcome(order, True, at=T0 + days(2)))
    order.fail_refund(command(
        FailRefund, issued_at=T0 + days(3), order_id=order.id, refund_id="r-1", reason="declined:x",
        confirmed_by="GatewayRefundDeclined", evidence="evt-declined-r-1",
    ))
    assert order.owed == eur("100.00")

    order.record_delivery(command(RecordDelivery, issued_at=T0 + days(4), order_id=order.id, delivered_at=T0 + days(1.5)))

    # The goods are the customer's: an ordinary refund, within the window from the delivery.
    assert (order.owed, order.owed_since) == (eur("0.00"), None)
    order.clear_events()
    order.request_refund(refund(order, "r-2", at=T0 + days(1.5) + days(31)))
    assert order.pending_events[0].reason_code == "refund_window_closed"


def test_a_return_leaving_money_no_refund_takes_owes_it_and_says_so():
    # 60 of 100 asked first (then refused in review), the last 40 stop the parcel; it comes back.
    order = shipped_order("100.00")
    order.request_refund(refund(order, "r-1", amount="60.00"))
    order.request_refund(refund(order, "r-2"))
    order.cancel_refund(command(CancelRefund, issued_at=T0 + days(2), order_id=order.id, refund_id="r-1",
                                reason="review_expired"))
    order.clear_events()

    order.record_intercept_outcome(intercept_outcome(order, True, at=T0 + days(3), refund_id="r-2"))

    returned, owed = order.pending_events
    assert names([returned, owed]) == ["ParcelReturned", "RefundOwed"]
    assert (owed.amount, order.owed, order.owed_since) == (eur("60.00"), eur("60.00"), T0 + days(3))


def test_a_return_of_a_cancelled_orders_parcel_owes_nothing_new():
    order = cancelled_while_cleared()  # its refund took everything; its money was owed, and told, before
    order.record_shipment(command(RecordShipment, issued_at=T0 + days(2), order_id=order.id, tracking="TRK-9",
                                  shipped_at=T0 + days(1)))
    order.clear_events()
    order.record_intercept_outcome(intercept_outcome(order, True, at=T0 + days(3), refund_id="o-1-cancellation"))
    assert names(order.pending_events) == ["ParcelReturned"]


def test_a_returned_parcels_money_a_refund_did_not_pay_back_is_owed_and_no_window_closes_on_it():
    order = shipped_order("100.00")
    order.request_refund(refund(order))
    returned_at = T0 + days(2)
    order.record_intercept_outcome(intercept_outcome(order, True, at=returned_at))
    declined_at = returned_at + days(1)
    order.fail_refund(command(
        FailRefund, issued_at=declined_at, order_id=order.id, refund_id="r-1", reason="declined:x",
        confirmed_by="GatewayRefundDeclined", evidence="evt-declined-r-1",
    ))
    # The goods are the merchant's again: the money is owed, as a cancelled order's is.
    assert names(order.pending_events)[-2:] == ["RefundFailed", "RefundOwed"]
    assert (order.owed, order.owed_since) == (eur("100.00"), declined_at)
    order.clear_events()

    order.request_refund(refund(order, "r-2", at=returned_at + days(90)))

    [approved] = order.pending_events
    assert names([approved]) == ["RefundApproved"] and approved.owed  # fraud clears it
    assert order.owed_since is None


def test_a_parcel_that_could_not_be_stopped_stays_on_its_way_and_its_delivery_starts_the_window():
    order = shipped_order("100.00")
    order.request_refund(refund(order))
    order.clear_events()
    order.record_intercept_outcome(intercept_outcome(order, False))
    assert names(order.pending_events) == ["ParcelStillInTransit"]
    assert order.fulfilment is Fulfilment.SHIPPED
    order.record_delivery(command(RecordDelivery, order_id=order.id, delivered_at=T0 + days(3)))
    assert order.fulfilment is Fulfilment.DELIVERED


def test_an_intercept_answer_for_a_refund_billing_never_approved_is_refused():
    order = shipped_order("100.00")
    assert_refused(
        order, lambda: order.record_intercept_outcome(intercept_outcome(order, True, refund_id="r-x")),
        InvalidCommand, "unknown_refund",
    )


# == facts out of order ===============================================================================
def test_a_delivery_recorded_before_its_shipment_is_kept_and_applied_when_the_shipment_arrives():
    order = paid_order("100.00")
    delivered_at = T0 + days(3)
    order.record_delivery(command(RecordDelivery, order_id=order.id, delivered_at=delivered_at))
    assert names(order.clear_events()) == ["DeliveryHeld"]
    assert order.fulfilment is Fulfilment.PENDING
    order.record_shipment(command(RecordShipment, order_id=order.id, tracking="TRK-1", shipped_at=T0 + days(1)))
    assert names(order.pending_events) == ["ShipmentRecorded", "DeliveryRecorded"]
    assert order.fulfilment is Fulfilment.DELIVERED and order.delivered_at == delivered_at
    order.clear_events()
    order.request_refund(refund(order, at=delivered_at + days(400)))
    assert order.pending_events[0].reason_code == "refund_window_closed"


def test_a_second_early_delivery_is_refused():
    order = paid_order("100.00")
    order.record_delivery(command(RecordDelivery, order_id=order.id, delivered_at=T0 + days(3)))
    order.clear_events()
    assert_refused(
        order, lambda: order.record_delivery(command(RecordDelivery, order_id=order.id, delivered_at=T0 + days(4))),
        InvalidCommand, "not_in_transit",
    )


# == may it ship =======================================================================================
def test_a_paid_order_is_cleared_for_shipping():
    order = paid_order("100.00")
    order.clear_for_shipping(command(ClearOrderForShipping, order_id=order.id))
    assert names(order.pending_events) == ["OrderClearedForShipping"]


def test_an_unpaid_order_may_not_ship():
    order = placed_order("100.00")
    order.clear_for_shipping(command(ClearOrderForShipping, order_id=order.id))
    [refused] = order.pending_events
    assert names([refused]) == ["ShippingRefused"] and refused.reason_code == "not_paid"


def test_a_cancelled_order_may_not_ship():
    order = paid_order("100.00")
    order.cancel(command(CancelOrder, actor=CUSTOMER, order_id=order.id, reason="changed my mind"))
    order.clear_events()
    order.clear_for_shipping(command(ClearOrderForShipping, order_id=order.id))
    [refused] = order.pending_events
    assert names([refused]) == ["ShippingRefused"] and refused.reason_code == "order_cancelled"


# == a cancellation racing the parcel ==================================================================
def cancelled_while_cleared(cancelled_at=T0 + days(1)) -> Order:
    """Cleared for shipping, then cancelled by support before the shipment was recorded; the
    cancellation's refund took all of the money (no intercept: billing knew of no parcel)."""
    order = paid_order("100.00")
    order.clear_for_shipping(command(ClearOrderForShipping, order_id=order.id, shipped_at=T0 + days(1)))
    order.cancel(command(CancelOrder, actor=SUPPORT, issued_at=cancelled_at, order_id=order.id, reason="out of stock"))
    order.request_refund(command(
        RequestRefund, issued_at=cancelled_at, order_id=order.id, refund_id="o-1-cancellation", amount=None,
        reason="order cancelled",
    ))
    assert names(order.pending_events)[-1] == "RefundApproved"
    order.clear_events()
    return order


def test_a_parcel_that_left_for_an_order_cancelled_meanwhile_is_to_be_stopped_for_the_refund_paying_it_back():
    order = cancelled_while_cleared()

    order.record_shipment(command(RecordShipment, order_id=order.id, tracking="TRK-9", shipped_at=T0 + days(1)))

    recorded, stop = order.pending_events
    assert names([recorded, stop]) == ["ShipmentRecorded", "ShipmentInterceptRequested"]
    assert (stop.refund_id, stop.tracking) == ("o-1-cancellation", "TRK-9")
    order.clear_events()
    order.record_intercept_outcome(intercept_outcome(order, True, at=T0 + days(2), refund_id="o-1-cancellation"))
    assert order.fulfilment is Fulfilment.RETURNED


def test_a_departure_recorded_late_is_cleared_when_the_parcel_left_before_the_cancellation():
    cancelled_at = T0 + days(1)
    order = paid_order("100.00")
    order.cancel(command(CancelOrder, actor=SUPPORT, issued_at=cancelled_at, order_id=order.id, reason="lost"))
    order.clear_events()

    for left_at, answer in ((cancelled_at - days(0.5), "OrderClearedForShipping"), (cancelled_at, "ShippingRefused")):
        order.clear_for_shipping(command(ClearOrderForShipping, order_id=order.id, shipped_at=left_at))
        assert names(order.clear_events()) == [answer]


def test_a_delivery_recorded_for_an_order_cancelled_meanwhile_is_kept_and_named_for_support():
    # Shipped, cancelled by support, and the parcel had in fact arrived: its delivery reaches
    # billing after the cancellation (the cancellation's intercept came too late).
    order = shipped_order("100.00")
    order.cancel(command(CancelOrder, actor=SUPPORT, issued_at=T0 + days(3), order_id=order.id, reason="lost parcel"))
    order.clear_events()

    order.record_delivery(command(RecordDelivery, order_id=order.id, delivered_at=T0 + days(2)))

    recorded, arrived = order.pending_events
    assert names([recorded, arrived]) == ["DeliveryRecorded", "CancelledOrderDelivered"]
    assert (arrived.delivered_at, order.fulfilment) == (T0 + days(2), Fulfilment.DELIVERED)


def test_a_held_delivery_applied_by_the_shipment_of_an_order_cancelled_meanwhile_is_named_for_support():
    order = cancelled_while_cleared()
    order.record_delivery(command(RecordDelivery, order_id=order.id, delivered_at=T0 + days(2)))  # held: no shipment yet
    order.clear_events()

    order.record_shipment(command(RecordShipment, order_id=order.id, tracking="TRK-9", shipped_at=T0 + days(1)))

    assert names(order.pending_events) == ["ShipmentRecorded", "DeliveryRecorded", "CancelledOrderDelivered"]


# == money owed after a cancellation ===================================================================
def test_a_refund_of_a_cancelled_paid_order_is_marked_owed():
    order = paid_order("100.00")
    order.cancel(command(CancelOrder, actor=SUPPORT, order_id=order.id, reason="out of stock"))
    order.clear_events()
    order.request_refund(command(
        RequestRefund, order_id=order.id, refund_id="o-1-cancellation", amount=None, reason="order cancelled",
    ))
    [approved] = order.pending_events
    assert approved.owed and approved.amount == eur("100.00")


def test_an_ordinary_refund_is_not_owed():
    order = shipped_order("100.00")
    order.request_refund(refund(order, amount="10.00"))
    assert order.pending_events[0].owed is False


def test_a_partial_refund_in_flight_at_cancellation_that_fails_leaves_its_amount_owed():
    order = shipped_order("100.00")
    order.request_refund(refund(order, amount="30.00"))
    order.cancel(command(CancelOrder, actor=SUPPORT, order_id=order.id, reason="lost parcel"))
    assert order.pending_events[-1].amount == eur("70.00")  # RefundOwed for what was not in flight
    order.clear_events()
    order.fail_refund(command(
        FailRefund, order_id=order.id, refund_id="r-1", reason="declined:x",
        confirmed_by="GatewayRefundDeclined", evidence="evt-declined-r-1",
    ))
    assert names(order.pending_events) == ["RefundFailed", "RefundOwed"]
    assert order.pending_events[-1].amount == eur("100.00") and order.owed == eur("100.00")


def test_a_cancelled_refund_of_a_cancelled_order_leaves_its_amount_owed():
    order = shipped_order("100.00")
    order.request_refund(refund(order, amount="30.00"))
    order.cancel(command(CancelOrder, actor=SUPPORT, order_id=order.id, reason="lost parcel"))
    order.clear_events()
    order.cancel_refund(command(CancelRefund, order_id=order.id, refund_id="r-1", reason="review_rejected"))
    assert names(order.pending_events) == ["RefundCancelled", "RefundOwed"]


def test_a_failed_refund_of_an_order_that_is_not_cancelled_owes_nothing():
    order = shipped_order("100.00")
    order.request_refund(refund(order, amount="30.00"))
    order.clear_events()
    order.fail_refund(command(
        FailRefund, order_id=order.id, refund_id="r-1", reason="declined:x",
        confirmed_by="GatewayRefundDeclined", evidence="evt-declined-r-1",
    ))
    assert names(order.pending_events) == ["RefundFailed"] and order.owed == Money.zero("EUR")


def test_fraud_clears_owed_money_without_a_review_even_when_it_is_large():
    cmd = command(
        ScreenRefund, refund_id="o-1-cancellation", order_id="o-1", customer_id="c-1",
        amount=eur("5000.00"), approved_at=T0, owed=True,
    )
    review = FraudReview.screen(cmd, [], RefundScreening())
    assert review.status is ReviewStatus.CLEARED
    assert [type(e) for e in review.pending_events] == [RefundCleared]
