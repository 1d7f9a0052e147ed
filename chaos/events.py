"""The event pipeline under faults, for `make chaos`: the relay is SIGKILLed several times
and the NATS server restarted mid-run; at the end three checks:

1. every outbox row published exactly once to the stream: the message ids on stream
   SETTLEFLOW are exactly the ids the published rows went out as, each once; nothing
   left unpublished, nothing parked;
2. the reporting totals (fed only from the stream) equal billing's ledger to the cent:
   captured = the orders' paid amounts, refunded (completed) = the orders' refunded amounts;
3. no event applied twice: one reporting inbox row per message id on the stream.

chaos/run.py starts it beside the workers (`EventFaults.start`), lets it inject its faults
in the same window as the worker kills, and adds its checks to the table.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from adapters import db
from adapters.outbox import lag
from adapters.views import order_view
from devstack import Stack
from integration.stream import STREAM, connect
from integration.translation import message_id
from reporting import store
from reporting.consumer import ReportingConsumer


def log(line: str) -> None:
    print(f"[chaos/events] {line}", flush=True)


class EventFaults:
    def __init__(self, stack: Stack, rng: random.Random, relay_kills: int) -> None:
        self.stack = stack
        self.rng = rng
        self.relay_kills = relay_kills
        self.nats: Any = None
        self.relay: Any = None
        self.reporting: Any = None
        self.kills = 0
        self.nats_restarts = 0
        self.nats_signal = ""

    async def start(self) -> None:
        self.nats = await asyncio.to_thread(self.stack.start_nats)
        self.relay = await asyncio.to_thread(self.stack.start_relay)
        self.reporting = await asyncio.to_thread(self.stack.start_reporting)

    async def kill_relay(self) -> None:
        log(f"fault: SIGKILL relay pid {self.relay.pid}")
        await asyncio.to_thread(self.stack.kill_process, self.relay)
        self.kills += 1
        await asyncio.sleep(self.rng.uniform(0.5, 2.0))  # the outbox grows meanwhile
        self.relay = await asyncio.to_thread(self.stack.start_relay)

    async def restart_nats(self) -> None:
        hard = self.rng.random() < 0.5
        self.nats_signal = "SIGKILL" if hard else "SIGTERM"
        log(f"fault: {self.nats_signal} the NATS server")
        await asyncio.to_thread(self.stack.kill_process if hard else self.stack.stop_process, self.nats)
        await asyncio.sleep(self.rng.uniform(1.0, 3.0))
        self.nats = await asyncio.to_thread(self.stack.start_nats)
        self.nats_restarts += 1
        log("NATS back on the same port and store")

    async def inject(self, started: float, window: tuple[float, float]) -> None:
        low, high = window
        plan = [("relay", self.rng.uniform(low, high)) for _ in range(self.relay_kills)]
        plan.append(("nats", self.rng.uniform(low + (high - low) * 0.3, low + (high - low) * 0.7)))
        for kind, at in sorted(plan, key=lambda p: p[1]):
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            await (self.kill_relay() if kind == "relay" else self.restart_nats())

    async def drain(self, timeout: float = 120.0) -> bool:
        """Wait until the outbox is published and reporting has taken every message."""
        deadline = time.monotonic() + timeout
        engine = db.make_engine(self.stack.database_url)
        try:
            while time.monotonic() < deadline:
                try:
                    if lag(engine).unpublished == 0 and await self._consumer_idle():
                        return True
                except Exception:  # noqa: BLE001 - NATS or the consumer still coming back
                    pass
                await asyncio.sleep(0.5)
            return False
        finally:
            engine.dispose()

    async def _consumer_idle(self) -> bool:
        nc = await connect(self.stack.nats_url, name="chaos")
        try:
            info = await nc.jetstream().consumer_info(STREAM, ReportingConsumer.default_durable())
            return info.num_pending == 0 and info.num_ack_pending == 0
        finally:
            await nc.close()

    async def stream_ids(self) -> Counter:
        nc = await connect(self.stack.nats_url, name="chaos")
        try:
            js = nc.jetstream()
            info = await js.stream_info(STREAM)
            ids: Counter = Counter()
            for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
                message = await js.get_msg(STREAM, seq)
                ids[(message.headers or {}).get("Nats-Msg-Id", f"<no id, seq {seq}>")] += 1
            return ids
        finally:
            await nc.close()

    async def checks(self, order_ids: list[str]) -> list[tuple[str, int, list[str]]]:
        drained = await self.drain()
        checks: list[tuple[str, int, list[str]]] = []
        engine = db.make_engine(self.stack.database_url)
        try:
            from adapters.tables import outbox

            with engine.connect() as connection:
                rows = [dict(r._mapping) for r in connection.execute(select(outbox))]
        finally:
            engine.dispose()
        on_stream = await self.stream_ids()

        # 1. every outbox row published exactly once to the stream
        bad = [] if drained else ["the relay and reporting did not catch up within 120 s"]
        expected: set[str] = set()
        for row in rows:
            if row["parked_at"] is not None:
                bad.append(f"{row['event_id']} {row['event_type']} parked: {row['park_reason']}")
            elif row["published_at"] is None:
                bad.append(f"{row['event_id']} {row['event_type']} never published")
            for kind in (row["published_as"] or "").split():
                expected.add(message_id(row["event_id"], int(kind.rsplit(".v", 1)[1])))
        bad += [f"{i} on the stream {n} times" for i, n in on_stream.items() if n > 1]
        bad += [f"{i} published but not on the stream" for i in sorted(expected - set(on_stream))]
        bad += [f"{i} on the stream but no outbox row says so" for i in sorted(set(on_stream) - expected)]
        checks.append(("stream: every outbox row published exactly once, none parked", len(rows), bad))

        # 2. the reporting totals equal billing's ledger to the cent
        billing = {"captured": Decimal("0.00"), "refunded": Decimal("0.00")}
        for order_id in order_ids:
            view = order_view(self.stack.database_url, order_id)
            if view is not None:
                billing["captured"] += _amount(view.paid)
                billing["refunded"] += _amount(view.refunded)
        reporting_engine = store.open_store(self.stack.reporting_database_url)
        try:
            report = store.report(reporting_engine)
            with reporting_engine.connect() as connection:
                inbox = Counter(dict(connection.execute(
                    select(store.inbox.c.outcome, func.count()).group_by(store.inbox.c.outcome)).all()))  # fmt: skip
                inbox_ids = connection.execute(select(store.inbox.c.event_id)).scalars().all()
        finally:
            reporting_engine.dispose()
        reported = {
            "captured": report.totals(report.payments, "captured").get("EUR", Decimal("0.00")),
            "refunded": report.totals(report.refunds, "completed").get("EUR", Decimal("0.00")),
        }
        bad = [f"{what}: reporting {reported[what]} EUR, billing {billing[what]} EUR"
               for what in billing if reported[what] != billing[what]]  # fmt: skip
        checks.append(("reporting totals == billing's ledger (captured, refunded)", len(order_ids), bad))

        # 3. no event applied twice
        bad = [f"{i} in the inbox {n} times" for i, n in Counter(inbox_ids).items() if n > 1]
        bad += [f"{i} on the stream, never reached reporting" for i in sorted(set(on_stream) - set(inbox_ids))]
        checks.append(("reporting: each event on the stream applied once (inbox)", len(on_stream), bad))
        self.summary = {"stream": sum(on_stream.values()), "outbox": len(rows), "reporting": dict(inbox),
                        "report": store.format_report(report)}  # fmt: skip
        return checks


def _amount(text: str) -> Decimal:
    text = (text or "").strip()
    return Decimal(text.split()[0]) if text and text != "—" else Decimal("0.00")
