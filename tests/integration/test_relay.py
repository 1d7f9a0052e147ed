"""The relay on a real NATS JetStream server (the venv's nats-server, started by the tests):
committed facts are published once each, in per-aggregate order, and never lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, update

from adapters.inspection import outbox_rows
from adapters.nats_server import LocalNatsServer
from adapters.outbox import lag, parked_rows
from adapters.tables import outbox
from integration.envelope import CloudEvent
from integration.translation import TABLE_VERSION
from relay import Relay, RelaySettings
from tests.integration.test_persistence import (
    PLACED_AT,
    delivered_order,
    load_order,
    place_order,
    refund,
    store,
    unit_of_work,
)
from tests.nats_fixtures import free_port, stream_messages, stream_settings

pytestmark = pytest.mark.nats


def relay(engine: Engine, url: str, **settings) -> Relay:
    defaults = {"backoff_seconds": 0.1, "backoff_max_seconds": 0.5, "once_timeout_seconds": 30}
    return Relay(engine, RelaySettings(**(defaults | settings)), stream_settings(url))


async def run_once(engine: Engine, url: str, **settings) -> Relay:
    r = relay(engine, url, **settings)
    try:
        assert await r.run(once=True) == 0
    finally:
        await r.close()
    return r


def approve_refund(engine: Engine, refund_id: str, amount: str, order_id: str = "o-1") -> None:
    with unit_of_work(engine) as uow:
        uow.orders.get(order_id).request_refund(refund(refund_id, amount, order_id))
        uow.commit()


def envelopes(messages) -> list[CloudEvent]:
    return [CloudEvent.from_json(m.data) for m in messages]


async def test_committed_events_are_published_once_each_in_aggregate_order_with_the_event_id_as_message_id(
    engine, nats_server, jetstream
):
    _, js = jetstream
    store(engine, delivered_order("o-1", "100.00"))
    approve_refund(engine, "r-1", "30.00")

    first = await run_once(engine, nats_server.url)
    again = await run_once(engine, nats_server.url)

    messages = await stream_messages(js)
    published = envelopes(messages)
    assert [e.type for e in published] == [
        "settleflow.billing.order_placed.v1", "settleflow.billing.order_paid.v1", "settleflow.billing.refund_approved.v1"
    ]  # fmt: skip
    assert [m.subject for m in messages] == [e.type.removesuffix(".v1") for e in published]
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [e.id for e in published]
    assert [e.aggregateversion for e in published] == [1, 1, 2]
    rows = {r["event_id"]: r for r in outbox_rows(engine)}
    assert {e.id for e in published} <= set(rows)
    assert all(r["published_at"] is not None for r in rows.values())
    assert sorted(r["published_as"] or "-" for r in rows.values()) == sorted(
        ["-", "-", *(e.type for e in published)]  # ShipmentRecorded, DeliveryRecorded stay inside
    )
    assert (first.counts.published, first.counts.internal) == (3, 2)
    assert (again.counts.published, again.counts.internal) == (0, 0)
    assert lag(engine).unpublished == 0


async def test_a_row_published_again_after_a_crash_before_its_mark_is_dropped_by_the_stream(
    engine, nats_server, jetstream
):
    _, js = jetstream
    store(engine, delivered_order("o-1", "100.00"))
    await run_once(engine, nats_server.url)
    with engine.begin() as connection:  # the relay died after the ack, before the mark
        connection.execute(update(outbox).values(published_at=None, published_as=None))

    second = await run_once(engine, nats_server.url)

    assert second.counts.duplicates == second.counts.published == 2
    assert len(await stream_messages(js)) == 2


async def test_a_rolled_back_change_publishes_nothing(engine, nats_server, jetstream):
    _, js = jetstream
    _, lost = place_order("o-lost")
    with pytest.raises(RuntimeError), unit_of_work(engine) as uow:
        uow.orders.add(lost)
        raise RuntimeError("the worker died before committing")
    store(engine, place_order("o-kept")[1])

    await run_once(engine, nats_server.url)

    assert [e.subject for e in envelopes(await stream_messages(js))] == ["o-kept"]


async def test_an_unknown_event_type_is_parked_with_its_reason_and_the_rest_still_goes_out(engine, nats_server, jetstream):
    _, js = jetstream
    store(engine, place_order("o-1")[1])
    with engine.begin() as connection:
        connection.execute(insert(outbox).values(
            event_id="e-mystery", event_type="OrderTeleported", schema_version=1, payload={}, aggregate_type="orders",
            aggregate_id="o-2", aggregate_version=1, position=0, correlation_id="x", causation_id="y",
            occurred_at=PLACED_AT, recorded_at=PLACED_AT,
        ))  # fmt: skip

    first = await run_once(engine, nats_server.url)
    await run_once(engine, nats_server.url)

    assert first.counts.parked == 1
    [parked] = parked_rows(engine)
    assert parked["event_id"] == "e-mystery"
    assert "unknown event type 'OrderTeleported'" in parked["park_reason"]
    assert (lag(engine).unpublished, lag(engine).parked) == (0, 1)
    assert [e.subject for e in envelopes(await stream_messages(js))] == ["o-1"]
    assert parked["park_reason"].startswith(f"[table {TABLE_VERSION}] ")  # parked by this table:
    again = await run_once(engine, nats_server.url)  # a restart does not try it again
    assert (again.counts.parked, lag(engine).parked) == (0, 1)


async def test_nats_down_nothing_is_marked_and_everything_goes_out_once_it_is_back(engine, tmp_path: Path):
    server = LocalNatsServer(free_port(), tmp_path / "nats")
    store(engine, delivered_order("o-1", "100.00"))
    approve_refund(engine, "r-1", "30.00")

    publishing = asyncio.create_task(run_once(engine, server.url))  # the server is not running yet
    await asyncio.sleep(1.0)
    assert not publishing.done()
    assert lag(engine).unpublished == 5  # nothing marked while NATS is away
    await asyncio.to_thread(server.start)
    try:
        relayed = await asyncio.wait_for(publishing, timeout=30)
        assert relayed.counts.published == 3
        assert lag(engine).unpublished == 0

        # and once more: the server goes away mid-life and comes back
        approve_refund(engine, "r-2", "20.00")
        await asyncio.to_thread(server.stop)
        publishing = asyncio.create_task(run_once(engine, server.url))
        await asyncio.sleep(0.5)
        assert lag(engine).unpublished == 1
        await asyncio.to_thread(server.start)
        await asyncio.wait_for(publishing, timeout=30)

        from integration.stream import connect

        nc = await connect(server.url, name="check")
        try:
            published = envelopes(await stream_messages(nc.jetstream()))
        finally:
            await nc.close()
        assert [e.type.split(".")[2] for e in published] == [
            "order_placed", "order_paid", "refund_approved", "refund_approved"
        ]  # fmt: skip
        assert lag(engine).unpublished == 0
    finally:
        server.stop()


async def test_two_relays_at_once_publish_every_event_once_and_each_aggregate_in_version_order(
    engine, database_url, nats_server, jetstream
):
    _, js = jetstream
    orders = [f"o-{n}" for n in range(6)]
    store(engine, *(delivered_order(order_id, "100.00") for order_id in orders))
    for order_id in orders:
        for n in range(3):
            approve_refund(engine, f"{order_id}-r{n}", "10.00", order_id)
    from adapters.db import make_engine

    second_engine = make_engine(database_url)
    try:
        await asyncio.gather(
            run_once(engine, nats_server.url, batch=4), run_once(second_engine, nats_server.url, batch=4)
        )
    finally:
        second_engine.dispose()

    published = envelopes(await stream_messages(js))
    assert len({e.id for e in published}) == len(published) == 6 * (2 + 3)
    for order_id in orders:
        versions = [e.aggregateversion for e in published if e.subject == order_id]
        assert versions == sorted(versions) == [1, 1, 2, 3, 4]
    assert load_order(engine, "o-0").version == 4
    assert lag(engine).unpublished == 0


def test_the_relay_logs_its_lag_and_warns_past_the_threshold(engine, caplog):
    with engine.begin() as connection:  # a row waiting since PLACED_AT: far past any threshold
        connection.execute(insert(outbox).values(
            event_id="e-old", event_type="OrderPlaced", schema_version=1, payload={}, aggregate_type="orders",
            aggregate_id="o-9", aggregate_version=1, position=0, correlation_id="x", causation_id="y",
            occurred_at=PLACED_AT, recorded_at=PLACED_AT,
        ))  # fmt: skip
    r = relay(engine, "nats://127.0.0.1:1", lag_warn_seconds=30)

    with caplog.at_level("INFO", logger="settleflow.relay"):
        r._log_lag(force=True)

    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert "1 unpublished" in record.getMessage()


def test_rows_published_before_the_broker_failed_stay_marked_on_every_database(engine):
    """A batch that stops half-way (NATS gone after some acks) keeps the marks of what was
    acknowledged: on PostgreSQL they are written in the claiming transaction, which used to
    roll back with the error, so those rows went out again after the broker's duplicate window."""
    from datetime import UTC, datetime

    from adapters.outbox import OutboxReader

    store(engine, delivered_order("o-1", "100.00"))
    before = lag(engine).unpublished
    reader = OutboxReader(engine, clock=lambda: datetime.now(UTC))
    with pytest.raises(ConnectionError), reader.batch(10) as batch:
        batch.mark_published(batch.rows[0]["event_id"], "settleflow.billing.order_placed.v1")
        raise ConnectionError("the broker went away after one ack")

    assert lag(engine).unpublished == before - 1
    [marked] = [r for r in outbox_rows(engine) if r["published_at"] is not None]
    assert marked["published_as"] == "settleflow.billing.order_placed.v1"


async def test_a_parked_row_holds_its_aggregates_later_rows_and_goes_out_first_once_a_relay_knows_its_type(
    engine, nats_server, jetstream, monkeypatch
):
    """A rolling deploy: a worker records an event type the running relay does not know yet.
    The row is parked and the order's later events wait; the upgraded relay publishes it,
    then the rest, in version order."""
    import relay as relay_module

    _, js = jetstream
    store(engine, delivered_order("o-1", "100.00"))  # version 1: placed, paid, shipped, delivered
    with engine.begin() as connection:  # "paid" is of a type this relay cannot publish yet
        connection.execute(update(outbox).where(outbox.c.event_type == "OrderPaid")
                           .values(event_type="OrderPaidInInstalments"))
    approve_refund(engine, "r-1", "30.00")  # version 2 of the same order, a known type

    with monkeypatch.context() as old_version:  # the relay before the upgrade: another table
        old_version.setattr(relay_module, "TABLE_VERSION", "old-table")
        old_relay = await run_once(engine, nats_server.url)

    assert old_relay.counts.parked == 1
    assert [e.type.split(".")[2] for e in envelopes(await stream_messages(js))] == ["order_placed"]
    assert lag(engine).unpublished == 3  # shipped, delivered and the approval wait behind it

    with engine.begin() as connection:  # the upgraded relay knows the type: here, as OrderPaid
        connection.execute(update(outbox).where(outbox.c.event_type == "OrderPaidInInstalments")
                           .values(event_type="OrderPaid"))
    new_relay = await run_once(engine, nats_server.url)

    assert new_relay.counts.parked == 0
    published = envelopes(await stream_messages(js))
    assert [e.type.split(".")[2] for e in published] == ["order_placed", "order_paid", "refund_approved"]
    assert [e.aggregateversion for e in published] == [1, 1, 2]
    assert (lag(engine).unpublished, lag(engine).parked) == (0, 0)


def test_a_row_one_relay_published_while_another_parked_it_holds_none_of_its_aggregates_later_rows(engine):
    """SQLite lets two relays claim one row: in a rolling deploy the older relay publishes it
    while the newer one, whose table cannot read it, parks it. The row went out: its park never
    lands after the publish, and one that landed before it holds nothing and is cleared."""
    from datetime import UTC, datetime

    from adapters.outbox import Batch, OutboxReader, parked_under, retry_parked

    store(engine, delivered_order("o-1", "100.00"))
    approve_refund(engine, "r-1", "30.00")
    reader = OutboxReader(engine, clock=lambda: datetime.now(UTC))
    with reader.batch(1) as older:  # the older relay publishes the order's first row
        [first] = older.rows
        older.mark_published(first["event_id"], "settleflow.billing.order_placed.v1")
    with engine.begin() as connection:  # the newer relay's park of its own stale claim comes after
        reader._write(connection, Batch([first], parked={first["event_id"]: parked_under("new", "cannot read it")}))
    assert lag(engine).parked == 0

    with reader.batch(1) as newer:  # the same race the other way round: parked, then marked published
        [second] = newer.rows
        newer.park(second["event_id"], parked_under("new", "cannot read it"))
    with engine.begin() as connection:
        connection.execute(update(outbox).where(outbox.c.event_id == second["event_id"])
                           .values(published_at=datetime.now(UTC), published_as="settleflow.billing.order_paid.v1"))

    assert (lag(engine).parked, parked_rows(engine)) == (0, [])
    with reader.batch(10) as later:  # the order's later rows are not held behind it
        assert [r["aggregate_version"] for r in later.rows][-1] == 2
    assert retry_parked(engine, "new") == 1  # its stale park is cleared, by the relay that left it too


@pytest.mark.postgres
def test_the_relays_claim_on_postgresql_reads_committed_data_whatever_the_servers_default(postgres_server_url):
    """Under the server's REPEATABLE READ the read after taking the aggregates' locks would reuse the
    first statement's snapshot, and publish again rows another relay marked before it got them."""
    from datetime import UTC, datetime

    from sqlalchemy import event
    from sqlalchemy.engine import make_url

    from adapters.db import make_engine, upgrade
    from adapters.outbox import OutboxReader
    from tests.integration.conftest import fresh_schema

    with fresh_schema(postgres_server_url) as url:
        upgrade(url)
        options = make_url(url).query["options"] + " -cdefault_transaction_isolation=repeatable\\ read"
        engine = make_engine(make_url(url).update_query_dict({"options": options}).render_as_string(hide_password=False))
        try:
            with engine.connect() as connection:  # the server's default, as this engine's sessions get it
                assert connection.exec_driver_sql("SHOW transaction_isolation").scalar() == "repeatable read"
            store(engine, delivered_order("o-1", "100.00"))
            seen: list[str] = []
            event.listen(engine, "begin", lambda conn: seen.append(
                conn.exec_driver_sql("SHOW transaction_isolation").scalar()))

            with OutboxReader(engine, clock=lambda: datetime.now(UTC)).batch(10) as batch:
                assert batch.rows

            assert seen == ["read committed"]
        finally:
            engine.dispose()


def _rows_touched(plan: dict) -> int:
    """Rows a PostgreSQL plan node and its children produced or threw away, over all their loops."""
    loops = plan.get("Actual Loops", 1)
    own = (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
           + plan.get("Rows Removed by Join Filter", 0)) * loops
    return own + sum(_rows_touched(child) for child in plan.get("Plans", []))


@pytest.mark.postgres
def test_a_backlog_the_statistics_call_empty_is_read_once_per_batch_not_once_per_pending_row(postgres_server_url):
    """An outbox last analyzed while everything was published, then a backlog (a broker outage,
    faster than autovacuum analyzes): the planner believes nothing is pending. Both of a batch's
    reads (which aggregates to claim, then their rows) still touch each pending row a bounded
    number of times. They once read the backlog again for every pending row: the claim looked for
    each row's parked siblings through the index of unpublished rows (43 s a batch for 13,000
    pending), the rows' read regrouped the backlog per row (12.7 million rows for 29,000)."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import event, text

    from adapters.db import make_engine, upgrade
    from adapters.outbox import OutboxReader
    from tests.integration.conftest import fresh_schema

    aggregates, per_aggregate = 400, 5
    backlog = aggregates * per_aggregate
    start = datetime(2026, 12, 1, tzinfo=UTC)
    with fresh_schema(postgres_server_url) as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(insert(outbox), [
                    {"event_id": f"e-{a}-{v}", "event_type": "OrderPaid", "schema_version": 1, "payload": {},
                     "aggregate_type": "orders", "aggregate_id": f"o-{a}", "aggregate_version": v, "position": 0,
                     "correlation_id": f"c-{a}", "causation_id": f"c-{a}/{v}",
                     "recorded_at": start + timedelta(seconds=v * aggregates + a),
                     "published_at": start + timedelta(days=1)}
                    for a in range(aggregates) for v in range(1, per_aggregate + 1)
                ])  # fmt: skip
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                # Autovacuum must not analyze again before the reads: the statistics stay stale.
                connection.execute(text("ALTER TABLE outbox SET (autovacuum_enabled = off)"))
                connection.execute(text("VACUUM ANALYZE outbox"))  # everything published, as it was analyzed
            with engine.begin() as connection:
                connection.execute(update(outbox).values(published_at=None))  # then the broker went away
            with engine.connect() as connection:  # the premise: the planner believes almost nothing is pending
                estimate = connection.exec_driver_sql(
                    "EXPLAIN (FORMAT JSON) SELECT * FROM outbox WHERE published_at IS NULL").scalar()
            assert estimate[0]["Plan"]["Plan Rows"] < backlog / 100

            statements: list[tuple[str, object]] = []

            def seen(conn, cursor, statement, parameters, context, many) -> None:  # noqa: ANN001
                statements.append((statement, parameters))

            event.listen(engine, "before_cursor_execute", seen)
            with OutboxReader(engine, clock=lambda: datetime.now(UTC)).batch(500) as batch:
                claimed = batch.rows
            event.remove(engine, "before_cursor_execute", seen)
            reads = [(st, pa) for st, pa in statements if "FROM outbox" in st
                     and st.lstrip().upper().startswith(("SELECT", "WITH"))]
            touched = []
            with engine.connect() as connection:
                for read, parameters in reads:  # which aggregates to claim; their rows
                    plan = connection.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + read, parameters).scalar()
                    touched.append(_rows_touched(plan[0]["Plan"]))
        finally:
            engine.dispose()

    assert len(touched) == 2
    assert all(rows <= 10 * backlog for rows in touched), touched
    # And it is the right batch: the oldest aggregates' rows, each aggregate's in version order.
    assert len(claimed) == 500
    by_aggregate: dict[str, list[int]] = {}
    for row in claimed:
        by_aggregate.setdefault(row["aggregate_id"], []).append(row["aggregate_version"])
    assert all(versions == list(range(1, per_aggregate + 1)) for versions in by_aggregate.values())
    assert sorted(by_aggregate) == sorted(f"o-{a}" for a in range(100))


async def test_a_row_parked_by_the_running_relays_own_table_goes_out_once_an_operator_retries_it(
    engine, nats_server, jetstream
):
    """Its own table's parks stay parked across restarts; `starter.py outbox --retry-parked`
    puts them back in line (here a row whose data was mended after it was parked)."""
    from adapters.outbox import release_parked

    _, js = jetstream
    store(engine, place_order("o-1")[1])
    with engine.begin() as connection:  # parked by this very table: no restart tries it again
        connection.execute(update(outbox).values(
            parked_at=PLACED_AT, park_reason=f"[table {TABLE_VERSION}] the payload could not be read"))
    assert (await run_once(engine, nats_server.url)).counts.published == 0
    assert lag(engine).parked == 1

    assert release_parked(engine, ["not-an-event"]) == 0  # only the rows named
    assert release_parked(engine) == 1
    published = await run_once(engine, nats_server.url)

    assert (published.counts.published, lag(engine).parked, lag(engine).unpublished) == (1, 0, 0)
    assert [e.subject for e in envelopes(await stream_messages(js))] == ["o-1"]
    assert release_parked(engine) == 0  # nothing parked is left; a published row is never touched
