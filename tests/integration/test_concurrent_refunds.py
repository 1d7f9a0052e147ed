"""Fifty refund requests for one order at once, through the real billing activity
on SQLite and PostgreSQL: the total approved never exceeds what was paid, no
update is lost, and lock contention never surfaces as a failure."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from temporalio.exceptions import ApplicationError

from activities.billing import BillingActivities
from adapters.db import make_engine, upgrade
from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types
from domain.billing.commands import MarkOrderPaid, OrderLine, PlaceOrder, RecordDelivery, RecordShipment, RequestRefund
from domain.contracts import RefundApproved, RefundRejected
from domain.shared.actor import Actor
from domain.shared.money import Money
from tests.tokens import token_for

T0 = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
SYSTEM = Actor.system("test")
# Support asks for the refunds (settleflow asks on its own only for what a cancellation owes).
BY_SUPPORT = {"actor": Actor.parse("support:sam"), "credential": token_for("support:sam")}


def command(kind, step: str, **fields):
    return kind(command_id=f"test/{step}", actor=SYSTEM, issued_at=T0 + timedelta(hours=1), **fields)


def delivered_order(billing: BillingActivities, order_id: str, total: str) -> None:
    amount = Money.of(total, "EUR")
    billing.place_order(
        command(PlaceOrder, f"{order_id}/place", order_id=order_id, customer_id="c-1",
                lines=[OrderLine(description="goods", amount=amount)], placed_at=T0)
    )
    billing.mark_order_paid(command(MarkOrderPaid, f"{order_id}/paid", order_id=order_id, amount=amount, payment_reference="ch"))
    billing.record_shipment(command(RecordShipment, f"{order_id}/ship", order_id=order_id, tracking="T", shipped_at=T0))
    billing.record_delivery(command(RecordDelivery, f"{order_id}/deliver", order_id=order_id, delivered_at=T0))


def test_fifty_simultaneous_refund_requests_never_approve_more_than_was_paid(database_url):
    upgrade(database_url)
    engine = make_engine(database_url)
    aggregates = default_aggregate_types()
    billing = BillingActivities(lambda: SqlUnitOfWork(engine, aggregates))
    delivered_order(billing, "o-busy", "100.00")

    def request(i: int):
        while True:
            try:
                return billing.request_refund(
                    command(RequestRefund, f"refund-{i}/request", order_id="o-busy", refund_id=f"r-{i}",
                            amount=Money.of("7.00", "EUR"), reason="race").model_copy(update=BY_SUPPORT)
                )
            except ApplicationError as busy:
                # A request that lost every in-process race hands the conflict to Temporal, which
                # retries the activity: the same here (the same command, so it is decided once).
                if busy.type != "ConcurrencyConflict":
                    raise

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(request, range(50)))  # any other exception here fails the test

    approved = [o for o in outcomes if o.has(RefundApproved)]
    rejected = [o for o in outcomes if o.has(RefundRejected)]
    assert len(approved) + len(rejected) == 50
    assert len(approved) == 14  # 14 × 7.00 = 98.00 ≤ 100.00 < 15 × 7.00
    with SqlUnitOfWork(engine, aggregates) as uow:
        order = uow.orders.get("o-busy")
    assert len(order.refunds) == 50  # every decision was saved: no lost update
    assert order.reserved.amount == Decimal("98.00")
    assert order.refundable.amount == Decimal("2.00")
    engine.dispose()


def test_three_refunds_of_one_customer_screened_at_once_still_send_the_third_to_review(database_url):
    """Screening reads the customer's history and adds to it; screenings of one customer
    at the same moment must not each miss the others (per-customer lock)."""
    from threading import Barrier

    from activities.fraud import FraudActivities
    from domain.contracts import FraudReviewOpened, RefundCleared
    from domain.fraud.commands import ScreenRefund

    upgrade(database_url)
    engine = make_engine(database_url)
    fraud = FraudActivities(lambda: SqlUnitOfWork(engine, default_aggregate_types()))
    rounds = 8
    start = Barrier(3)

    def screen(customer: int, n: int):
        command = ScreenRefund(
            command_id=f"refund-c{customer}-r{n}/screen", actor=SYSTEM, issued_at=T0, customer_id=f"c-{customer}",
            refund_id=f"c{customer}-r{n}", order_id=f"o-c{customer}-{n}", amount=Money.of("20.00", "EUR"),
            approved_at=T0,
        )
        start.wait()
        return fraud.screen_refund(command)

    for customer in range(rounds):
        with ThreadPoolExecutor(max_workers=3) as pool:
            outcomes = list(pool.map(lambda n: screen(customer, n), range(3)))
        opened = [o for o in outcomes if o.has(FraudReviewOpened)]
        cleared = [o for o in outcomes if o.has(RefundCleared)]
        assert (len(cleared), len(opened)) == (2, 1), f"customer c-{customer}: {[o.event_names for o in outcomes]}"
