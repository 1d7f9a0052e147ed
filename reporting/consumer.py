"""The reporting consumer: a durable JetStream consumer applying events to the read model.

    python -m reporting.consumer           # keep consuming until Ctrl-C / SIGTERM
    python -m reporting.consumer --once    # apply what is on the stream now, then exit

One sentence: fetch the next event from durable consumer `reporting` on stream
SETTLEFLOW, apply it in one transaction with its inbox row (store.apply), and only
then acknowledge it; a crash before the ack redelivers the event, and the inbox
makes the second delivery change nothing. A message that is not a readable settleflow
event is recorded with its reason and skipped (store.reject), in one transaction with the
position's move, and shown by the report; it does not stop the events after it.

One event in flight at a time (`max_ack_pending=1`): JetStream hands out the next
message only once the previous one is acknowledged, so a redelivery can never come
after a later event of the same aggregate -- which the stale-version rule would then
drop. Fetching one at a time costs little (thousands of events/s locally).

| setting | variable | default |
|---|---|---|
| database | REPORTING_DATABASE_URL | sqlite:///var/reporting.db |
| durable consumer name | SETTLEFLOW_REPORTING_DURABLE | reporting |
| redeliver when not acked within | SETTLEFLOW_REPORTING_ACK_WAIT_SECONDS | 30 |
| back-off while NATS is down (longest) | - | 0.5 s doubling to 15 s |
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from sqlalchemy import Engine

from integration.envelope import CloudEvent
from integration.stream import STREAM, StreamSettings, connect, StreamMisconfigured, ensure_stream, stream_settings_or_exit
from reporting import store

log = logging.getLogger("settleflow.reporting")

BROKER_TROUBLE = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError, OSError)


class ReportingConsumer:
    def __init__(self, engine: Engine, stream: StreamSettings, durable: str | None = None,
                 ack_wait_seconds: float | None = None, fetch_timeout_seconds: float = 1.0) -> None:  # fmt: skip
        self.engine = engine
        self.stream = stream
        self.durable = durable or self.default_durable()
        self.ack_wait = ack_wait_seconds or float(os.environ.get("SETTLEFLOW_REPORTING_ACK_WAIT_SECONDS", "30"))
        self.fetch_timeout = fetch_timeout_seconds  # with once: how often to ask whether it is caught up
        self.ack_timeout = 5.0  # an ack the server has not confirmed by then: reconnect, redelivery is harmless
        self.outcomes: dict[str, int] = {}
        self._stream = ""  # the stream read (its creation time), set on connecting
        self._stopping = asyncio.Event()

    @staticmethod
    def default_durable() -> str:
        return os.environ.get("SETTLEFLOW_REPORTING_DURABLE", "reporting")

    def stop(self) -> None:
        self._stopping.set()

    def _apply(self, message) -> str:
        """Apply one event, in the trace the relay's publish started (traceparent header). A message
        that is not a readable settleflow event is recorded and skipped (`rejected`): redelivering it
        would stop every later event from reaching the report. Anything else that goes wrong (the
        database, a bug) is raised: the message is not acknowledged and comes again."""
        at = (self.durable, self._stream, message.metadata.sequence.stream)
        try:
            return self._apply_event(store.read_envelope(message.data), message, at)
        except store.Unreadable as unreadable:
            envelope_id = _envelope_id(message.data)
            log.error("stream sequence %s on %s is not a readable settleflow event, skipped and recorded: %s",
                      at[2], message.subject, unreadable)  # fmt: skip
            store.reject(self.engine, *at, subject=message.subject, reason=str(unreadable), event_id=envelope_id)
            return "rejected"

    def _apply_event(self, event: CloudEvent, message, at: tuple[str, str, int]) -> str:
        with trace.get_tracer("settleflow.reporting").start_as_current_span(
            f"apply {event.type}", context=propagate.extract(dict(message.headers or {})), kind=SpanKind.CONSUMER,
            attributes={"settleflow.correlation_id": event.correlationid, "settleflow.command_id": event.causationid,
                        "messaging.system": "nats", "messaging.message.id": event.id},
        ) as span:  # fmt: skip
            outcome = store.apply(self.engine, event, at=at)
            span.set_attribute("settleflow.apply_outcome", outcome)
            return outcome

    async def _own_position(self, js) -> int:
        """The last stream sequence this database applied. The database's position decides, not
        the broker's: a durable consumer already past it (the database deleted, or restored
        from a backup) is removed, so that it is created again starting after that position.
        A stream recreated since (its sequence starts at 1 again) is read from its start."""
        stream = await js.stream_info(STREAM)
        self._stream = str(stream.created)
        mine = await asyncio.to_thread(store.position, self.engine, self.durable)
        try:
            info = await js.consumer_info(STREAM, self.durable)
        except nats.js.errors.NotFoundError:
            info = None
        acked = (info.ack_floor.stream_seq or 0) if info is not None and info.ack_floor is not None else 0
        if mine.stream is None and acked and await asyncio.to_thread(store.has_applied_anything, self.engine):
            # A database from before positions were kept, read up to the durable's acks: take those
            # as its position once, rather than replaying the whole stream into it.
            await asyncio.to_thread(store.record_position, self.engine, self.durable, self._stream, acked)
            return acked
        applied = mine.sequence if mine.stream in (None, self._stream) else 0
        if applied > stream.state.last_seq:
            applied = 0  # the stream was emptied or recreated under the same name
        if applied != mine.sequence:
            log.warning("stream %s is not the one this database read (recreated): reading it from its start", STREAM)
        if stream.state.first_seq > applied + 1:
            # Dropped by the stream's limits before this database read them: recorded now, so the
            # report says so even when no later event comes to show the jump.
            gone = (applied + 1, stream.state.first_seq - 1)
            log.warning("events %s to %s are no longer on the stream (its limits): the report misses them", *gone)
            await asyncio.to_thread(store.record_gone, self.engine, self.durable, self._stream, *gone)
            applied = gone[1]
        if acked > applied:
            log.warning("durable consumer %s is at stream sequence %s, this database at %s: replaying from %s",
                        self.durable, acked, applied, applied + 1)
            await js.delete_consumer(STREAM, self.durable)
        return applied

    @staticmethod
    async def _caught_up(subscription) -> bool:
        """Whether the stream holds nothing more for this consumer: `--once` ends on that, not
        on a quiet moment (a busy machine can be slower than any fetch timeout)."""
        info = await subscription.consumer_info()
        return not info.num_pending and not info.num_ack_pending

    async def run(self, once: bool = False) -> int:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                nc = await connect(self.stream.nats_url, name=f"settleflow-{self.durable}")
            except BROKER_TROUBLE as trouble:
                log.warning("NATS at %s unreachable (%s); retrying in %.1f s", self.stream.nats_url, trouble, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 15.0)
                continue
            try:
                js = nc.jetstream()
                await ensure_stream(js, self.stream)
                applied = await self._own_position(js)
                start = (  # used only when the durable consumer is created
                    {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": applied + 1}
                    if applied else {"deliver_policy": DeliverPolicy.ALL}
                )
                subscription = await js.pull_subscribe(
                    "settleflow.>",
                    durable=self.durable,
                    stream=STREAM,
                    config=ConsumerConfig(
                        ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait, max_ack_pending=1, **start,
                    ),
                )
                backoff = 0.5
                while not self._stopping.is_set():
                    try:
                        messages = await subscription.fetch(1, timeout=self.fetch_timeout)
                    except nats.errors.TimeoutError:
                        if once and await self._caught_up(subscription):
                            return 0
                        continue
                    for message in messages:
                        outcome = self._apply(message)
                        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
                        # Wait for the server to take the ack: with one event in flight, the next
                        # one is handed out only after it, and `--once` may exit right after.
                        await message.ack_sync(timeout=self.ack_timeout)
            except BROKER_TROUBLE as trouble:
                log.warning("lost NATS (%s); reconnecting in %.1f s", type(trouble).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 15.0)
            finally:
                if not nc.is_closed:
                    await nc.close()
        return 0


def _envelope_id(raw: bytes) -> str | None:
    """The `id` of a message that is JSON with one, however wrong the rest of it: for the record."""
    try:
        found = json.loads(raw).get("id")
    except (ValueError, AttributeError):
        return None
    return str(found)[:500] if found is not None else None


def setup_tracing() -> None:
    """OTLP export of the apply spans when OTEL_EXPORTER_OTLP_ENDPOINT is set (as in adapters/tracing.py,
    which this package may not import); nothing is recorded otherwise."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "settleflow-reporting"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


async def serve(once: bool) -> int:
    stream = stream_settings_or_exit("python -m reporting.consumer")
    setup_tracing()
    engine = store.open_store()
    consumer = ReportingConsumer(engine, stream)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, consumer.stop)
    log.info("reporting consumer ready: %s", store.reporting_url_from_env())
    try:
        return await consumer.run(once=once)
    finally:
        log.info("reporting consumer stopped: %s", consumer.outcomes)
        engine.dispose()
        if hasattr(provider := trace.get_tracer_provider(), "shutdown"):
            provider.shutdown()  # sends the spans still buffered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reporting.consumer", description="Feed the reporting read model.")
    parser.add_argument("--once", action="store_true", help="apply what is on the stream now, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(serve(args.once))
    except StreamMisconfigured as refused:
        print(f"python -m reporting.consumer: error: {refused}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
