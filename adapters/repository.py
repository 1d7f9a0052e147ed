"""Repositories: aggregates loaded from and saved to their versioned document tables.

A repository works inside the unit of work's transaction and never commits.
It keeps an identity map, so that loading the same id twice in one unit of
work gives the same object, and the unit of work knows what to save.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, Row, Table, bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from adapters import tables
from domain.shared.aggregate import AggregateRoot
from domain.shared.errors import ConcurrencyConflict, InvalidCommand, NotFound

log = logging.getLogger(__name__)

A = TypeVar("A", bound=AggregateRoot)

IndexColumns = Callable[[Any], Mapping[str, Any]]

# Money goes to the database as integer minor units, never as a decimal string.
STATE_CONTEXT = {"money": "minor_units"}


def dump_state(aggregate: AggregateRoot) -> dict[str, Any]:
    """The `state` document: everything but the id and version, which have columns — and the
    fields of a newer build this one does not know, as they were loaded (`load_state`)."""
    state = aggregate.model_dump(mode="json", context=STATE_CONTEXT, exclude={"id", "version"})
    if aggregate.__pydantic_extra__ is not None:  # loaded with fields it does not know
        _keep_unknown_fields(aggregate, state)
    return state


def load_state(aggregate_type: type[A], id: str, version: int, state: Mapping[str, Any]) -> A:
    """The aggregate a row holds. A field this build does not know — at the top or in a nested
    value such as a refund — was written by a newer one (mid-deploy, or a pinned older build
    still running its flows): it is kept as it was and written back on save, so that an older
    worker deciding for its flows neither fails to load the row nor drops what the newer build
    recorded. Its decisions are this build's rules, as before the newer one came."""
    document = {**state, "id": id, "version": version}
    try:
        return aggregate_type.model_validate(document, extra="forbid")
    except ValidationError as invalid:
        if not any(error["type"] == "extra_forbidden" for error in invalid.errors()):
            raise
    log.info("%s %s holds fields this build does not know: kept as they are", describe(aggregate_type), id)
    return aggregate_type.model_validate(document, extra="allow")


def _keep_unknown_fields(model: BaseModel, dumped: dict[str, Any]) -> None:
    """Put back into `dumped` the unknown fields `model` and the models in it were loaded with."""
    for name, value in (model.__pydantic_extra__ or {}).items():
        dumped.setdefault(name, value)
    for name in type(model).model_fields:
        if name in dumped:
            _keep_unknown_fields_in(getattr(model, name), dumped[name])


def _keep_unknown_fields_in(value: Any, dumped: Any) -> None:
    if isinstance(value, BaseModel) and isinstance(dumped, dict):
        _keep_unknown_fields(value, dumped)
    elif isinstance(value, Mapping) and isinstance(dumped, dict):
        for key, item in value.items():
            if str(key) in dumped:
                _keep_unknown_fields_in(item, dumped[str(key)])
    elif isinstance(value, list | tuple) and isinstance(dumped, list):
        for item, dumped_item in zip(value, dumped, strict=False):
            _keep_unknown_fields_in(item, dumped_item)


@lru_cache(maxsize=None)
def describe(aggregate_type: type) -> str:
    """`FraudReview` -> "fraud review", for messages people read."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", aggregate_type.__name__).lower()


def is_unique_violation(error: IntegrityError) -> bool:
    """A duplicate key, as opposed to any other broken constraint (which is a bug)."""
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None)  # psycopg
    if sqlstate is not None:
        return sqlstate == "23505"
    name = getattr(original, "sqlite_errorname", "")  # sqlite3
    return name in {"SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"}


class _Statements:
    """A table's load, insert and versioned update, built once per table and reused by every
    unit of work: SQLAlchemy then finds their compiled SQL in its cache by the statement's
    memoised cache key instead of building and hashing a new statement per call."""

    def __init__(self, table: Table) -> None:
        columns = table.c
        self.find = select(columns.id, columns.version, columns.state).where(columns.id == bindparam("find_id"))
        self.insert = insert(table)
        # The SET clause takes the state, updated_at and index columns from each call's parameters.
        self.update = (
            update(table)
            .where(columns.id == bindparam("where_id"), columns.version == bindparam("where_version"))
            .values(version=columns.version + 1)
        )


@lru_cache(maxsize=None)
def _statements(table: Table) -> _Statements:
    return _Statements(table)


# Ids per `IN (...)` query of `find_all`: well under SQLite's limit of bound parameters.
FIND_ALL_CHUNK = 500

CUSTOMER_SCREENING_LOCK = 0x5F5C  # the advisory-lock key space of per-customer fraud screening


class SqlRepository(Generic[A]):
    def __init__(
        self,
        connection: Connection,
        table: Table,
        aggregate_type: type[A],
        index_columns: IndexColumns | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.connection = connection
        self.table = table
        self.aggregate_type = aggregate_type
        self.index_columns = index_columns or (lambda _aggregate: {})
        self.clock = clock
        self.kind = describe(aggregate_type)
        self._statements = _statements(table)
        self._identity_map: dict[str, A] = {}

    @property
    def seen(self) -> list[A]:
        """Every aggregate loaded or added through this repository, once each."""
        return list(self._identity_map.values())

    def get(self, id: str) -> A:
        aggregate = self.find(id)
        if aggregate is None:
            raise NotFound(code="not_found", message=f"no {self.kind} {id!r}")
        return aggregate

    def find(self, id: str) -> A | None:
        if id in self._identity_map:
            return self._identity_map[id]
        row = self.connection.execute(self._statements.find, {"find_id": id}).one_or_none()
        return None if row is None else self._track(row)

    def find_all(self, ids: Iterable[str]) -> dict[str, A]:
        """Those of `ids` that exist, by id: one query per FIND_ALL_CHUNK ids, not one per id."""
        ids = set(ids)
        found = {id: self._identity_map[id] for id in ids if id in self._identity_map}
        wanted = sorted(ids - found.keys())
        for start in range(0, len(wanted), FIND_ALL_CHUNK):
            chunk = wanted[start : start + FIND_ALL_CHUNK]
            found.update((row.id, self._track(row)) for row in self._select_where(self.table.c.id.in_(chunk)))
        return found

    def add(self, aggregate: A) -> A:
        tracked = self._identity_map.get(aggregate.id)
        if tracked is not None and tracked is not aggregate:
            raise ValueError(f"another {self.kind} {aggregate.id!r} is already in this unit of work")
        self._identity_map[aggregate.id] = aggregate
        return aggregate

    def add_new(self, aggregate: A) -> A:
        """Add an aggregate that must not exist yet (placing an order, shipping a parcel)."""
        if self.find(aggregate.id) is not None:
            raise InvalidCommand("already_exists", f"{self.kind} {aggregate.id!r} already exists")
        return self.add(aggregate)

    def save(self, aggregate: A) -> int | None:
        """Write one aggregate if it changed, checking its version; returns the new
        version, or None when there was nothing to write.

        A new aggregate (version 0) is inserted even without events: it came into
        existence. A loaded one without pending events did not change.
        """
        if aggregate.version != 0 and not aggregate.pending_events:
            return None
        new_version = aggregate.version + 1
        values = {
            "state": dump_state(aggregate),
            "updated_at": self.clock(),
            **self.index_columns(aggregate),
        }
        if aggregate.version == 0:
            self._insert(aggregate.id, values)
        else:
            self._update(aggregate.id, aggregate.version, values)
        aggregate.version = new_version
        return new_version

    def _insert(self, id: str, values: dict[str, Any]) -> None:
        try:
            self.connection.execute(self._statements.insert, {"id": id, "version": 1, **values})
        except IntegrityError as error:
            if is_unique_violation(error):
                raise ConcurrencyConflict(f"{self.kind} {id!r} was created by someone else") from error
            raise

    def _update(self, id: str, expected: int, values: dict[str, Any]) -> None:
        result = self.connection.execute(
            self._statements.update, {"where_id": id, "where_version": expected, **values}
        )
        if result.rowcount != 1:
            raise ConcurrencyConflict(f"{self.kind} {id!r} changed since version {expected} was loaded")

    def _track(self, row: Row[Any]) -> A:
        # The identity map wins: an aggregate already in this unit of work may
        # carry changes that are not saved yet.
        if row.id not in self._identity_map:
            self._identity_map[row.id] = load_state(self.aggregate_type, row.id, row.version, row.state)
        return self._identity_map[row.id]

    def _track_all(self, rows: list[Row[Any]]) -> list[A]:
        return [self._track(row) for row in rows]

    def _select_where(self, *criteria: Any) -> list[Row[Any]]:
        statement = (
            select(self.table.c.id, self.table.c.version, self.table.c.state)
            .where(*criteria)
            .order_by(self.table.c.id)
        )
        return list(self.connection.execute(statement).all())


class FraudReviewRepository(SqlRepository[A]):
    def for_customer(self, customer_id: str) -> list[A]:
        """Every review of this customer's refunds (the screening looks at their history).

        Screening reads this history and adds a review to it; two screenings of the same
        customer at once would each miss the other ("a third refund within 7 days" could
        slip through). So the read holds a per-customer lock until the transaction ends:
        a transaction-level advisory lock on PostgreSQL; on SQLite every unit of work
        already begins with BEGIN IMMEDIATE, one writer at a time."""
        if self.connection.dialect.name == "postgresql":
            self.connection.execute(
                text("SELECT pg_advisory_xact_lock(:space, hashtext(:customer))"),
                {"space": CUSTOMER_SCREENING_LOCK, "customer": customer_id},
            )
        return self._track_all(self._select_where(self.table.c.customer_id == customer_id))


class InvoiceRepository(SqlRepository[A]):
    def for_order(self, order_id: str) -> A | None:
        rows = self._select_where(self.table.c.order_id == order_id)
        return self._track(rows[0]) if rows else None

    def for_orders(self, order_ids: Iterable[str]) -> dict[str, A]:
        """The invoices of `order_ids` by order id (an order without one is left out)."""
        wanted, found = list(dict.fromkeys(order_ids)), {}
        for start in range(0, len(wanted), FIND_ALL_CHUNK):
            chunk = wanted[start : start + FIND_ALL_CHUNK]
            for invoice in self._track_all(self._select_where(self.table.c.order_id.in_(chunk))):
                found[invoice.order_id] = invoice  # type: ignore[attr-defined]
        return found


class OrderRepository(SqlRepository[A]):
    def reserving_since(self, cutoff: datetime) -> list[A]:
        """Orders with a refund whose money has been reserved since `cutoff` or longer."""
        column = self.table.c.reserved_since
        return self._track_all(self._select_where(column.is_not(None), column <= cutoff))

    def asking_a_stop_since(self, cutoff: datetime) -> list[A]:
        """Orders with a stop of their parcel asked for at `cutoff` or before and not answered."""
        column = self.table.c.parcel_stop_asked_at
        return self._track_all(self._select_where(column.is_not(None), column <= cutoff))

    def owing_since(self, cutoff: datetime) -> list[A]:
        """Orders owing money back with no refund on its way for it since `cutoff` or longer."""
        column = self.table.c.owed_since
        return self._track_all(self._select_where(column.is_not(None), column <= cutoff))

    def changed_since(self, moment: datetime) -> list[A]:
        return self._track_all(self._select_where(self.table.c.updated_at >= moment))

    def paid_out_beyond_their_credit_notes(self, after: str = "", limit: int | None = None) -> list[A]:
        """Orders with more refunds paid out than their invoice has credit notes (or with no
        invoice): one of their refunds lacks its note. Counts kept by each save, compared in
        one statement; only those orders are loaded, in id order — those after `after`, at
        most `limit` of them (a page)."""
        orders, invoices = self.table.c, tables.invoices.c
        credit_notes = (
            select(invoices.credit_notes).where(invoices.order_id == orders.id).scalar_subquery()
        )
        statement = (
            select(orders.id, orders.version, orders.state)
            .where(orders.refunds_paid_out > 0, orders.refunds_paid_out > func.coalesce(credit_notes, 0),
                   orders.id > after)
            .order_by(orders.id)
            .limit(limit)
        )
        return self._track_all(list(self.connection.execute(statement).all()))


class PaymentRepository(SqlRepository[A]):
    def awaiting_answers(self, after: tuple[datetime, str] | None = None, limit: int | None = None) -> list[A]:
        """Payments with a capture or refund still waiting for (or missing) the gateway's answer,
        the longest waiting first (by `open_since`, then id); after `after`, at most `limit` (a page)."""
        columns = self.table.c
        statement = (
            select(columns.id, columns.version, columns.state)
            .where(columns.open_since.is_not(None))
            .order_by(columns.open_since, columns.id)
            .limit(limit)
        )
        if after is not None:
            since, payment_id = after
            statement = statement.where(
                (columns.open_since > since) | ((columns.open_since == since) & (columns.id > payment_id))
            )
        return self._track_all(list(self.connection.execute(statement).all()))

    def changed_since(self, moment: datetime) -> list[A]:
        return self._track_all(self._select_where(self.table.c.updated_at >= moment))


class DiscrepancyRepository(SqlRepository[A]):
    def with_status(self, status: str) -> list[A]:
        return self._track_all(self._select_where(self.table.c.status == status))
