"""Text from outside (ids, reasons) is stored verbatim and never executed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import inspect

from activities.billing import BillingActivities
from adapters.db import make_engine, upgrade
from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types
from domain.billing.commands import MarkOrderPaid, OrderLine, PlaceOrder, RecordDelivery, RecordShipment, RequestRefund
from domain.shared.actor import Actor
from domain.shared.money import Money
from tests.tokens import token_for

T0 = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
NASTY_ID = "o-'; DROP TABLE orders; --\"ÿ\u202e" + "x" * 150
NASTY_REASON = "Robert'); DELETE FROM outbox; -- " * 10


def test_ids_and_reasons_with_sql_and_quotes_round_trip_unchanged(database_url):
    upgrade(database_url)
    engine = make_engine(database_url)
    aggregates = default_aggregate_types()
    billing = BillingActivities(lambda: SqlUnitOfWork(engine, aggregates))
    system = Actor.system("test")
    amount = Money.of("50.00", "EUR")

    def cmd(kind, step, **fields):
        return kind(command_id=f"{NASTY_ID}/{step}", actor=system, issued_at=T0 + timedelta(hours=1), **fields)

    billing.place_order(cmd(PlaceOrder, "place", order_id=NASTY_ID, customer_id="c-'1'",
                            lines=[OrderLine(description=NASTY_REASON, amount=amount)], placed_at=T0))
    billing.mark_order_paid(cmd(MarkOrderPaid, "paid", order_id=NASTY_ID, amount=amount, payment_reference="ch"))
    billing.record_shipment(cmd(RecordShipment, "ship", order_id=NASTY_ID, tracking="T", shipped_at=T0))
    billing.record_delivery(cmd(RecordDelivery, "deliver", order_id=NASTY_ID, delivered_at=T0))
    support = {"actor": Actor.parse("support:sam"), "credential": token_for("support:sam")}  # system refunds only owed money
    billing.request_refund(cmd(RequestRefund, "refund", order_id=NASTY_ID, refund_id=NASTY_ID, reason=NASTY_REASON)
                           .model_copy(update=support))

    with SqlUnitOfWork(engine, aggregates) as uow:
        order = uow.orders.get(NASTY_ID)
    assert (order.id, order.customer_id, order.lines[0].description) == (NASTY_ID, "c-'1'", NASTY_REASON)
    assert order.refunds[NASTY_ID].reason == NASTY_REASON
    assert {"orders", "outbox", "processed_commands"} <= set(inspect(engine).get_table_names())
    engine.dispose()
