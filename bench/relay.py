"""Relay figures for `make bench`: outbox lag while refunds run, and throughput on a backlog.

- Lag: for every outbox row recorded during a measured refund run, `published_at -
  recorded_at` (the relay running beside the workers, polling every 0.2 s); p50 / p99.
  The relay keeps up when p99 stays under 2 s.
- Throughput: afterwards the relay is stopped, the stream deleted, and every outbox row
  marked unpublished; a relay (in this process, connected beforehand) then publishes the
  whole backlog with `--once`; rows/s and messages/s over that time.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update

from adapters import db
from adapters.outbox import lag
from adapters.tables import outbox
from devstack import Stack
from integration.stream import STREAM, connect


@dataclass
class LagFigures:
    rows: int
    p50: float
    p99: float
    worst: float


@dataclass
class Throughput:
    rows: int
    messages: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


class RelayBench:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.relay = None

    def start(self) -> None:
        self.stack.start_nats()
        self.relay = self.stack.start_relay()

    def lag_since(self, since: datetime) -> LagFigures:
        engine = db.make_engine(self.stack.database_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    select(outbox.c.recorded_at, outbox.c.published_at).where(outbox.c.recorded_at >= since)
                ).all()
        finally:
            engine.dispose()
        lags = sorted((p - r).total_seconds() for r, p in rows if p is not None)
        if not lags:
            return LagFigures(len(rows), 0.0, 0.0, 0.0)
        q = statistics.quantiles(lags, n=100, method="inclusive") if len(lags) > 1 else [lags[0]] * 99
        return LagFigures(len(rows), q[49], q[98], lags[-1])

    async def wait_published(self, timeout: float = 60.0) -> None:
        engine = db.make_engine(self.stack.database_url)
        try:
            deadline = time.monotonic() + timeout
            while lag(engine).unpublished and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            engine.dispose()

    async def throughput(self) -> Throughput:
        from relay import Relay, RelaySettings
        from integration.stream import StreamSettings

        self.stack.stop_process(self.relay)
        nc = await connect(self.stack.nats_url, name="bench")
        try:
            await nc.jetstream().delete_stream(STREAM)  # forget the message ids: every row is new again
        finally:
            await nc.close()
        engine = db.make_engine(self.stack.database_url)
        relay = Relay(engine, RelaySettings(), StreamSettings(NATS_URL=self.stack.nats_url))
        try:
            with engine.begin() as connection:
                connection.execute(update(outbox).values(published_at=None, published_as=None))
                rows = connection.execute(select(func.count()).select_from(outbox)).scalar_one()
            await relay._jetstream()  # connected and the stream created: start-up is not counted
            started = time.monotonic()
            await relay.run(once=True)
            seconds = time.monotonic() - started
        finally:
            await relay.close()
            engine.dispose()
        return Throughput(rows, relay.counts.published, seconds)
