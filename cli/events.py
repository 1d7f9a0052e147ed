"""starter.py's verbs about events leaving settleflow (registered from starter.build_parser):

    python starter.py events --order o-1      # what left for an order, as a chain
    python starter.py outbox                  # the relay's lag: unpublished rows, oldest age, parked rows
    python starter.py report [--wait 30]      # the reporting read model (fed only from the stream)
    python starter.py map [--check]           # write docs/ownership.md from the code (or check it)

Each verb reads; none starts a workflow or sends a command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from adapters import db
from adapters.outbox import lag, parked_rows, release_parked
from adapters.settings import Settings
from adapters.tables import outbox, processed_commands


def add_verbs(verbs: Any, common: argparse.ArgumentParser, identifier: Any) -> None:
    p = verbs.add_parser("events", parents=[common], help="what left settleflow for an order, as a chain")
    p.add_argument("--order", required=True, type=identifier, help="order id")
    p.set_defaults(run=events)

    p = verbs.add_parser("outbox", parents=[common], help="unpublished events, the relay's lag, parked rows")
    p.add_argument("--retry-parked", action="store_true",
                   help="put parked rows back in line for the relay (all, or those named by --event)")
    p.add_argument("--event", action="append", type=identifier, metavar="EVENT_ID",
                   help="with --retry-parked: only this parked row (may be given more than once)")
    p.set_defaults(run=outbox_status)

    p = verbs.add_parser("report", parents=[common], help="refunds and payments per day and status (reporting)")
    p.add_argument("--wait", type=_seconds, default=0.0, metavar="SECONDS",
                   help="first wait (up to SECONDS) until the relay and the reporting consumer have caught up")
    p.set_defaults(run=report)

    p = verbs.add_parser("map", parents=[common], help="write docs/ownership.md from the code")
    p.add_argument("--check", action="store_true", help="only check that the committed map is current")
    p.set_defaults(run=ownership_map)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError("seconds must be between 0 and 3600")
    return value


def _print(args: argparse.Namespace, text: str, data: Any) -> None:
    print(json.dumps(data, default=str) if args.json else text, flush=True)


# -- events --order -------------------------------------------------------------------------------------------------
def order_chain(engine: Any, order_id: str) -> list[dict[str, Any]]:
    """Every outbox row of the business transactions that touched the order, in recorded order."""
    with engine.connect() as conn:
        correlations = conn.execute(
            select(outbox.c.correlation_id).where(outbox.c.aggregate_id == order_id).distinct()
        ).scalars().all()
        if not correlations:
            return []
        rows = conn.execute(
            select(outbox)
            .where(outbox.c.correlation_id.in_(correlations))
            .order_by(outbox.c.recorded_at, outbox.c.aggregate_type, outbox.c.aggregate_id,
                      outbox.c.aggregate_version, outbox.c.position)
        )  # fmt: skip
        chain = [dict(r._mapping) for r in rows]
        commands = {
            r.command_id: r
            for r in conn.execute(
                select(processed_commands.c.command_id, processed_commands.c.command_type,
                       processed_commands.c.causation_id)
                .where(processed_commands.c.command_id.in_({row["causation_id"] for row in chain}))
            )
        }  # fmt: skip
    for row in chain:
        command = commands.get(row["causation_id"])
        row["command_type"] = command.command_type if command else None
        row["command_caused_by"] = command.causation_id if command else None
    return chain


def _went_out(row: dict[str, Any]) -> str:
    if row["published_at"] is None:
        return f"PARKED: {row['park_reason']}" if row["parked_at"] is not None else "not yet published"
    return row["published_as"] or "internal (not published)"


def events(args: argparse.Namespace, settings: Settings) -> int:
    engine = db.make_engine(settings.database_url)
    try:
        rows = order_chain(engine, args.order)
    finally:
        engine.dispose()
    if not rows:
        print(f"starter.py: error: no events for order {args.order!r}", file=sys.stderr)
        return 2
    lines = [f"events for order {args.order} (correlation {', '.join(sorted({r['correlation_id'] for r in rows}))}):"]
    previous_cause = None
    for row in rows:
        if row["causation_id"] != previous_cause:
            cause = row["command_caused_by"] or "-"
            lines.append(f"  {row['command_type'] or 'command'} {row['causation_id']}  (caused by {cause})")
            previous_cause = row["causation_id"]
        lines.append(
            f"    {row['event_type']:<26} {row['event_id']}  {row['aggregate_type']}/{row['aggregate_id']}"
            f" v{row['aggregate_version']}  -> {_went_out(row)}"
        )
    data = [
        {k: row[k] for k in ("event_id", "event_type", "aggregate_type", "aggregate_id", "aggregate_version",
                             "correlation_id", "causation_id", "command_type", "command_caused_by",
                             "published_at", "published_as", "park_reason")}
        for row in rows
    ]  # fmt: skip
    _print(args, "\n".join(lines), data)
    return 0


# -- outbox -----------------------------------------------------------------------------------------------------------
def outbox_status(args: argparse.Namespace, settings: Settings) -> int:
    if args.event and not args.retry_parked:
        print("starter.py: error: --event names a parked row to retry: give --retry-parked too", file=sys.stderr)
        return 2
    engine = db.make_engine(settings.database_url)
    try:
        if args.retry_parked:
            released = release_parked(engine, args.event)
            print(f"put back in line for the relay: {released} parked row(s)"
                  + ("" if args.event is None or released == len(set(args.event)) else
                     " (the others named are not parked, or already published)"), file=sys.stderr)  # fmt: skip
        state, parked = lag(engine), parked_rows(engine)
    finally:
        engine.dispose()
    age = (datetime.now(UTC) - state.oldest_unpublished).total_seconds() if state.oldest_unpublished else 0.0
    lines = [f"unpublished: {state.unpublished}", f"oldest unpublished: {age:.1f} s ago" if state.unpublished
             else "oldest unpublished: -", f"parked: {state.parked}"]  # fmt: skip
    lines += [f"  {p['event_id']} {p['event_type']} ({p['aggregate_id']}): {p['park_reason']}" for p in parked]
    _print(args, "\n".join(lines), {"unpublished": state.unpublished, "lag_seconds": age, "parked": parked})
    return 0


# -- report -------------------------------------------------------------------------------------------------------------
async def _caught_up(settings: Settings) -> bool:
    """Nothing left in the outbox and nothing pending for the reporting consumer."""
    from integration.stream import STREAM, connect, stream_settings_or_exit
    from reporting.consumer import ReportingConsumer

    engine = db.make_engine(settings.database_url)
    try:
        if lag(engine).unpublished:
            return False
    finally:
        engine.dispose()
    stream = stream_settings_or_exit("starter.py")
    nc = await connect(stream.nats_url, name="settleflow-starter")
    try:
        info = await nc.jetstream().consumer_info(STREAM, ReportingConsumer.default_durable())
        return info.num_pending == 0 and info.num_ack_pending == 0
    finally:
        await nc.close()


def report(args: argparse.Namespace, settings: Settings) -> int:
    from reporting import store

    deadline = time.monotonic() + args.wait
    while args.wait:
        try:
            if asyncio.run(_caught_up(settings)):
                break
        except Exception:  # noqa: BLE001 - not up yet: the relay or the consumer is still starting
            pass
        if time.monotonic() > deadline:
            print(f"starter.py: reporting had not caught up after {args.wait:.0f} s; showing what it has",
                  file=sys.stderr)  # fmt: skip
            break
        time.sleep(0.5)
    engine = store.open_store()
    try:
        result = store.report(engine)
    finally:
        engine.dispose()
    data = {
        "refunds": [vars(r) for r in result.refunds],
        "payments": [vars(r) for r in result.payments],
        "approved_not_settled": result.approved_not_settled,
        "events_applied": result.events_applied,
    }
    _print(args, store.format_report(result), data)
    return 0


# -- map ----------------------------------------------------------------------------------------------------------------
def ownership_map(args: argparse.Namespace, settings: Settings) -> int:
    from cli import ownership

    if args.check:
        if ownership.committed() != ownership.generate():
            print("starter.py: error: docs/ownership.md is out of date: run `python starter.py map`", file=sys.stderr)
            return 1
        _print(args, "docs/ownership.md is current", {"current": True})
        return 0
    path = ownership.write()
    _print(args, f"wrote {path}", {"written": str(path)})
    return 0
