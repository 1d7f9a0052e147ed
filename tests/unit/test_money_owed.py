"""Money an order owes its customer back (it was cancelled, or its parcel came back) is never dropped by a person's "no", a declined
refund or a refund that never started: billing keeps since when it has had no refund on its
way (`Order.owed_since`), and reconciliation flags it after an hour, until a refund takes it or
support says how it went back; owed again later, it is flagged again."""

from __future__ import annotations

from datetime import timedelta

from activities.reconciliation import ReconciliationActivities
from domain.billing.commands import CancelOrder, CancelRefund, FailRefund, RecordInterceptOutcome, RequestRefund
from domain.billing.order import Order
from domain.reconciliation.commands import RecordDiscrepancy, ResolveDiscrepancy, discrepancy_id
from domain.reconciliation.owed import OWED_AFTER, money_owed
from domain.reconciliation.queries import ReconciliationScan
from domain.shared.money import Money
from tests.fakes import FakeDatabase, FakeUnitOfWork
from tests.unit.builders import CUSTOMER, SUPPORT, T0, command, days, eur, names, paid_order, shipped_order

CANCELLED_AT = T0 + days(2)


def cancel_order(order: Order, at=CANCELLED_AT) -> None:
    order.cancel(command(CancelOrder, actor=SUPPORT, issued_at=at, order_id=order.id, reason="out of stock"))


def ask_refund(order: Order, refund_id: str, amount: str | None, at, actor=SUPPORT) -> None:
    order.request_refund(command(
        RequestRefund, actor=actor, issued_at=at, order_id=order.id, refund_id=refund_id,
        amount=eur(amount) if amount else None, reason="owed",
    ))


def reject_in_review(order: Order, refund_id: str, at) -> None:
    order.cancel_refund(command(CancelRefund, issued_at=at, order_id=order.id, refund_id=refund_id,
                                reason="review_rejected"))


def declined(order: Order, refund_id: str, at) -> None:
    order.fail_refund(command(
        FailRefund, issued_at=at, order_id=order.id, refund_id=refund_id, reason="declined:do_not_honor",
        confirmed_by="GatewayRefundDeclined", evidence=f"evt-declined-{refund_id}",
    ))


# == billing keeps since when ======================================================================
def test_a_cancelled_paid_order_owes_its_money_from_the_cancellation_until_its_refund_takes_it():
    order = paid_order("100.00")
    cancel_order(order)
    assert (order.owed, order.owed_since) == (eur("100.00"), CANCELLED_AT)

    ask_refund(order, "o-1-cancellation", None, at=CANCELLED_AT + timedelta(seconds=2))

    assert (order.owed, order.owed_since) == (Money.zero("EUR"), None)


def test_a_review_saying_no_to_a_refund_of_a_since_cancelled_order_leaves_its_money_owed_from_then():
    order = shipped_order("100.00")
    ask_refund(order, "r-1", None, at=T0 + days(1), actor=CUSTOMER)  # all of it, in review
    cancel_order(order)
    assert order.owed_since is None  # all of it is on its way: nothing owed yet
    rejected_at = CANCELLED_AT + days(3)

    reject_in_review(order, "r-1", at=rejected_at)

    assert names(order.pending_events)[-1] == "RefundOwed"
    assert (order.owed, order.owed_since) == (eur("100.00"), rejected_at)


def test_a_declined_refund_of_a_cancelled_order_leaves_its_money_owed_from_the_decline():
    order = paid_order("100.00")
    cancel_order(order)
    ask_refund(order, "o-1-cancellation", None, at=CANCELLED_AT)
    declined_at = CANCELLED_AT + timedelta(minutes=5)

    declined(order, "o-1-cancellation", at=declined_at)

    assert (order.owed, order.owed_since) == (eur("100.00"), declined_at)


def test_a_partial_refund_of_money_owed_leaves_the_rest_owed_since_it_first_was():
    order = paid_order("100.00")
    cancel_order(order)
    ask_refund(order, "r-part", "40.00", at=CANCELLED_AT + days(1))

    assert (order.owed, order.owed_since) == (eur("60.00"), CANCELLED_AT)


def test_a_refused_refund_request_changes_nothing_owed():
    order = paid_order("100.00")
    cancel_order(order)
    ask_refund(order, "r-too-much", "500.00", at=CANCELLED_AT + days(1))

    assert names(order.pending_events)[-1] == "RefundRejected"
    assert (order.owed, order.owed_since) == (eur("100.00"), CANCELLED_AT)


def test_an_order_that_is_not_cancelled_owes_nothing_whatever_happens_to_its_refunds():
    order = shipped_order("100.00")
    ask_refund(order, "r-1", None, at=T0 + days(1), actor=CUSTOMER)
    reject_in_review(order, "r-1", at=T0 + days(2))

    assert (order.owed, order.owed_since) == (Money.zero("EUR"), None)


def test_a_returned_parcels_money_a_declined_refund_left_is_owed_from_the_decline_and_flagged():
    order = shipped_order("100.00")
    ask_refund(order, "r-1", None, at=T0 + days(1), actor=CUSTOMER)  # all of it: the parcel is stopped
    order.record_intercept_outcome(command(
        RecordInterceptOutcome, issued_at=T0 + days(2), order_id=order.id, refund_id="r-1", intercepted=True, reason="",
    ))
    assert order.owed_since is None  # its refund is on its way
    declined_at = T0 + days(3)

    declined(order, "r-1", at=declined_at)

    assert (order.owed, order.owed_since) == (eur("100.00"), declined_at)
    found = money_owed(order, declined_at + days(1))
    assert found is not None and found.amount == eur("100.00")


# == reconciliation flags it after an hour ================================================================
def test_money_owed_is_flagged_only_once_it_has_been_owed_for_an_hour():
    order = paid_order("100.00")
    cancel_order(order)

    assert money_owed(order, CANCELLED_AT + OWED_AFTER - timedelta(seconds=1)) is None  # its refund may be starting
    found = money_owed(order, CANCELLED_AT + OWED_AFTER)
    assert found is not None
    assert (found.order_id, found.amount, found.owed_since) == (order.id, eur("100.00"), CANCELLED_AT)


def finder(*orders: Order) -> tuple[ReconciliationActivities, FakeDatabase]:
    database = FakeDatabase()
    with FakeUnitOfWork(database) as uow:
        for order in orders:
            uow.orders.add(order)
        uow.commit()
    return ReconciliationActivities(lambda: FakeUnitOfWork(database), gateway=None), database  # type: ignore[arg-type]


def test_reconciliation_finds_the_cancelled_orders_owing_money_with_no_refund_on_its_way():
    owing = paid_order("100.00")
    cancel_order(owing)
    paid_back = paid_order("50.00").model_copy(update={"id": "o-2"})
    cancel_order(paid_back)
    ask_refund(paid_back, "o-2-cancellation", None, at=CANCELLED_AT)
    not_cancelled = shipped_order("70.00").model_copy(update={"id": "o-3"})

    recon, _ = finder(owing, paid_back, not_cancelled)
    found = recon.find_money_owed(ReconciliationScan(as_of=CANCELLED_AT + days(1)))

    assert [(f.order_id, f.amount) for f in found] == [(owing.id, eur("100.00"))]


def flagged(pass_day: int, amount: str = "100.00", since=CANCELLED_AT) -> RecordDiscrepancy:
    """What the daily pass of `pass_day` sends for money owed since `since` (its detail says since when)."""
    return command(
        RecordDiscrepancy,
        command_id=f"reconciliation-day-{pass_day}/discrepancy-money_owed:o-1",
        issued_at=CANCELLED_AT + days(pass_day),
        discrepancy_id=discrepancy_id("money_owed", "o-1"),
        kind="money_owed", order_id="o-1", business_id="o-1", ours=eur(amount),
        detail=f"cancelled order o-1 has owed customer c-1 {amount} EUR since {since:%Y-%m-%d %H:%M} UTC",
    )


def test_support_saying_how_owed_money_went_back_stands_until_money_is_owed_again():
    recon, database = finder()
    recon.record_discrepancy(flagged(1))
    recon.resolve_discrepancy(command(
        ResolveDiscrepancy, actor=SUPPORT, issued_at=CANCELLED_AT + days(1) + timedelta(hours=1),
        discrepancy_id="money_owed:o-1", note="card closed: paid back by bank transfer, ticket 881",
    ))
    next_day = recon.record_discrepancy(flagged(2))  # the same amount, owed since the same moment
    owed_again = recon.record_discrepancy(flagged(3, since=CANCELLED_AT + days(2)))  # a later refund declined

    assert next_day.events == []
    assert names(owed_again.events) == ["DiscrepancyRecorded"]
    with FakeUnitOfWork(database) as uow:
        assert [d.id for d in uow.discrepancies.with_status("open")] == ["money_owed:o-1"]


def test_money_owed_found_again_while_its_flag_is_open_tells_support_nothing_new():
    recon, _ = finder()
    recon.record_discrepancy(flagged(1))
    assert recon.record_discrepancy(flagged(2)).events == []
