"""The relay: committed facts leave settleflow for NATS JetStream.

    python relay.py           # keep publishing until Ctrl-C / SIGTERM
    python relay.py --once    # publish everything pending now, then exit (tests, scripts)

One sentence: the relay reads the oldest unpublished outbox rows (an aggregate's rows
in version order), translates each through integration/translation.py into its
public contract(s) in a CloudEvents envelope, publishes each to stream SETTLEFLOW
with header `Nats-Msg-Id` = the event id, waits for JetStream's acknowledgement,
and only then marks the row published. An event that stays inside is marked with
nothing published; a row that cannot be published (an unknown type) is parked
with its reason and shown by `starter.py outbox` -- never skipped in silence. Its
aggregate's later rows wait behind it (order holds). Each park names the translation
table that could not publish it; a relay tries again, at start and every minute, rows
parked under another table (an older relay's, in a rolling deploy), never its own.

Guarantees: at-least-once (a crash between ack and mark publishes the row again;
the stream's duplicate window and every consumer's inbox drop the copy),
per-aggregate order (see adapters/outbox.py for several relays), nothing lost
while NATS is down (nothing is marked; the relay backs off and tries again).

The process concerns, in one table (environment variables):

| setting | variable | default |
|---|---|---|
| rows per batch | SETTLEFLOW_RELAY_BATCH | 500 |
| wait when nothing is pending | SETTLEFLOW_RELAY_POLL_SECONDS | 0.2 |
| wait for JetStream's ack | SETTLEFLOW_RELAY_ACK_TIMEOUT_SECONDS | 5 |
| back-off while NATS is down (first, longest) | SETTLEFLOW_RELAY_BACKOFF_SECONDS / _MAX_SECONDS | 0.5 / 30 |
| log the lag every | SETTLEFLOW_RELAY_LAG_LOG_SECONDS | 10 |
| warn when the oldest unpublished row is older than | SETTLEFLOW_RELAY_LAG_WARN_SECONDS | 30 |
| `--once` gives up (exit 1) after | SETTLEFLOW_RELAY_ONCE_TIMEOUT_SECONDS | 60 |
| try rows parked under another translation table again every | SETTLEFLOW_RELAY_RETRY_PARKED_SECONDS | 60 |
| /healthz, /readyz (database, NATS), /metrics on (0: off; not with --once) | SETTLEFLOW_OPS_HOST:SETTLEFLOW_RELAY_OPS_PORT | 127.0.0.1:9466 |

Each row is published in a `publish <event type>` span carrying the row's correlation and
command ids; its trace context goes to the consumer in the message's `traceparent` header.

The stream's own settings (NATS_URL, retention, duplicate window, limits) are in
integration/stream.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from opentelemetry.trace import SpanKind
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine

from adapters import db, tracing
from adapters.ops_server import OpsServer, database_check, nats_check
from adapters.outbox import Batch, OutboxReader, lag, parked_under, retry_parked
from integration.envelope import CONTENT_TYPE
from integration.stream import StreamSettings, connect, StreamMisconfigured, ensure_stream, stream_settings_or_exit
from integration.translation import TABLE_VERSION, Unpublishable, translate

log = logging.getLogger("settleflow.relay")


class RelaySettings(BaseSettings):
    """The table at the top of this module."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = Field("sqlite:///var/settleflow.db", validation_alias="DATABASE_URL")
    batch: int = Field(500, validation_alias="SETTLEFLOW_RELAY_BATCH", ge=1)
    poll_seconds: float = Field(0.2, validation_alias="SETTLEFLOW_RELAY_POLL_SECONDS", gt=0)
    ack_timeout_seconds: float = Field(5.0, validation_alias="SETTLEFLOW_RELAY_ACK_TIMEOUT_SECONDS", gt=0)
    backoff_seconds: float = Field(0.5, validation_alias="SETTLEFLOW_RELAY_BACKOFF_SECONDS", gt=0)
    backoff_max_seconds: float = Field(30.0, validation_alias="SETTLEFLOW_RELAY_BACKOFF_MAX_SECONDS", gt=0)
    lag_log_seconds: float = Field(10.0, validation_alias="SETTLEFLOW_RELAY_LAG_LOG_SECONDS", gt=0)
    lag_warn_seconds: float = Field(30.0, validation_alias="SETTLEFLOW_RELAY_LAG_WARN_SECONDS", gt=0)
    once_timeout_seconds: float = Field(60.0, validation_alias="SETTLEFLOW_RELAY_ONCE_TIMEOUT_SECONDS", gt=0)
    retry_parked_seconds: float = Field(60.0, validation_alias="SETTLEFLOW_RELAY_RETRY_PARKED_SECONDS", gt=0)
    ops_host: str = Field("127.0.0.1", validation_alias="SETTLEFLOW_OPS_HOST")
    ops_port: int = Field(9466, validation_alias="SETTLEFLOW_RELAY_OPS_PORT", ge=0, le=65535)  # 0: not served
    ready_timeout_seconds: float = Field(2.0, validation_alias="SETTLEFLOW_READY_TIMEOUT_SECONDS", gt=0)


# What "NATS is not there right now" looks like; anything else is a bug and stops the relay.
BROKER_TROUBLE = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError, OSError)


@dataclass
class Counts:
    published: int = 0  # messages acknowledged by JetStream
    duplicates: int = 0  # of which JetStream had already seen the id
    internal: int = 0  # rows marked without publishing (not published by the translation table)
    parked: int = 0


class Relay:
    def __init__(self, engine: Engine, settings: RelaySettings, stream: StreamSettings) -> None:
        self.settings = settings
        self.stream = stream
        self.outbox = OutboxReader(engine, clock=lambda: datetime.now(UTC))
        self.engine = engine
        self.counts = Counts()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._stopping = asyncio.Event()
        self._last_lag_log = 0.0
        self._last_parked_retry = 0.0

    # -- connection -------------------------------------------------------------------
    async def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            nc = await connect(self.stream.nats_url, name="settleflow-relay")
            try:
                js = nc.jetstream(timeout=self.settings.ack_timeout_seconds)
                await ensure_stream(js, self.stream, owner=True)  # the stream's limits are the relay's
            except BaseException:
                await nc.close()
                raise
            self._nc, self._js = nc, js
        return self._js

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    def stop(self) -> None:
        self._stopping.set()

    # -- one batch ------------------------------------------------------------------------
    async def publish_batch(self) -> int:
        """Publish one batch; the number of rows handled (0: nothing pending).
        Raises one of BROKER_TROUBLE when NATS did not acknowledge; what was acknowledged is marked."""
        js = await self._jetstream()
        with self.outbox.batch(self.settings.batch) as batch:
            held: set[tuple[str, str]] = set()  # aggregates with a row parked in this batch
            for row in batch.rows:
                aggregate = (row["aggregate_type"], row["aggregate_id"])
                if aggregate in held:
                    continue  # waits behind its parked row (adapters/outbox.py HELD)
                await self._publish_row(js, batch, row)
                if row["event_id"] in batch.parked:
                    held.add(aggregate)
            return len(batch.rows)

    async def _publish_row(self, js: JetStreamContext, batch: Batch, row: dict) -> None:
        with tracing.tracer().start_as_current_span(
            f"publish {row['event_type']}", kind=SpanKind.PRODUCER,
            context=tracing.continuing(row.get("trace_parent")),  # the trace of the step that recorded it
            attributes={tracing.CORRELATION_ID: row["correlation_id"], tracing.COMMAND_ID: row["causation_id"],
                        "messaging.system": "nats", "messaging.message.id": row["event_id"]},
        ):  # fmt: skip
            await self._publish_traced(js, batch, row)

    async def _publish_traced(self, js: JetStreamContext, batch: Batch, row: dict) -> None:
        try:
            outgoing = translate(row)
        except Unpublishable as reason:
            log.error("parked outbox row %s (%s): %s", row["event_id"], row["event_type"], reason)
            batch.park(row["event_id"], parked_under(TABLE_VERSION, str(reason)))
            self.counts.parked += 1
            return
        for message in outgoing:
            ack = await js.publish(
                message.subject,
                message.envelope.to_json(),
                timeout=self.settings.ack_timeout_seconds,
                # The trace context (W3C traceparent) rides along: the consumer's apply continues this trace.
                headers=tracing.inject({"Nats-Msg-Id": message.message_id, "Content-Type": CONTENT_TYPE}),
            )
            self.counts.published += 1
            self.counts.duplicates += int(bool(ack.duplicate))
        if not outgoing:
            self.counts.internal += 1
        batch.mark_published(row["event_id"], " ".join(m.envelope.type for m in outgoing) or None)

    # -- the loop ---------------------------------------------------------------------------
    async def run(self, once: bool = False) -> int:
        """Publish until stopped (or, with once, until nothing is pending). Exit code.
        Rows parked under another translation table (an older relay's) are tried again, at
        start and every `retry_parked_seconds`: this relay may know their type."""
        self._retry_parked()
        backoff = self.settings.backoff_seconds
        deadline = time.monotonic() + self.settings.once_timeout_seconds
        while not self._stopping.is_set():
            try:
                handled = await self.publish_batch()
                backoff = self.settings.backoff_seconds
            except BROKER_TROUBLE as trouble:
                log.warning("NATS at %s did not take the batch (%s); retrying in %.1f s",
                            self.stream.nats_url, type(trouble).__name__, backoff)
                await self.close()  # a fresh connection next time; the marks written stay
                if once and time.monotonic() > deadline:
                    log.error("gave up after %.0f s: NATS unreachable, rows stay unpublished", self.settings.once_timeout_seconds)
                    return 1
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.backoff_max_seconds)
                continue
            self._log_lag(force=once and handled == 0)
            if time.monotonic() - self._last_parked_retry > self.settings.retry_parked_seconds:
                self._retry_parked()  # an older relay may have parked a row since (a rolling deploy)
            if handled == 0:
                if once:
                    return 0
                await self._sleep(self.settings.poll_seconds)
        return 0

    def _retry_parked(self) -> None:
        self._last_parked_retry = time.monotonic()
        if retried := retry_parked(self.engine, TABLE_VERSION):
            log.info("trying %d outbox row(s) parked under another translation table again", retried)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    def _log_lag(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_lag_log < self.settings.lag_log_seconds:
            return
        self._last_lag_log = now
        state = lag(self.engine)
        age = (datetime.now(UTC) - state.oldest_unpublished).total_seconds() if state.oldest_unpublished else 0.0
        level = logging.WARNING if age > self.settings.lag_warn_seconds else logging.INFO
        log.log(level, "lag %.1f s: %d unpublished, %d parked; published %d (duplicates %d), internal %d",
                age, state.unpublished, state.parked, self.counts.published, self.counts.duplicates,
                self.counts.internal)  # fmt: skip


async def serve(once: bool) -> int:
    settings, stream = RelaySettings(), stream_settings_or_exit("relay.py")
    tracing.setup("settleflow-relay")
    engine = tracing.trace_engine(db.make_engine(settings.database_url))
    db.upgrade(settings.database_url)
    relay = Relay(engine, settings, stream)
    ops = OpsServer(
        settings.ops_host, settings.ops_port, metrics_engine=engine, timeout=settings.ready_timeout_seconds,
        checks={"database": database_check(engine), "broker": nats_check(stream.nats_url, settings.ready_timeout_seconds)},
    )  # fmt: skip
    if settings.ops_port and not once:
        await ops.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, relay.stop)
    log.info("relay ready: %s -> %s", settings.database_url, stream.nats_url)
    try:
        return await relay.run(once=once)
    finally:
        await ops.stop()
        await relay.close()
        engine.dispose()
        tracing.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relay.py", description="Publish the outbox to NATS JetStream.")
    parser.add_argument("--once", action="store_true", help="publish what is pending now, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(serve(args.once))
    except StreamMisconfigured as refused:
        print(f"relay.py: error: {refused}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
