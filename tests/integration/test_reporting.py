"""The reporting consumer on a real NATS JetStream server: fed only from the stream, each event
applied once (inbox), older aggregate versions ignored as stale, acknowledged after commit."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from nats.js.api import AckPolicy, ConsumerConfig

from integration import contracts as c
from integration.envelope import CONTENT_TYPE, CloudEvent
from reporting import store
from reporting.consumer import ReportingConsumer
from tests.nats_fixtures import made_again, stream_settings

pytestmark = pytest.mark.nats

DAY = datetime(2031, 5, 6, 10, 0, tzinfo=UTC)


def event(contract: c.Contract, *, id: str, subject: str = "o-1", version: int, aggregate: str = "orders") -> CloudEvent:
    return CloudEvent(
        id=id, source=f"settleflow/{contract.owner}", type=contract.type_name(), subject=subject, time=DAY,
        correlationid="order-o-1", causationid="cmd", aggregatetype=aggregate, aggregateversion=version,
        data=contract.model_dump(mode="json"),
    )  # fmt: skip


def approved(refund_id: str = "r-1", amount: str = "30.00") -> c.RefundApprovedV1:
    return c.RefundApprovedV1(refund_id=refund_id, order_id="o-1", customer_id="c-1", amount=amount, currency="EUR")


def completed(refund_id: str = "r-1", amount: str = "30.00") -> c.RefundCompletedV1:
    return c.RefundCompletedV1(refund_id=refund_id, order_id="o-1", customer_id="c-1", amount=amount, currency="EUR")


async def publish(js, envelope: CloudEvent, message_id: str | None = None) -> None:
    await js.publish(
        envelope.type.rsplit(".", 1)[0], envelope.to_json(),
        headers={"Nats-Msg-Id": message_id or envelope.id, "Content-Type": CONTENT_TYPE},
    )  # fmt: skip


@pytest.fixture
def reporting_engine(tmp_path: Path):
    engine = store.open_store(f"sqlite:///{tmp_path / 'reporting.db'}")
    yield engine
    engine.dispose()


async def consume(engine, url: str) -> dict[str, int]:
    consumer = ReportingConsumer(engine, stream_settings(url), fetch_timeout_seconds=0.5)
    assert await consumer.run(once=True) == 0
    return consumer.outcomes


async def test_an_event_delivered_twice_is_applied_once(reporting_engine, nats_server, jetstream):
    _, js = jetstream
    refund = event(approved(), id="e-approved", version=2)
    await publish(js, refund)
    # the same event again after the stream's duplicate window (a new message id, the same event id)
    await publish(js, refund, message_id="e-approved-after-the-window")

    outcomes = await consume(reporting_engine, nats_server.url)

    assert outcomes == {"applied": 1, "duplicate": 1}
    report = store.report(reporting_engine)
    assert [(r.status, r.count, r.totals) for r in report.refunds] == [("approved", 1, {"EUR": Decimal("30.00")})]


async def test_an_older_aggregate_version_arriving_after_a_newer_one_is_ignored_as_stale(
    reporting_engine, nats_server, jetstream
):
    _, js = jetstream
    await publish(js, event(completed(), id="e-completed", version=3))
    await publish(js, event(approved(), id="e-approved", version=2))

    outcomes = await consume(reporting_engine, nats_server.url)

    assert outcomes == {"applied": 1, "stale": 1}
    report = store.report(reporting_engine)
    assert [(r.status, r.count) for r in report.refunds] == [("completed", 1)]
    assert report.approved_not_settled == []


async def test_acknowledged_events_are_not_delivered_again_and_the_durable_consumer_resumes(
    reporting_engine, nats_server, jetstream
):
    _, js = jetstream
    await publish(js, event(approved("r-1"), id="e-1", version=2))
    assert await consume(reporting_engine, nats_server.url) == {"applied": 1}

    await publish(js, event(approved("r-2", "5.00"), id="e-2", version=3))
    assert await consume(reporting_engine, nats_server.url) == {"applied": 1}
    assert await consume(reporting_engine, nats_server.url) == {}


async def test_the_report_shows_refunds_and_payments_per_day_and_status_and_refunds_not_yet_settled(
    reporting_engine, nats_server, jetstream
):
    _, js = jetstream
    captured = c.PaymentCapturedV1(order_id="o-1", customer_id="c-1", attempt_id="a-1", amount="100.00", currency="EUR")
    settled = c.GatewayRefundSettledV1(refund_id="r-1", order_id="o-1", amount="30.00", currency="EUR")
    for envelope in (
        event(captured, id="e-pay", version=2, aggregate="payments"),
        event(approved("r-1"), id="e-r1", version=2),
        event(approved("r-2", "20.00"), id="e-r2", version=3),
        event(settled, id="e-settled", version=3, aggregate="payments"),
        event(completed("r-1"), id="e-r1-done", version=4),
        event(c.OrderPaidV1(order_id="o-1", amount="100.00", currency="EUR"), id="e-paid", version=5),
    ):
        await publish(js, envelope)

    outcomes = await consume(reporting_engine, nats_server.url)

    assert outcomes == {"applied": 5, "not_reported": 1}
    report = store.report(reporting_engine)
    assert [(r.day, r.status, r.count, r.totals) for r in report.refunds] == [
        ("2031-05-06", "approved", 1, {"EUR": Decimal("20.00")}),
        ("2031-05-06", "completed", 1, {"EUR": Decimal("30.00")}),
    ]
    assert [(r.status, r.totals) for r in report.payments] == [("captured", {"EUR": Decimal("100.00")})]
    assert [p["refund_id"] for p in report.approved_not_settled] == ["r-2"]
    text = store.format_report(report)
    assert "refunded 30.00 EUR; captured 100.00 EUR" in text
    assert "r-2 (order o-1) 20.00 EUR" in text


async def test_an_event_delivered_but_never_applied_comes_again_before_any_later_one(
    reporting_engine, nats_server, jetstream
):
    _, js = jetstream
    await publish(js, event(approved("r-1"), id="e-1", version=2))
    await publish(js, event(approved("r-2", "5.00"), id="e-2", version=3))
    crashed = ReportingConsumer(reporting_engine, stream_settings(nats_server.url), ack_wait_seconds=1)
    subscription = await js.pull_subscribe(
        "settleflow.>", durable=crashed.durable, stream="SETTLEFLOW",
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=1, max_ack_pending=1),
    )  # fmt: skip
    [first] = await subscription.fetch(1, timeout=2)
    assert CloudEvent.from_json(first.data).id == "e-1"  # ... and the consumer died before applying it

    restarted = ReportingConsumer(
        reporting_engine, stream_settings(nats_server.url), ack_wait_seconds=1, fetch_timeout_seconds=2
    )
    await restarted.run(once=True)

    assert restarted.outcomes == {"applied": 2}  # e-1 first: e-2 (a later version) never overtook it
    report = store.report(reporting_engine)
    assert sorted(p["refund_id"] for p in report.approved_not_settled) == ["r-1", "r-2"]  # r-2 was not dropped as stale


async def test_a_deleted_or_restored_reporting_database_is_rebuilt_from_the_stream_not_resumed(
    tmp_path, nats_server, jetstream
):
    """The read position is the database's own (eventsourcing's tracking), not the broker's
    durable consumer: an empty database replays the stream from the start, and one restored
    from an older backup replays what came after its backup."""
    import shutil

    _, js = jetstream
    first = store.open_store(f"sqlite:///{tmp_path / 'reporting.db'}")
    await publish(js, event(approved("r-1"), id="e-1", version=2))
    assert await consume(first, nats_server.url) == {"applied": 1}
    first.dispose()
    shutil.copy(tmp_path / "reporting.db", tmp_path / "backup.db")

    reopened = store.open_store(f"sqlite:///{tmp_path / 'reporting.db'}")
    await publish(js, event(approved("r-2", "5.00"), id="e-2", version=3))
    assert await consume(reopened, nats_server.url) == {"applied": 1}
    reopened.dispose()

    empty = store.open_store(f"sqlite:///{tmp_path / 'new.db'}")  # the file deleted: a new one
    assert await consume(empty, nats_server.url) == {"applied": 2}
    assert [(r.status, r.count) for r in store.report(empty).refunds] == [("approved", 2)]
    assert await consume(empty, nats_server.url) == {}  # and then it resumes from there
    empty.dispose()

    restored = store.open_store(f"sqlite:///{tmp_path / 'backup.db'}")  # r-1 only
    assert await consume(restored, nats_server.url) == {"applied": 1}
    assert store.report(restored).events_applied == 2
    restored.dispose()


async def test_a_stream_recreated_under_the_same_name_is_read_from_its_start(
    reporting_engine, nats_server, jetstream
):
    """The stream lost and made again starts its sequence at 1: the database's old position
    must not skip its first events."""
    from integration.stream import STREAM, ensure_stream

    _, js = jetstream
    for n in range(3):
        await publish(js, event(approved(f"r-{n}", "1.00"), id=f"e-{n}", version=n + 2))
    assert await consume(reporting_engine, nats_server.url) == {"applied": 3}

    await js.delete_stream(STREAM)  # the broker's storage lost; the stream comes back empty
    await made_again(lambda: ensure_stream(js, stream_settings(nats_server.url)))
    await publish(js, event(approved("r-new", "7.00"), id="e-new", subject="o-2", version=2))

    assert await consume(reporting_engine, nats_server.url) == {"applied": 1}
    assert "r-new" in [p["refund_id"] for p in store.report(reporting_engine).approved_not_settled]


async def test_a_database_from_before_positions_were_kept_continues_without_replaying_the_stream(
    reporting_engine, nats_server, jetstream
):
    _, js = jetstream
    await publish(js, event(approved("r-1"), id="e-1", version=2))
    assert await consume(reporting_engine, nats_server.url) == {"applied": 1}
    with reporting_engine.begin() as conn:  # as a database written before this change: no position
        conn.execute(store.positions.delete())

    await publish(js, event(approved("r-2", "5.00"), id="e-2", version=3))

    assert await consume(reporting_engine, nats_server.url) == {"applied": 1}  # e-1 not delivered again
    assert store.position(reporting_engine, ReportingConsumer.default_durable()).sequence == 2


async def test_events_the_stream_dropped_before_they_were_read_are_recorded_as_missed_and_shown_by_the_report(
    reporting_engine, nats_server, jetstream
):
    """Stream sequences have no gaps: events gone (the stream's limits) while the consumer was
    down are a jump past its position — recorded, and shown, not silently stepped over."""
    from integration.stream import STREAM

    _, js = jetstream
    for n in range(2):
        await publish(js, event(approved(f"r-{n}", "1.00"), id=f"e-{n}", subject=f"o-{n}", version=2))
    assert await consume(reporting_engine, nats_server.url) == {"applied": 2}
    for n in range(2, 6):  # published while reporting is down
        await publish(js, event(approved(f"r-{n}", "1.00"), id=f"e-{n}", subject=f"o-{n}", version=2))
    await js.purge_stream(STREAM, seq=5)  # the stream's limits drop sequences 3 and 4 unread

    assert await consume(reporting_engine, nats_server.url) == {"applied": 2}

    report = store.report(reporting_engine)
    assert report.events_missed == [(3, 4)]
    assert sorted(p["refund_id"] for p in report.approved_not_settled) == ["r-0", "r-1", "r-4", "r-5"]
    assert "events missed (gone from the stream before they were read; not in the figures above): 2 " \
           "(stream sequences 3-4)" in store.format_report(report)


async def test_a_database_reading_a_stream_that_already_dropped_its_first_events_records_them_as_missed(
    reporting_engine, nats_server, jetstream
):
    from integration.stream import STREAM

    _, js = jetstream
    for n in range(3):
        await publish(js, event(approved(f"r-{n}", "1.00"), id=f"e-{n}", subject=f"o-{n}", version=2))
    await js.purge_stream(STREAM, seq=3)

    assert await consume(reporting_engine, nats_server.url) == {"applied": 1}
    assert store.report(reporting_engine).events_missed == [(1, 2)]


async def test_events_dropped_at_the_end_of_the_stream_are_shown_as_missed_before_any_later_event_comes(
    reporting_engine, nats_server, jetstream
):
    from integration.stream import STREAM

    _, js = jetstream
    await publish(js, event(approved("r-0", "1.00"), id="e-0", subject="o-0", version=2))
    assert await consume(reporting_engine, nats_server.url) == {"applied": 1}
    for n in range(1, 4):  # published while reporting is down, then dropped unread
        await publish(js, event(approved(f"r-{n}", "1.00"), id=f"e-{n}", subject=f"o-{n}", version=2))
    await js.purge_stream(STREAM)

    assert await consume(reporting_engine, nats_server.url) == {}

    assert store.report(reporting_engine).events_missed == [(2, 4)]
    await publish(js, event(approved("r-9", "1.00"), id="e-9", subject="o-9", version=2))
    assert await consume(reporting_engine, nats_server.url) == {"applied": 1}
    assert store.report(reporting_engine).events_missed == [(2, 4)]  # recorded once


async def test_events_read_in_order_miss_nothing(reporting_engine, nats_server, jetstream):
    _, js = jetstream
    for n in range(3):
        await publish(js, event(approved(f"r-{n}", "1.00"), id=f"e-{n}", subject=f"o-{n}", version=2))
    await consume(reporting_engine, nats_server.url)
    await publish(js, event(approved("r-9", "1.00"), id="e-9", subject="o-9", version=2))
    await consume(reporting_engine, nats_server.url)

    report = store.report(reporting_engine)
    assert (report.events_applied, report.events_missed) == (4, [])
    assert "events missed" not in store.format_report(report)


async def test_only_the_relay_changes_the_streams_limits_a_consumer_with_other_settings_leaves_them(
    reporting_engine, nats_server, jetstream
):
    from integration.stream import STREAM, ensure_stream

    _, js = jetstream
    larger = stream_settings(nats_server.url).model_copy(update={"max_bytes": 2 << 30})
    await ensure_stream(js, larger, owner=True)  # the relay, configured with a larger stream

    await consume(reporting_engine, nats_server.url)  # the consumer, started with the defaults

    assert (await js.stream_info(STREAM)).config.max_bytes == 2 << 30


async def test_a_stream_that_deletes_unread_events_is_refused_not_read(reporting_engine, nats_server, jetstream):
    """Interest or work-queue retention deletes what no consumer holds yet (events published
    before reporting's consumer existed, or while it is recreated): settleflow never reads one,
    nor configures one (SETTLEFLOW_STREAM_RETENTION accepts `limits` alone)."""
    from pydantic import ValidationError

    from integration.stream import STREAM, StreamMisconfigured, StreamSettings

    _, js = jetstream
    with pytest.raises(ValidationError, match="limits"):
        StreamSettings(NATS_URL=nats_server.url, SETTLEFLOW_STREAM_RETENTION="interest")
    await js.delete_stream(STREAM)
    config = stream_settings(nats_server.url).stream_config()
    config.retention = config.retention.__class__("interest")
    await made_again(lambda: js.add_stream(config))
    try:
        consumer = ReportingConsumer(reporting_engine, stream_settings(nats_server.url), fetch_timeout_seconds=0.5)
        with pytest.raises(StreamMisconfigured, match="interest retention"):
            await consumer.run(once=True)
    finally:
        await js.delete_stream(STREAM)  # the next test's stream is created afresh


async def test_a_message_that_is_not_a_readable_event_is_recorded_and_skipped_and_the_events_after_it_are_applied(
    reporting_engine, nats_server, jetstream
):
    _, js = jetstream
    await publish(js, event(approved("r-1"), id="e-1", version=2))
    await js.publish("settleflow.test", b"hello from someone's test script")  # the stream takes all of settleflow.>
    broken = event(approved("r-2"), id="e-broken", version=3).model_copy(update={"data": {"refund_id": "r-2"}})
    await publish(js, broken)  # a known type whose data does not fit its contract
    await publish(js, event(approved("r-3", "5.00"), id="e-3", version=4))

    outcomes = await consume(reporting_engine, nats_server.url)

    assert outcomes == {"applied": 2, "rejected": 2}  # the consumer did not stop at the first bad one
    report = store.report(reporting_engine)
    assert sorted(p["refund_id"] for p in report.approved_not_settled) == ["r-1", "r-3"]
    [(seq_text, text_reason), (seq_data, data_reason)] = report.events_rejected
    assert (seq_text, seq_data) == (2, 3)
    assert "not a settleflow event" in text_reason
    assert "e-broken" in data_reason and "RefundApprovedV1" in data_reason
    shown = store.format_report(report)
    assert "messages rejected (not readable settleflow events; not in the figures above): 2" in shown
    assert await consume(reporting_engine, nats_server.url) == {}  # acknowledged: not delivered again


def test_a_rejected_message_delivered_again_is_recorded_once(reporting_engine):
    for _ in range(2):  # the ack of the first delivery was lost
        store.reject(reporting_engine, "reporting", "stream-1", 7, "settleflow.test", "not a settleflow event")

    assert store.report(reporting_engine).events_rejected == [(7, "not a settleflow event")]
    assert store.position(reporting_engine, "reporting") == store.Position("stream-1", 7)
