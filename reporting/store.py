"""The reporting database: its own (REPORTING_DATABASE_URL, default var/reporting.db).

Tables:
- `inbox`: every event id applied (or deliberately ignored), written in the same
  transaction as the change it made -- a redelivered event finds its id and
  changes nothing.
- `aggregate_versions`: the newest aggregate version applied per (aggregate type,
  aggregate id); an event from an older version arrives out of order and is
  ignored as stale (the newer state already includes what it said).
- `positions`: the stream sequence of the last event each consumer applied, written in
  the same transaction (eventsourcing's `Tracking`). The read position is this database's,
  not the broker's: the consumer starts after it, so a deleted or restored database is
  rebuilt from the stream instead of resuming where the broker's durable consumer was.
- `missed`: stream sequences a consumer never got to apply — the stream had dropped them (its
  limits) before it read them. Stream sequences have no gaps, so a jump past the position is
  such a loss: recorded with the jump, logged, and shown by the report (what it does not count).
- `rejected`: messages on the stream that are not readable settleflow events (not a CloudEvents
  envelope, or data that does not fit its type's contract), recorded with the reason and skipped
  in the same transaction as the position's move: one bad message does not stop the consumer, and
  the report shows it (what it does not count).
- `refunds`, `payments`: the read model the report shows.

The schema belongs to this read model alone and is created on start; the model can
be rebuilt at any time by deleting the file: the consumer replays the stream from the start
(what the stream still holds: 30 days or 1 GiB, integration/stream.py).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Column, Engine, Integer, MetaData, Table, Text, insert, select, update
from sqlalchemy.engine import Connection

from adapters.db import make_engine
from adapters.tables import UtcDateTime
from integration import contracts as c
from integration.envelope import CloudEvent

DEFAULT_REPORTING_DATABASE_URL = "sqlite:///var/reporting.db"

log = logging.getLogger("settleflow.reporting")

metadata = MetaData()

inbox = Table(
    "inbox",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("type", Text, nullable=False),
    Column("outcome", Text, nullable=False),  # applied | stale | not_reported
    Column("received_at", UtcDateTime, nullable=False),
)

aggregate_versions = Table(
    "aggregate_versions",
    metadata,
    Column("aggregate_type", Text, primary_key=True),
    Column("aggregate_id", Text, primary_key=True),
    Column("version", Integer, nullable=False),
)

positions = Table(
    "positions",
    metadata,
    Column("consumer", Text, primary_key=True),  # the durable consumer's name
    Column("stream", Text, nullable=False),  # which stream: its creation time (a recreated one starts at 1 again)
    Column("stream_sequence", Integer, nullable=False),  # the last event applied (or found a duplicate)
)

rejected = Table(  # one row per message that is not a readable settleflow event (kept, shown, skipped)
    "rejected", metadata,
    Column("consumer", Text, primary_key=True), Column("stream", Text, primary_key=True),
    Column("stream_sequence", Integer, primary_key=True),
    Column("event_id", Text, nullable=True),  # the envelope's id, when the envelope could be read
    Column("subject", Text, nullable=False),  # the NATS subject it came on
    Column("reason", Text, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)

missed = Table(  # one row per jump: stream sequences first..last were gone before they were read
    "missed", metadata,
    Column("consumer", Text, primary_key=True), Column("stream", Text, primary_key=True),
    Column("first_sequence", Integer, primary_key=True), Column("last_sequence", Integer, nullable=False),
    Column("noticed_at", UtcDateTime, nullable=False),  # when the next event showed the jump
)

refunds = Table(
    "refunds",
    metadata,
    Column("refund_id", Text, primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("status", Text, nullable=True),  # approved | rejected | completed | failed | cancelled (None: billing not heard yet)
    Column("amount", Text, nullable=True),  # decimal string, summed as Decimal
    Column("currency", Text, nullable=True),
    Column("day", Text, nullable=True),  # UTC day of the latest status
    Column("settled_at", UtcDateTime, nullable=True),  # the gateway confirmed the money went back
)

payments = Table(
    "payments",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("status", Text, nullable=False),  # captured | declined | abandoned
    Column("amount", Text, nullable=True),
    Column("currency", Text, nullable=True),
    Column("day", Text, nullable=False),
)


def reporting_url_from_env() -> str:
    return os.environ.get("REPORTING_DATABASE_URL") or DEFAULT_REPORTING_DATABASE_URL


def open_store(url: str | None = None) -> Engine:
    engine = make_engine(url or reporting_url_from_env())
    metadata.create_all(engine)
    return engine


# -- applying events ------------------------------------------------------------------------------------------------
def _day(event: CloudEvent) -> str:
    return event.time.astimezone(UTC).date().isoformat()


def _refund(conn: Connection, event: CloudEvent, refund_id: str, order_id: str, **values: Any) -> None:
    exists = conn.execute(select(refunds.c.refund_id).where(refunds.c.refund_id == refund_id)).first()
    if exists:
        conn.execute(update(refunds).where(refunds.c.refund_id == refund_id).values(**values))
    else:
        conn.execute(insert(refunds).values(refund_id=refund_id, order_id=order_id, **values))


def _refund_status(status: str) -> Callable[[Connection, CloudEvent, Any], None]:
    def apply(conn: Connection, event: CloudEvent, data: Any) -> None:
        values: dict[str, Any] = {"status": status, "day": _day(event)}
        if hasattr(data, "amount"):
            values |= {"amount": data.amount, "currency": data.currency}
        _refund(conn, event, data.refund_id, data.order_id, **values)

    return apply


def _settled(conn: Connection, event: CloudEvent, data: c.GatewayRefundSettledV1) -> None:
    _refund(conn, event, data.refund_id, data.order_id, settled_at=event.time, amount=data.amount, currency=data.currency)


def _payment_status(status: str) -> Callable[[Connection, CloudEvent, Any], None]:
    def apply(conn: Connection, event: CloudEvent, data: Any) -> None:
        values = {"status": status, "day": _day(event)}
        if hasattr(data, "amount"):
            values |= {"amount": data.amount, "currency": data.currency}
        if conn.execute(select(payments.c.order_id).where(payments.c.order_id == data.order_id)).first():
            conn.execute(update(payments).where(payments.c.order_id == data.order_id).values(**values))
        else:
            conn.execute(insert(payments).values(order_id=data.order_id, **values))

    return apply


# CloudEvents type -> (contract, how it changes the read model). Other types are recorded and not reported.
APPLY: dict[str, tuple[type[c.Contract], Callable[[Connection, CloudEvent, Any], None]]] = {
    c.RefundApprovedV1.type_name(): (c.RefundApprovedV1, _refund_status("approved")),
    c.RefundRejectedV1.type_name(): (c.RefundRejectedV1, _refund_status("rejected")),
    c.RefundCompletedV1.type_name(): (c.RefundCompletedV1, _refund_status("completed")),
    c.RefundFailedV1.type_name(): (c.RefundFailedV1, _refund_status("failed")),
    c.RefundCancelledV1.type_name(): (c.RefundCancelledV1, _refund_status("cancelled")),
    c.GatewayRefundSettledV1.type_name(): (c.GatewayRefundSettledV1, _settled),
    c.PaymentCapturedV1.type_name(): (c.PaymentCapturedV1, _payment_status("captured")),
    c.PaymentDeclinedV1.type_name(): (c.PaymentDeclinedV1, _payment_status("declined")),
    c.PaymentAbandonedV1.type_name(): (c.PaymentAbandonedV1, _payment_status("abandoned")),
}


@dataclass(frozen=True)
class Position:
    stream: str | None  # None: nothing recorded (a new database, or one from before positions were kept)
    sequence: int  # the last event applied from that stream (0: none)


def position(engine: Engine, consumer: str) -> Position:
    """Where `consumer` is in this database: which stream, and the last event applied from it."""
    with engine.connect() as conn:
        row = conn.execute(
            select(positions.c.stream, positions.c.stream_sequence).where(positions.c.consumer == consumer)
        ).first()
        return Position(row.stream, row.stream_sequence) if row else Position(None, 0)


def has_applied_anything(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(inbox.c.event_id).limit(1)).first() is not None


def record_position(engine: Engine, consumer: str, stream: str, sequence: int) -> None:
    """Take a position as this database's (an existing database, the first time positions are kept)."""
    with engine.begin() as conn:
        _advance(conn, consumer, stream, sequence)


def record_gone(engine: Engine, consumer: str, stream: str, first: int, last: int, now: datetime | None = None) -> None:
    """Stream sequences first..last were dropped (the stream's limits) before `consumer` read them:
    recorded as missed at once — the report says so although no later event came yet — and the
    position moved past them."""
    with engine.begin() as conn:
        conn.execute(insert(missed).values(consumer=consumer, stream=stream, first_sequence=first,
                                           last_sequence=last, noticed_at=now or datetime.now(UTC)))  # fmt: skip
        _advance(conn, consumer, stream, last)


def _advance(conn: Connection, consumer: str, stream: str, sequence: int, noticed_at: datetime | None = None) -> None:
    """Move `consumer`'s position to `sequence`. With `noticed_at` (an event being applied), a jump
    past the next sequence is recorded as missed: the stream no longer held those events."""
    key = positions.c.consumer == consumer
    seen = conn.execute(select(positions.c.stream, positions.c.stream_sequence).where(key)).first()
    after = seen.stream_sequence if seen is not None and seen.stream == stream else 0
    if noticed_at is not None and sequence > after + 1:
        log.warning("%s: stream events %s to %s were gone before they were read: the report misses them",
                    consumer, after + 1, sequence - 1)
        conn.execute(insert(missed).values(consumer=consumer, stream=stream, first_sequence=after + 1,
                                           last_sequence=sequence - 1, noticed_at=noticed_at))  # fmt: skip
    if seen is None:
        conn.execute(insert(positions).values(consumer=consumer, stream=stream, stream_sequence=sequence))
    elif seen.stream != stream or sequence > seen.stream_sequence:
        conn.execute(update(positions).where(key).values(stream=stream, stream_sequence=sequence))


def apply(
    engine: Engine, event: CloudEvent, now: datetime | None = None, at: tuple[str, str, int] | None = None
) -> str:
    """Apply one event exactly once, in one transaction with its inbox row and, when `at` =
    (consumer, stream, stream sequence) is given, that consumer's position.
    Returns: applied | duplicate | stale | not_reported."""
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        if at is not None:
            _advance(conn, *at, noticed_at=now)
        if conn.execute(select(inbox.c.event_id).where(inbox.c.event_id == event.id)).first():
            return "duplicate"
        key = (aggregate_versions.c.aggregate_type == event.aggregatetype) & (
            aggregate_versions.c.aggregate_id == event.subject
        )
        seen = conn.execute(select(aggregate_versions.c.version).where(key)).scalar_one_or_none()
        if seen is not None and event.aggregateversion < seen:
            outcome = "stale"
        else:
            if seen is None:
                conn.execute(
                    insert(aggregate_versions).values(
                        aggregate_type=event.aggregatetype, aggregate_id=event.subject, version=event.aggregateversion
                    )
                )
            elif event.aggregateversion > seen:
                conn.execute(update(aggregate_versions).where(key).values(version=event.aggregateversion))
            handler = APPLY.get(event.type)
            if handler is None:
                outcome = "not_reported"
            else:
                contract, change = handler
                try:
                    data = contract.model_validate(event.data)
                except ValidationError as unreadable:
                    raise Unreadable(f"{event.type} {event.id}: its data does not fit {contract.__name__}: "
                                     f"{_first_error(unreadable)}") from unreadable  # fmt: skip
                change(conn, event, data)
                outcome = "applied"
        conn.execute(insert(inbox).values(event_id=event.id, type=event.type, outcome=outcome, received_at=now))
        return outcome


class Unreadable(Exception):
    """A message on the stream that is not a settleflow event this consumer can read: not a
    CloudEvents envelope, or a known type whose data does not fit its contract. Redelivering it
    cannot help; it is recorded (`reject`) and skipped, so that one bad message does not stop
    every later fact from reaching the report."""


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    return f"{'.'.join(map(str, first['loc'])) or 'the message'}: {first['msg']}"


def read_envelope(raw: bytes) -> CloudEvent:
    try:
        return CloudEvent.from_json(raw)
    except ValidationError as unreadable:
        raise Unreadable(f"not a settleflow event (CloudEvents JSON): {_first_error(unreadable)}") from unreadable


def reject(
    engine: Engine, consumer: str, stream: str, sequence: int, subject: str, reason: str,
    event_id: str | None = None, now: datetime | None = None,
) -> None:
    """Record an unreadable message and move `consumer`'s position past it, in one transaction:
    the report shows it (`events rejected`), and the consumer goes on with the next one."""
    now = now or datetime.now(UTC)
    key = (rejected.c.consumer == consumer) & (rejected.c.stream == stream) & (rejected.c.stream_sequence == sequence)
    with engine.begin() as conn:
        _advance(conn, consumer, stream, sequence, noticed_at=now)
        if conn.execute(select(rejected.c.stream_sequence).where(key)).first():
            return  # delivered again after it was recorded (the ack was lost)
        conn.execute(insert(rejected).values(
            consumer=consumer, stream=stream, stream_sequence=sequence, event_id=event_id, subject=subject,
            reason=reason[:2000], received_at=now,
        ))  # fmt: skip


# -- the report -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    day: str
    status: str
    count: int
    totals: dict[str, Decimal]  # currency -> amount


@dataclass(frozen=True)
class Report:
    refunds: list[Row]
    payments: list[Row]
    approved_not_settled: list[dict[str, Any]]
    events_applied: int
    events_missed: list[tuple[int, int]]  # stream sequences gone before they were read (first, last)
    events_rejected: list[tuple[int, str]] = field(default_factory=list)  # (stream sequence, reason): messages that are not readable events

    def totals(self, rows: list[Row], status: str) -> dict[str, Decimal]:
        out: dict[str, Decimal] = defaultdict(Decimal)
        for row in rows:
            if row.status == status:
                for currency, amount in row.totals.items():
                    out[currency] += amount
        return dict(out)


def _grouped(conn: Connection, table: Table) -> list[Row]:
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in conn.execute(select(table.c.day, table.c.status, table.c.amount, table.c.currency)):
        day, status = r.day or "-", r.status or "unknown"
        group = groups.setdefault((day, status), [0, defaultdict(Decimal)])
        group[0] += 1
        if r.amount is not None:
            group[1][r.currency] += Decimal(r.amount)
    return [Row(day, status, n, dict(t)) for (day, status), (n, t) in sorted(groups.items())]


def report(engine: Engine) -> Report:
    with engine.connect() as conn:
        pending = conn.execute(
            select(refunds.c.refund_id, refunds.c.order_id, refunds.c.amount, refunds.c.currency, refunds.c.day)
            .where(refunds.c.status == "approved", refunds.c.settled_at.is_(None))
            .order_by(refunds.c.day, refunds.c.refund_id)
        )
        applied = conn.execute(select(inbox.c.event_id).where(inbox.c.outcome == "applied")).all()
        return Report(
            refunds=_grouped(conn, refunds),
            payments=_grouped(conn, payments),
            approved_not_settled=[dict(r._mapping) for r in pending],
            events_applied=len(applied),
            events_missed=[
                (r.first_sequence, r.last_sequence)
                for r in conn.execute(select(missed.c.first_sequence, missed.c.last_sequence).order_by(missed.c.noticed_at))
            ],
            events_rejected=[
                (r.stream_sequence, r.reason)
                for r in conn.execute(select(rejected.c.stream_sequence, rejected.c.reason).order_by(rejected.c.received_at))
            ],
        )


def _money(totals: dict[str, Decimal]) -> str:
    return ", ".join(f"{amount} {currency}" for currency, amount in sorted(totals.items())) or "-"


def format_report(r: Report) -> str:
    lines = ["refunds per day and status:"]
    lines += [f"  {row.day}  {row.status:<10} {row.count:>5}  {_money(row.totals)}" for row in r.refunds] or ["  (none)"]
    lines += ["payments per day and status:"]
    lines += [f"  {row.day}  {row.status:<10} {row.count:>5}  {_money(row.totals)}" for row in r.payments] or ["  (none)"]
    lines += [
        f"totals: refunded {_money(r.totals(r.refunds, 'completed'))}; captured {_money(r.totals(r.payments, 'captured'))}",
        f"refunds approved but not settled: {len(r.approved_not_settled)}",
    ]
    lines += [f"  {p['refund_id']} (order {p['order_id']}) {p['amount']} {p['currency']} since {p['day']}"
              for p in r.approved_not_settled]  # fmt: skip
    lines.append(f"events applied: {r.events_applied}")
    if r.events_missed:
        count = sum(last - first + 1 for first, last in r.events_missed)
        ranges = ", ".join(f"{first}-{last}" if last > first else str(first) for first, last in r.events_missed)
        lines.append(f"events missed (gone from the stream before they were read; not in the figures above): "
                     f"{count} (stream sequences {ranges})")  # fmt: skip
    if r.events_rejected:
        lines.append(f"messages rejected (not readable settleflow events; not in the figures above): "
                     f"{len(r.events_rejected)}")  # fmt: skip
        lines += [f"  stream sequence {sequence}: {reason}" for sequence, reason in r.events_rejected]
    return "\n".join(lines)
