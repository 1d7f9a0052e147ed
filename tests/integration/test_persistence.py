"""Repositories, unit of work, outbox and inbox against a real database.

Each test runs on SQLite and, when SETTLEFLOW_TEST_POSTGRES_URL is set, on PostgreSQL.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import ClassVar, Literal

import pytest
from alembic import command as alembic_command
from pydantic import ValidationError
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select

from adapters import tables
from adapters.db import alembic_config, make_engine, upgrade
from adapters.repository import dump_state
from adapters.inspection import outbox_rows, processed_count
from adapters.unit_of_work import AggregateTypes, SqlUnitOfWork, default_aggregate_types
from domain.billing.commands import (
    CancelOrder,
    CancelRefund,
    CompleteRefund,
    MarkOrderPaid,
    OrderLine,
    PlaceOrder,
    RecordDelivery,
    RecordShipment,
    RequestRefund,
)
from domain.billing.order import Order
from domain.billing.refund import RefundStatus
from domain.contracts import Outcome
from domain.invoicing.commands import CreateInvoice, CreditInvoice
from domain.invoicing.invoice import Invoice
from domain.payments.payment import AttemptStatus, CaptureAttempt, GatewayRefund, Payment
from domain.shared.actor import Actor, Role
from domain.shared.aggregate import AggregateRoot
from domain.shared.errors import ConcurrencyConflict, InvalidCommand, NotFound
from domain.shared.messages import Command, Event
from domain.shared.money import Money
from tests.fakes import FakeDatabase, FakeUnitOfWork

PLACED_AT = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
CUSTOMER = Actor(role=Role.CUSTOMER, id="c-1")
SUPPORT = Actor(role=Role.SUPPORT, id="agent-7")
SYSTEM = Actor.system("test")


# -- small aggregates standing in for the owners this suite does not exercise ----------
class Touch(Command):
    owner: ClassVar[str] = "test"
    issued_by: ClassVar[frozenset[Role]] = frozenset(Role)
    subject_id: str


class Touched(Event):
    type: Literal["Touched"] = "Touched"
    subject_id: str


class Note(AggregateRoot):
    touches: int = 0

    def touch(self, command: Touch) -> None:
        self.touches += 1
        self.record(command, Touched(subject_id=self.id))


class Review(Note):
    customer_id: str
    approved_at: datetime


class Bill(Note):
    order_id: str


TYPES = AggregateTypes(
    orders=Order, payments=Note, fraud_reviews=Review, shipments=Note, notifications=Note, invoices=Bill,
    discrepancies=Note,
)


def unit_of_work(engine: Engine) -> SqlUnitOfWork:
    return SqlUnitOfWork(engine, TYPES)


def eur(amount: str) -> Money:
    return Money.of(amount, "EUR")


def touch(subject_id: str, command_id: str) -> Touch:
    return Touch(command_id=command_id, actor=SYSTEM, issued_at=PLACED_AT, subject_id=subject_id)


def place_order(order_id: str = "o-1", amount: str = "120.00") -> tuple[PlaceOrder, Order]:
    command = PlaceOrder(
        command_id=f"payment-{order_id}/place",
        actor=CUSTOMER,
        issued_at=PLACED_AT,
        correlation_id=f"payment-{order_id}",
        order_id=order_id,
        customer_id=CUSTOMER.id,
        lines=[OrderLine(description="Kettle", amount=eur(amount))],
    )
    return command, Order.place(command)


def delivered_order(order_id: str = "o-1", amount: str = "100.00") -> Order:
    """Placed, paid, shipped and delivered: ready for refunds."""
    _, order = place_order(order_id, amount)
    trace = {"actor": SYSTEM, "issued_at": PLACED_AT, "correlation_id": f"payment-{order_id}", "order_id": order_id}
    order.mark_paid(
        MarkOrderPaid(command_id=f"{order_id}/paid", amount=eur(amount), payment_reference="pay-1", **trace)
    )
    order.record_shipment(
        RecordShipment(
            command_id=f"{order_id}/shipped", tracking="TRK-1", shipped_at=PLACED_AT + timedelta(days=1), **trace
        )
    )
    order.record_delivery(
        RecordDelivery(command_id=f"{order_id}/delivered", delivered_at=PLACED_AT + timedelta(days=3), **trace)
    )
    return order


def refund(refund_id: str, amount: str, order_id: str = "o-1") -> RequestRefund:
    return RequestRefund(
        command_id=f"refund-{refund_id}/request",
        actor=SUPPORT,
        issued_at=PLACED_AT + timedelta(days=5),
        correlation_id=f"refund-{refund_id}",
        order_id=order_id,
        refund_id=refund_id,
        amount=eur(amount),
        reason="arrived broken",
    )


def store(engine: Engine, *aggregates: AggregateRoot) -> None:
    with unit_of_work(engine) as uow:
        for aggregate in aggregates:
            repository = uow.orders if isinstance(aggregate, Order) else uow.payments
            repository.add(aggregate)
        uow.commit()


def load_order(engine: Engine, order_id: str = "o-1") -> Order:
    with unit_of_work(engine) as uow:
        return uow.orders.get(order_id)


# -- schema -------------------------------------------------------------------------------
def test_migrations_create_every_table(engine: Engine) -> None:
    expected = {t.name for t in tables.metadata.sorted_tables} | {"alembic_version"}
    assert set(inspect(engine).get_table_names()) == expected
    assert expected >= {
        *("orders", "payments", "fraud_reviews", "shipments", "notifications", "invoices"),
        *("outbox", "processed_commands"),
    }


def test_the_migrated_schema_matches_the_table_definitions(engine: Engine) -> None:
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), tables.metadata)
    assert differences == []


def test_rows_saved_before_reconciliation_kept_its_columns_are_found_by_reconciliation_after_upgrading(
    database_url: str,
) -> None:
    """0003 added `open_since` / `reserved_since` empty; a payment with a refund still `sent`
    and an order with a refund in flight, saved before and never again, were never looked at
    by reconciliation. 0006 fills the columns from each row's own aggregate."""
    upgrade(database_url, "0002_events")
    payment = Payment(
        id="o-old", customer_id="c-1", amount=eur("50.00"),
        attempts=[CaptureAttempt(attempt_id="a-1", amount=eur("50.00"), card_token="tok_visa",
                                 status=AttemptStatus.CAPTURED, gateway_reference="ch_1")],
        refunds={"r-old": GatewayRefund(refund_id="r-old", amount=eur("20.00"))},  # sent; no sent_at then
    )
    order = delivered_order("o-old", "50.00")
    order.request_refund(refund("r-old", "20.00", "o-old"))
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:  # as the code of those days wrote them: no such columns
            for table, aggregate in ((tables.payments, payment), (tables.orders, order)):
                connection.execute(table.insert().values(
                    id=aggregate.id, version=3, state=dump_state(aggregate), updated_at=PLACED_AT,
                    **({"customer_id": "c-1"} if table is tables.orders else {}),
                ))
        upgrade(database_url)

        with SqlUnitOfWork(engine, default_aggregate_types()) as uow:
            assert [p.id for p in uow.payments.awaiting_answers()] == ["o-old"]
            assert [o.id for o in uow.orders.reserving_since(PLACED_AT + timedelta(days=30))] == ["o-old"]
    finally:
        engine.dispose()


def test_cancelled_orders_owing_money_saved_before_owed_since_was_kept_are_found_owing_after_upgrading(
    database_url: str,
) -> None:
    """0007 adds `owed_since`; a cancelled order owing its customer money, saved before and never
    again, would never be flagged. 0007 dates it by its row's last change, in its state too (or
    its next save would clear the column), and leaves an order whose refund takes all of it."""
    upgrade(database_url, "0006_backfill_recon_columns")
    trace = {"actor": SUPPORT, "issued_at": PLACED_AT, "correlation_id": "payment-x"}
    orders = []
    for order_id in ("o-owing", "o-refunding"):
        _, order = place_order(order_id, "80.00")
        order.mark_paid(MarkOrderPaid(command_id=f"{order_id}/paid", order_id=order_id, amount=eur("80.00"),
                                      payment_reference="pay-1", **trace))
        order.cancel(CancelOrder(command_id=f"{order_id}/cancel", order_id=order_id, reason="out of stock", **trace))
        orders.append(order)
    orders[1].request_refund(refund("o-refunding-cancellation", "80.00", "o-refunding"))
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:  # as the code of those days wrote them
            for order in orders:
                state = {k: v for k, v in dump_state(order).items() if k != "owed_since"}
                connection.execute(tables.orders.insert().values(
                    id=order.id, version=4, state=state, updated_at=PLACED_AT, customer_id=CUSTOMER.id,
                ))
        upgrade(database_url)

        with SqlUnitOfWork(engine, default_aggregate_types()) as uow:
            [owing] = uow.orders.owing_since(PLACED_AT)
            assert (owing.id, owing.owed, owing.owed_since) == ("o-owing", eur("80.00"), PLACED_AT)
    finally:
        engine.dispose()


def paid_out(order_id: str, *refund_ids: str) -> Order:
    """A delivered order of 100.00 with a refund of 10.00 paid out for each of `refund_ids`."""
    order = delivered_order(order_id)
    for refund_id in refund_ids:
        order.request_refund(refund(refund_id, "10.00", order_id))
        order.complete_refund(CompleteRefund(
            command_id=f"refund-{refund_id}/complete", actor=SYSTEM, issued_at=PLACED_AT + timedelta(days=6),
            correlation_id=f"refund-{refund_id}", order_id=order_id, refund_id=refund_id, gateway_reference="re_1",
        ))
    return order


def invoice_of(order: Order, *credited: str) -> Invoice:
    """`order`'s invoice, with a credit note of 10.00 for each refund id in `credited`."""
    trace = {"actor": SYSTEM, "issued_at": PLACED_AT, "correlation_id": f"payment-{order.id}", "order_id": order.id}
    invoice = Invoice.create(CreateInvoice(
        command_id=f"{order.id}/invoice", customer_id=order.customer_id, lines=order.lines, total=order.total,
        payment_reference="pay-1", **trace), None)
    for refund_id in credited:
        invoice.credit(CreditInvoice(command_id=f"{refund_id}/credit", refund_id=refund_id, amount=eur("10.00"), **trace))
    return invoice


def test_orders_with_more_refunds_paid_out_than_credit_notes_are_found_and_no_others(engine: Engine) -> None:
    credited, uncredited = paid_out("o-credited", "r-1"), paid_out("o-uncredited", "r-2")
    never_invoiced, half_credited = paid_out("o-never-invoiced", "r-3"), paid_out("o-half", "r-4", "r-5")
    in_flight = delivered_order("o-in-flight")
    in_flight.request_refund(refund("r-6", "10.00", "o-in-flight"))
    with SqlUnitOfWork(engine, default_aggregate_types()) as uow:
        for order in (credited, uncredited, never_invoiced, half_credited, in_flight, delivered_order("o-no-refund")):
            uow.orders.add(order)
        uow.invoices.add(invoice_of(credited, "r-1"))
        uow.invoices.add(invoice_of(uncredited))
        uow.invoices.add(invoice_of(half_credited, "r-5"))
        uow.commit()

    with SqlUnitOfWork(engine, default_aggregate_types()) as uow:
        found = uow.orders.paid_out_beyond_their_credit_notes()
        assert [o.id for o in found] == ["o-half", "o-never-invoiced", "o-uncredited"]
        page = uow.orders.paid_out_beyond_their_credit_notes(after="o-half", limit=1)  # a page, in id order
        assert [o.id for o in page] == ["o-never-invoiced"]
        assert uow.orders.get("o-half") is found[0]  # tracked like any load
        invoice = uow.invoices.for_order("o-uncredited")
        invoice.credit(CreditInvoice(command_id="r-2/credit", actor=SYSTEM, issued_at=PLACED_AT, correlation_id="x",
                                     order_id="o-uncredited", refund_id="r-2", amount=eur("10.00")))
        uow.commit()

    with SqlUnitOfWork(engine, default_aggregate_types()) as uow:  # its save counted the new note
        assert [o.id for o in uow.orders.paid_out_beyond_their_credit_notes()] == ["o-half", "o-never-invoiced"]


def test_refunds_paid_out_and_credit_notes_saved_before_they_were_counted_are_counted_after_upgrading(
    database_url: str,
) -> None:
    """0010 adds both counts; rows saved before (never saved again) are counted from their
    state, or refunds paid out before credit notes existed would never be found."""
    upgrade(database_url, "0009_parcel_stop")
    old, credited, unpaid = paid_out("o-old", "r-1", "r-2"), paid_out("o-credited", "r-3"), paid_out("o-unpaid")
    unpaid.request_refund(refund("r-in-flight", "10.00", "o-unpaid"))
    unpaid.request_refund(refund("r-cancelled", "10.00", "o-unpaid"))
    unpaid.cancel_refund(CancelRefund(
        command_id="refund-r-cancelled/cancel", actor=SYSTEM, issued_at=PLACED_AT + timedelta(days=6),
        correlation_id="refund-r-cancelled", order_id="o-unpaid", refund_id="r-cancelled", reason="review_rejected",
    ))
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:  # as the code of those days wrote them
            for order in (old, credited, unpaid):
                connection.execute(tables.orders.insert().values(
                    id=order.id, version=3, state=dump_state(order), updated_at=PLACED_AT, customer_id=CUSTOMER.id,
                ))
            for invoice in (invoice_of(old, "r-1"), invoice_of(credited, "r-3")):
                connection.execute(tables.invoices.insert().values(
                    id=invoice.id, version=2, state=dump_state(invoice), updated_at=PLACED_AT, order_id=invoice.order_id,
                ))
        upgrade(database_url)

        with engine.connect() as connection:
            counts = connection.execute(
                select(tables.orders.c.id, tables.orders.c.refunds_paid_out).order_by(tables.orders.c.id)
            ).all()
            notes = connection.execute(select(tables.invoices.c.credit_notes)).scalars().all()
        assert [tuple(row) for row in counts] == [("o-credited", 1), ("o-old", 2), ("o-unpaid", 0)]
        assert sorted(notes) == [1, 1]
        with SqlUnitOfWork(engine, default_aggregate_types()) as uow:
            assert [o.id for o in uow.orders.paid_out_beyond_their_credit_notes()] == ["o-old"]
    finally:
        engine.dispose()


def test_two_processes_migrating_at_once_both_succeed(database_url: str) -> None:
    # Real processes: Alembic keeps its context in module globals, so threads would
    # trip over each other inside Alembic before ever reaching the database.
    script = "import sys; from adapters.db import upgrade; upgrade(sys.argv[1])"
    processes = [
        subprocess.Popen([sys.executable, "-c", script, database_url], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    failures = [p.stderr.read() for p in processes if p.wait() != 0]  # type: ignore[union-attr]

    assert failures == []
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
            assert versions == [ScriptDirectory.from_config(alembic_config()).get_current_head()]
            assert compare_metadata(MigrationContext.configure(connection), tables.metadata) == []
    finally:
        engine.dispose()


def test_downgrading_to_base_removes_every_table(engine: Engine) -> None:
    alembic_command.downgrade(alembic_config(engine), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}


# -- documents ------------------------------------------------------------------------------
def test_an_order_round_trips_with_its_money_stored_as_integer_minor_units(engine: Engine) -> None:
    _, order = place_order("o-1", "120.50")
    store(engine, order)

    with engine.connect() as connection:
        row = connection.execute(select(tables.orders).where(tables.orders.c.id == "o-1")).one()
    assert row.version == 1
    assert row.customer_id == "c-1"
    assert row.state["total"] == {"minor": 12050, "currency": "EUR"}
    assert row.state["lines"][0]["amount"] == {"minor": 12050, "currency": "EUR"}
    assert row.state["paid"] == {"minor": 0, "currency": "EUR"}
    assert "id" not in row.state and "version" not in row.state
    assert row.updated_at.tzinfo is not None

    loaded = load_order(engine)
    assert loaded.total == eur("120.50")
    assert loaded.version == 1
    assert loaded.model_dump(exclude={"version"}) == order.model_dump(exclude={"version"})
    assert loaded.pending_events == []


def write_state_of_a_newer_build(engine: Engine, order_id: str, change) -> None:
    """Rewrite an order's row as a newer build would have written it (fields this one lacks)."""
    with engine.begin() as connection:
        row = connection.execute(select(tables.orders).where(tables.orders.c.id == order_id)).one()
        state = dict(row.state)
        change(state)
        connection.execute(tables.orders.update().where(tables.orders.c.id == order_id).values(state=state))


def test_an_order_a_newer_build_saved_is_decided_on_and_keeps_the_fields_this_build_does_not_know(
    engine: Engine,
) -> None:
    order = delivered_order()
    order.request_refund(refund("r-1", "10.00"))
    store(engine, order)

    def newer(state):
        state["loyalty_points"] = 7
        state["refunds"]["r-1"] = {**state["refunds"]["r-1"], "channel": "app"}

    write_state_of_a_newer_build(engine, "o-1", newer)

    with unit_of_work(engine) as uow:  # an older worker still deciding for its flows
        uow.orders.get("o-1").request_refund(refund("r-2", "5.00"))
        uow.commit()

    with engine.connect() as connection:
        state = connection.execute(select(tables.orders.c.state).where(tables.orders.c.id == "o-1")).scalar_one()
    assert state["loyalty_points"] == 7 and state["refunds"]["r-1"]["channel"] == "app"
    assert state["refunds"]["r-2"]["status"] == RefundStatus.APPROVED  # its own decision, saved beside them
    assert load_order(engine).reserved == eur("15.00")


def test_a_field_this_build_knows_but_cannot_read_is_still_refused(engine: Engine) -> None:
    store(engine, delivered_order())
    write_state_of_a_newer_build(engine, "o-1", lambda state: state.update(cancelled="perhaps", loyalty_points=7))

    with pytest.raises(ValidationError, match="cancelled"):
        load_order(engine)


def test_a_missing_aggregate_is_not_found(engine: Engine) -> None:
    with unit_of_work(engine) as uow:
        assert uow.orders.find("nope") is None
        with pytest.raises(NotFound) as raised:
            uow.orders.get("nope")
    assert raised.value.code == "not_found"
    assert raised.value.message == "no order 'nope'"


def test_loading_the_same_aggregate_twice_gives_the_same_object(engine: Engine) -> None:
    store(engine, delivered_order())
    with unit_of_work(engine) as uow:
        assert uow.orders.get("o-1") is uow.orders.get("o-1")
        assert uow.orders.seen == [uow.orders.get("o-1")]


def test_many_aggregates_are_found_at_once_by_id_missing_ones_left_out_loaded_ones_the_same_object(
    engine: Engine, monkeypatch
) -> None:
    monkeypatch.setattr("adapters.repository.FIND_ALL_CHUNK", 2)  # several queries' worth of ids
    store(engine, *(delivered_order(f"o-{n}") for n in range(1, 6)))
    with unit_of_work(engine) as uow:
        held = uow.orders.get("o-3")
        found = uow.orders.find_all(iter(["o-1", "o-3", "o-5", "o-4", "nope", "o-2", "o-1"]))

        assert sorted(found) == ["o-1", "o-2", "o-3", "o-4", "o-5"]
        assert found["o-3"] is held  # the identity map holds
        assert all(order.id == id for id, order in found.items())
        assert uow.orders.find_all([]) == {}


def test_an_aggregate_loaded_without_changes_is_not_written(engine: Engine) -> None:
    store(engine, delivered_order())
    with engine.connect() as connection:
        before = connection.execute(select(tables.orders.c.version, tables.orders.c.updated_at)).one()

    with unit_of_work(engine) as uow:
        uow.orders.get("o-1")
        assert uow.commit() == []

    with engine.connect() as connection:
        assert connection.execute(select(tables.orders.c.version, tables.orders.c.updated_at)).one() == before


def test_reviews_are_found_by_customer_and_invoices_by_order(engine: Engine) -> None:
    approved = datetime(2025, 3, 6, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    with unit_of_work(engine) as uow:
        uow.fraud_reviews.add(Review(id="r-1", customer_id="c-1", approved_at=approved))
        uow.fraud_reviews.add(Review(id="r-2", customer_id="c-1", approved_at=approved))
        uow.fraud_reviews.add(Review(id="r-3", customer_id="c-2", approved_at=approved))
        uow.invoices.add(Bill(id="inv-1", order_id="o-1"))
        uow.commit()

    with unit_of_work(engine) as uow:
        reviews = uow.fraud_reviews.for_customer("c-1")
        assert [r.id for r in reviews] == ["r-1", "r-2"]
        assert reviews[0].approved_at == approved  # same instant, whatever the zone it was written in
        assert uow.fraud_reviews.get("r-1") is reviews[0]
        assert uow.fraud_reviews.for_customer("c-9") == []
        assert uow.invoices.for_order("o-1").id == "inv-1"
        assert uow.invoices.for_order("o-2") is None

    with engine.connect() as connection:
        stored = connection.execute(select(tables.fraud_reviews.c.approved_at)).scalars().all()
    assert stored == [approved] * 3
    assert all(value.utcoffset() == timedelta(0) for value in stored)


def test_a_second_invoice_for_the_same_order_is_refused(engine: Engine) -> None:
    with unit_of_work(engine) as uow:
        uow.invoices.add(Bill(id="inv-1", order_id="o-1"))
        uow.commit()

    with unit_of_work(engine) as uow:
        uow.invoices.add(Bill(id="inv-2", order_id="o-1"))
        with pytest.raises(ConcurrencyConflict):
            uow.commit()
    with unit_of_work(engine) as uow:
        assert uow.invoices.find("inv-2") is None


def test_creating_an_aggregate_that_already_exists_is_a_conflict(engine: Engine) -> None:
    command, order = place_order()
    store(engine, order)

    with unit_of_work(engine) as uow:
        _, again = place_order()
        uow.orders.add(again)
        with pytest.raises(ConcurrencyConflict):
            uow.commit()
    assert again.version == 0  # memory still matches the database: nothing was saved
    assert len(outbox_rows(engine)) == 1


# -- outbox and inbox ------------------------------------------------------------------------
def test_state_outbox_rows_and_processed_command_are_committed_together(engine: Engine) -> None:
    command, order = place_order("o-1", "120.00")
    with unit_of_work(engine) as uow:
        uow.orders.add(order)
        written = uow.commit(command, result={"events": ["OrderPlaced"]})

    assert [type(e).__name__ for e in written] == ["OrderPlaced"]
    assert order.pending_events == [] and order.version == 1
    assert load_order(engine).version == 1
    assert processed_count(engine) == 1

    [row] = outbox_rows(engine, correlation_id="payment-o-1")
    assert row["event_id"] == written[0].event_id
    assert row["event_type"] == "OrderPlaced"
    assert row["schema_version"] == 1
    assert row["aggregate_type"] == "orders"
    assert row["aggregate_id"] == "o-1"
    assert row["aggregate_version"] == 1
    assert row["causation_id"] == command.command_id
    assert row["occurred_at"] == PLACED_AT
    assert row["published_at"] is None
    assert row["payload"]["total"] == {"minor": 12000, "currency": "EUR"}
    assert outbox_rows(engine, correlation_id="payment-o-2") == []


def test_events_of_one_commit_keep_the_order_they_were_recorded_in(engine: Engine) -> None:
    order = delivered_order()
    recorded = [type(e).__name__ for e in order.pending_events]
    store(engine, order)

    rows = outbox_rows(engine)
    assert [row["event_type"] for row in rows] == recorded
    assert [row["position"] for row in rows] == list(range(len(recorded)))


def test_a_failure_before_commit_leaves_no_state_no_events_and_no_processed_command(engine: Engine) -> None:
    command, order = place_order()
    with pytest.raises(RuntimeError), unit_of_work(engine) as uow:
        uow.orders.add(order)
        raise RuntimeError("the worker died before committing")

    with unit_of_work(engine) as uow:
        assert uow.orders.find("o-1") is None
        assert uow.processed_result(command.command_id) is None
    assert outbox_rows(engine) == []
    assert processed_count(engine) == 0


def test_a_processed_command_returns_its_stored_result_and_cannot_be_recorded_twice(engine: Engine) -> None:
    store(engine, delivered_order())
    request = refund("r-1", "40.00")
    with unit_of_work(engine) as uow:
        assert uow.processed_result(request.command_id) is None
        uow.orders.get("o-1").request_refund(request)
        uow.commit(request, result={"events": ["RefundApproved"]})
    events_before = outbox_rows(engine)

    # Delivered again: the stored answer is there for the asking ...
    with unit_of_work(engine) as uow:
        assert uow.processed_result(request.command_id) == {"events": ["RefundApproved"]}

    # ... and a handler that decides anyway cannot record it a second time.
    with unit_of_work(engine) as uow:
        uow.payments.add(Note(id="p-1"))
        with pytest.raises(ConcurrencyConflict):
            uow.commit(request, result={"events": ["Something else"]})

    with unit_of_work(engine) as uow:
        assert uow.payments.find("p-1") is None
        assert uow.processed_result(request.command_id) == {"events": ["RefundApproved"]}
    assert outbox_rows(engine) == events_before
    assert processed_count(engine) == 1
    assert load_order(engine).version == 2


def decided(engine: Engine, request: RequestRefund) -> None:
    """Billing approves `request` (for o-1), its answer recorded in the inbox."""
    with unit_of_work(engine) as uow:
        uow.orders.get("o-1").request_refund(request)
        uow.commit(request, Outcome(command_id=request.command_id, events=uow.pending_events()))


def test_a_decisions_stored_answer_keeps_its_money_in_integer_minor_units(engine: Engine) -> None:
    store(engine, delivered_order())
    request = refund("r-1", "40.50")
    decided(engine, request)

    with engine.connect() as connection:
        stored = connection.execute(
            select(tables.processed_commands.c.result)
            .where(tables.processed_commands.c.command_id == request.command_id)
        ).scalar_one()
    assert [event["amount"] for event in stored["events"]] == [{"minor": 4050, "currency": "EUR"}]
    with unit_of_work(engine) as uow:
        answer = Outcome.model_validate(uow.processed_result(request.command_id))
    assert answer.event_names == ["RefundApproved"]
    assert answer.events[0].amount == eur("40.50")


def test_an_answer_stored_with_decimal_strings_before_minor_units_still_reads_the_same(engine: Engine) -> None:
    store(engine, delivered_order())
    request = refund("r-1", "40.50")
    with unit_of_work(engine) as uow:
        uow.orders.get("o-1").request_refund(request)
        events = uow.pending_events()
        # How answers were stored until 2026-12-06: the events' JSON, amounts as decimal strings.
        uow.commit(request, Outcome(command_id=request.command_id, events=events).model_dump(mode="json"))
    with unit_of_work(engine) as uow:
        answer = Outcome.model_validate(uow.processed_result(request.command_id))
    assert answer.events == events
    assert answer.events[0].amount == eur("40.50")


def test_a_command_id_answers_only_the_command_it_was_decided_for(engine: Engine) -> None:
    store(engine, delivered_order(), delivered_order("o-2"))
    request = refund("r-1", "40.50")
    decided(engine, request)
    resent = request.model_copy(update={"issued_at": request.issued_at + timedelta(days=2)})  # a resumed flow
    reused = request.model_copy(update={"order_id": "o-2"})  # the refund id given again, for o-2

    with unit_of_work(engine) as uow:
        assert Outcome.model_validate(uow.answer_to(resent)).event_names == ["RefundApproved"]
        with pytest.raises(InvalidCommand) as refused:
            uow.answer_to(reused)
    assert refused.value.code == "command_id_reused"


def test_an_answer_recorded_before_fingerprints_were_kept_answers_its_command_as_before(engine: Engine) -> None:
    store(engine, delivered_order())
    request = refund("r-1", "40.50")
    decided(engine, request)
    with engine.begin() as connection:  # as 0007 and before recorded it
        connection.execute(tables.processed_commands.update().values(fingerprint=None))

    with unit_of_work(engine) as uow:
        assert Outcome.model_validate(uow.answer_to(request)).event_names == ["RefundApproved"]


def test_a_command_without_a_result_still_reads_as_processed(engine: Engine) -> None:
    command = touch("n-1", "touch-1")
    with unit_of_work(engine) as uow:
        note = Note(id="n-1")
        note.touch(command)
        uow.notifications.add(note)
        uow.commit(command)
    with unit_of_work(engine) as uow:
        assert uow.processed_result("touch-1") == {}


# -- optimistic concurrency -------------------------------------------------------------------
def test_a_unit_of_work_holding_an_old_version_cannot_overwrite_a_newer_save(engine: Engine) -> None:
    store(engine, delivered_order("o-1", "100.00"))
    first_request, second_request = refund("r-a", "60.00"), refund("r-b", "60.00")

    first = unit_of_work(engine)
    with first:
        stale = first.orders.get("o-1")
        # On SQLite a unit of work holds the write lock from its first statement;
        # ending this read transaction is what lets another one overlap with it.
        first.commit()

        with unit_of_work(engine) as second:
            second.orders.get("o-1").request_refund(first_request)
            second.commit(first_request)

        # Still sees 100.00 refundable, so it approves 60.00 more: the save must fail.
        stale.request_refund(second_request)
        with pytest.raises(ConcurrencyConflict):
            first.commit(second_request)
        assert stale.version == 1

    order = load_order(engine)
    assert order.version == 2
    assert list(order.refunds) == ["r-a"]
    assert order.refundable == eur("40.00")
    assert [r["causation_id"] for r in outbox_rows(engine) if r["event_type"] == "RefundApproved"] == [
        first_request.command_id
    ]
    assert processed_count(engine) == 1


def test_concurrent_refund_requests_never_approve_more_than_was_paid(engine: Engine) -> None:
    store(engine, delivered_order("o-1", "100.00"))
    workers = 8
    start_together = threading.Barrier(workers)

    def request_refund(n: int) -> int:
        """An activity: load, decide, commit; on a lost race reload and decide again."""
        command = refund(f"r-{n}", "30.00")
        start_together.wait()
        for attempt in range(100):
            try:
                with unit_of_work(engine) as uow:
                    if uow.processed_result(command.command_id) is not None:
                        return attempt
                    uow.orders.get("o-1").request_refund(command)
                    uow.commit(command, result={"refund_id": command.refund_id})
                    return attempt
            except ConcurrencyConflict:
                continue
        raise AssertionError(f"refund {n} never got through")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(request_refund, range(workers)))

    order = load_order(engine)
    approved = [r for r in order.refunds.values() if r.status is RefundStatus.APPROVED]
    rejected = [r for r in order.refunds.values() if r.status is RefundStatus.REJECTED]
    assert len(order.refunds) == workers  # every decision was kept: no lost update
    assert order.version == 1 + workers
    assert sum(r.amount.amount for r in approved) <= order.paid.amount
    assert len(approved) == 3 and len(rejected) == 5
    assert {r.outcome for r in rejected} == {"exceeds_refundable"}
    assert order.refundable == eur("10.00")

    decisions = [r for r in outbox_rows(engine) if r["event_type"] in {"RefundApproved", "RefundRejected"}]
    assert sorted(r["aggregate_version"] for r in decisions) == list(range(2, 2 + workers))
    assert sum(r["event_type"] == "RefundApproved" for r in decisions) == len(approved)
    assert processed_count(engine) == workers


# -- the in-memory stand-in keeps the same promises --------------------------------------------
def test_the_fake_unit_of_work_checks_versions_and_command_ids_like_the_database() -> None:
    database = FakeDatabase()
    with FakeUnitOfWork(database) as uow:
        uow.orders.add(delivered_order("o-1", "100.00"))
        uow.commit()

    first, second = FakeUnitOfWork(database), FakeUnitOfWork(database)
    with first, second:
        first.orders.get("o-1").request_refund(refund("r-a", "60.00"))
        second.orders.get("o-1").request_refund(refund("r-b", "60.00"))
        first.commit(refund("r-a", "60.00"), {"refund_id": "r-a"})
        with pytest.raises(ConcurrencyConflict):
            second.commit(refund("r-b", "60.00"))
        assert first.committed and not second.committed

    with FakeUnitOfWork(database) as uow:
        assert list(uow.orders.get("o-1").refunds) == ["r-a"]
        assert uow.processed_result("refund-r-a/request") == {"refund_id": "r-a"}
        with pytest.raises(ConcurrencyConflict):
            uow.commit(refund("r-a", "60.00"))
    assert [type(e).__name__ for e in database.outbox][-1] == "RefundApproved"
    assert len(database.processed) == 1
