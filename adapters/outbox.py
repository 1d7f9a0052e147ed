"""Reading the outbox for the relay: claim unpublished rows in per-aggregate order, mark them.

Why `published_at` on each row rather than one saved position (the notification-log
way of eventsourcing's `Tracking`): outbox rows get no gap-free global position here
-- transactions of different owners commit in any order, and a reader that saved
"up to position N" could step over a row committed late with a lower number. Per-row
marks have no such gap, let several relays share the work, and say per row what went
out. Ordering is only promised per aggregate, where versions are checked on save, so
version N+1 can never be committed before version N.

Several relays on PostgreSQL: each batch runs in one transaction that takes a
transaction-level advisory lock per aggregate (`pg_try_advisory_xact_lock`); an
aggregate locked by another relay is skipped until that relay committed its marks,
so an aggregate's events are never published by two relays at once, nor out of order.
On SQLite (one writer at a time) a batch reads, publishes, then marks in a short
transaction; a second relay may publish a row again, which the broker's duplicate
window and every consumer's inbox drop -- each relay still publishes an aggregate's
rows in version order, so the stream's order holds.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, Connection, Engine, Select, Text, and_, bindparam, func, or_, select, text, tuple_, update

from adapters.tables import outbox

PENDING = and_(outbox.c.published_at.is_(None), outbox.c.parked_at.is_(None))
# Parked and not on the stream. A park never lands on a published row (`_PARK`), but on SQLite
# two relays may claim one row at once: an older relay publishes it while a newer one (whose
# table cannot read it) parks it before the publish is marked. That row went out: it holds
# nothing, and `retry_parked` clears its park.
PARKED = and_(outbox.c.parked_at.is_not(None), outbox.c.published_at.is_(None))
# An aggregate with a parked row is held: its later rows wait behind it, since publishing
# version N+1 without N would break the per-aggregate order consumers rely on (a reader that
# has seen N+1 drops N as stale). They count as unpublished, so the lag shows them. The parked
# aggregates are read once per query (usually none), from a partial index of the parked rows
# (migration 0005): the claim costs what it cost before rows were held.
_PARKED = outbox.alias("parked")
HELD = tuple_(outbox.c.aggregate_type, outbox.c.aggregate_id).in_(
    select(_PARKED.c.aggregate_type, _PARKED.c.aggregate_id).where(
        _PARKED.c.parked_at.is_not(None), _PARKED.c.published_at.is_(None)
    )
)
READY = and_(PENDING, ~HELD)


def _rows_in_order(pending: Select[Any]) -> Select[Any]:
    """`pending` (outbox rows plus `first`, their aggregate's oldest pending row's recorded_at),
    oldest aggregate first, each aggregate's strictly by (version, position), up to :limit."""
    rows = pending.subquery()
    return (
        select(*(rows.c[c.name] for c in outbox.c))
        .order_by(rows.c.first, rows.c.aggregate_type, rows.c.aggregate_id, rows.c.aggregate_version, rows.c.position)
        .limit(bindparam("limit"))
    )


_FIRST = func.min(outbox.c.recorded_at).over(partition_by=(outbox.c.aggregate_type, outbox.c.aggregate_id))
_OLDEST_ROWS = _rows_in_order(select(outbox, _FIRST.label("first")).where(READY))
_CLAIMED = func.unnest(
    bindparam("claimed_types", type_=ARRAY(Text)), bindparam("claimed_ids", type_=ARRAY(Text))
).table_valued("aggregate_type", "aggregate_id").render_derived(name="claimed")
_CLAIMED_ROWS = _rows_in_order(  # PostgreSQL's only: SQLite has no arrays, and claims nothing
    select(outbox, _FIRST.label("first")).where(READY).join(_CLAIMED, and_(
        _CLAIMED.c.aggregate_type == outbox.c.aggregate_type, _CLAIMED.c.aggregate_id == outbox.c.aggregate_id))
)


# Built once and run once per batch with every row's values (executemany): a statement per
# row cost the relay a statement build and, on PostgreSQL, a round trip per published row.
_MARK_PUBLISHED = (
    update(outbox)
    .where(outbox.c.event_id == bindparam("marked_event_id"))
    .values(published_at=bindparam("marked_at"), published_as=bindparam("marked_as"))
)
_PARK = (
    update(outbox)
    .where(outbox.c.event_id == bindparam("parked_event_id"), outbox.c.published_at.is_(None))
    .values(parked_at=bindparam("parked_on"), park_reason=bindparam("parked_reason"))
)


@dataclass
class Batch:
    """Rows claimed for publishing, and what became of each (written when the batch ends)."""

    rows: list[dict[str, Any]]
    published: dict[str, str | None] = field(default_factory=dict)  # event id -> types it went out as (None: internal)
    parked: dict[str, str] = field(default_factory=dict)  # event id -> reason

    def mark_published(self, event_id: str, published_as: str | None) -> None:
        self.published[event_id] = published_as

    def park(self, event_id: str, reason: str) -> None:
        self.parked[event_id] = reason


class OutboxReader:
    def __init__(self, engine: Engine, clock: Any) -> None:
        self.engine = engine
        self.clock = clock
        self.postgres = engine.dialect.name == "postgresql"

    @contextmanager
    def batch(self, limit: int) -> Iterator[Batch]:
        """Claim up to `limit` unpublished rows; on leaving, write what was done with them --
        also when publishing stopped half-way (what was acknowledged stays acknowledged)."""
        if self.postgres:
            stopped: BaseException | None = None
            # READ COMMITTED whatever the server's default: the statement after taking the locks
            # must see what another relay committed before we got them (under REPEATABLE READ it
            # would reuse the first statement's snapshot and publish those rows again).
            with self.engine.connect().execution_options(isolation_level="READ COMMITTED") as connection, \
                    connection.begin():
                claimed = Batch(self._claim_locked(connection, limit))
                try:
                    yield claimed
                except BaseException as error:  # the broker went away half-way, or the relay is stopping
                    stopped = error  # leave the block normally, so that the marks commit with the locks
                self._write(connection, claimed)
            if stopped is not None:
                raise stopped
        else:
            with self.engine.connect() as connection, connection.begin():
                claimed = Batch(self._pending_rows(connection, limit))
            try:
                yield claimed
            finally:
                if claimed.published or claimed.parked:
                    with self.engine.connect() as connection, connection.begin():
                        self._write(connection, claimed)

    def _pending_rows(self, connection: Connection, limit: int, aggregates: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        """Up to `limit` READY rows, oldest aggregate first (by its oldest pending row), each
        aggregate's strictly by (version, position); only `aggregates`' when given.

        One pass over the pending rows: a window gives each row its aggregate's oldest, where a
        self-join on a grouped subquery made PostgreSQL group the whole backlog again for every
        pending row when its statistics still said "nothing pending" (the usual state of an
        outbox: a backlog after a broker outage grows faster than autovacuum analyzes). A
        backlog of 29,000 rows drained at 140 rows/s then, each batch's read taking seconds.
        The claimed aggregates (PostgreSQL) join as a table of two arrays, not an OR of 500 pairs
        tested against every pending row; one statement text whatever their number, so its
        compiled form is reused."""
        if aggregates is not None and not aggregates:
            return []
        query = _CLAIMED_ROWS if aggregates is not None else _OLDEST_ROWS
        parameters: dict[str, Any] = {"limit": limit}
        if aggregates is not None:
            parameters |= {"claimed_types": [a[0] for a in aggregates], "claimed_ids": [a[1] for a in aggregates]}
        return interleave([dict(row._mapping) for row in connection.execute(query, parameters)])

    def _claim_locked(self, connection: Connection, limit: int) -> list[dict[str, Any]]:
        # The held aggregates (a parked row each; usually none) are read first, from the parked
        # rows' partial index, and the backlog is checked against that short list: asked per
        # pending row, PostgreSQL answered from the index of unpublished rows whenever its
        # statistics said few were pending, reading the whole backlog again for each of them
        # (43 s a batch for 13,000 pending).
        heads = connection.execute(
            text(
                """
                WITH held AS MATERIALIZED (
                    SELECT DISTINCT aggregate_type, aggregate_id FROM outbox
                    WHERE parked_at IS NOT NULL AND published_at IS NULL
                ), heads AS MATERIALIZED (
                    SELECT aggregate_type, aggregate_id, min(recorded_at) AS first
                    FROM outbox o WHERE published_at IS NULL AND parked_at IS NULL
                    AND NOT EXISTS (SELECT 1 FROM held h
                                    WHERE h.aggregate_type = o.aggregate_type AND h.aggregate_id = o.aggregate_id)
                    GROUP BY aggregate_type, aggregate_id ORDER BY first LIMIT :limit
                )
                SELECT aggregate_type, aggregate_id FROM heads
                WHERE pg_try_advisory_xact_lock(hashtextextended('outbox/' || aggregate_type || '/' || aggregate_id, 0))
                """
            ),
            {"limit": limit},
        ).all()
        if not heads:
            return []
        # A fresh statement after taking the locks: rows another relay marked and
        # committed before we got an aggregate's lock are no longer pending.
        return self._pending_rows(connection, limit, [tuple(h) for h in heads])

    def _write(self, connection: Connection, claimed: Batch) -> None:
        now = self.clock()
        if claimed.published:
            connection.execute(_MARK_PUBLISHED, [
                {"marked_event_id": event_id, "marked_at": now, "marked_as": published_as}
                for event_id, published_as in claimed.published.items()
            ])  # fmt: skip
        if claimed.parked:
            connection.execute(_PARK, [
                {"parked_event_id": event_id, "parked_on": now, "parked_reason": reason[:2000]}
                for event_id, reason in claimed.parked.items()
            ])  # fmt: skip


def parked_under(table_version: str, reason: str) -> str:
    """A park reason naming the translation table that could not publish the row."""
    return f"[table {table_version}] {reason}"


def retry_parked(engine: Engine, table_version: str) -> int:
    """Put back in line every row parked under another translation table than this one (an
    older relay's: an upgraded relay may know its type); the number of rows. Rows this table
    parked stay parked, so a relay that restarts does not churn them. What still cannot be
    published is parked again, with its reason, and its aggregate stays held. A park on a row
    that is on the stream all the same (another relay published it, see PARKED) is cleared too."""
    with engine.begin() as connection:
        return connection.execute(
            update(outbox)
            .where(
                outbox.c.parked_at.is_not(None),
                or_(~outbox.c.park_reason.startswith(parked_under(table_version, "")), outbox.c.published_at.is_not(None)),
            )
            .values(parked_at=None, park_reason=None)
        ).rowcount


def release_parked(engine: Engine, event_ids: list[str] | None = None) -> int:
    """An operator puts parked rows back in line (`starter.py outbox --retry-parked`): every
    unpublished parked row, or those named. Rows parked by the running relay's own table stay
    parked otherwise (retry_parked); this is for a cause the table's version does not show —
    a record the translation could not read until its data was mended, say. What still cannot
    be published is parked again by the relay, with its reason. The number of rows released."""
    query = update(outbox).where(outbox.c.parked_at.is_not(None), outbox.c.published_at.is_(None))
    if event_ids is not None:
        query = query.where(outbox.c.event_id.in_(event_ids))
    with engine.begin() as connection:
        return connection.execute(query.values(parked_at=None, park_reason=None)).rowcount


def interleave(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each aggregate's rows in version order, the aggregates merged by when their rows were
    recorded: a refund's approval, its settlement (another aggregate) and its completion go
    out in the order they happened, and no aggregate's row ever overtakes an earlier one."""
    queues: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:  # already in version order within each aggregate
        queues.setdefault((row["aggregate_type"], row["aggregate_id"]), []).append(row)
    heads = [(q[0]["recorded_at"], n, 0) for n, q in enumerate(queues.values())]
    lists = list(queues.values())
    heapq.heapify(heads)
    merged = []
    while heads:
        _, n, i = heapq.heappop(heads)
        merged.append(lists[n][i])
        if i + 1 < len(lists[n]):
            heapq.heappush(heads, (lists[n][i + 1]["recorded_at"], n, i + 1))
    return merged


@dataclass(frozen=True)
class Lag:
    unpublished: int
    oldest_unpublished: datetime | None
    parked: int


def lag(engine: Engine) -> Lag:
    with engine.connect() as connection:
        unpublished, oldest = connection.execute(
            select(func.count(), func.min(outbox.c.recorded_at)).where(PENDING)
        ).one()
        parked = connection.execute(select(func.count()).where(PARKED)).scalar_one()
    return Lag(unpublished, oldest, parked)


def parked_rows(engine: Engine, limit: int = 50) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(outbox.c.event_id, outbox.c.event_type, outbox.c.aggregate_id, outbox.c.parked_at, outbox.c.park_reason)
            .where(PARKED)
            .order_by(outbox.c.parked_at)
            .limit(limit)
        )
        return [dict(r._mapping) for r in rows]
