"""The database schema: aggregates as versioned JSON documents, the outbox and the inbox.

Each aggregate type has its own table. The `state` column holds the aggregate as
JSON (money as integer minor units); `version` is what optimistic concurrency
checks; a few copies of fields live in their own indexed columns so that
queries never have to look inside the JSON.

migrations/versions/ must describe exactly this schema: a test compares them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)

# Named constraints and indexes, so that migrations and this module agree on
# names on every database (SQLite and PostgreSQL invent different ones).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """A point in time, always written and read as an aware UTC datetime.

    SQLite keeps no time zone: without this, a value written as 10:00+02:00
    would read back as a naive 10:00 and compare wrongly with 09:00+00:00.
    Naive datetimes are refused because their meaning is a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"refusing to store a naive datetime: {value!r}")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite: stored as UTC, read back without a zone
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _document_table(name: str, *extra: Any) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Text, primary_key=True),
        Column("version", Integer, nullable=False),
        Column("state", JSON, nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
        *extra,
    )


orders = _document_table(
    "orders",
    Column("customer_id", Text, nullable=False, index=True),
    # When the oldest refund still holding money reserved was asked for (None: none is):
    # reconciliation looks for reservations whose flow is gone by it.
    Column("reserved_since", UtcDateTime, nullable=True, index=True),
    # Since when money a cancellation owes has had no refund on its way (None: nothing owed,
    # or all of it on its way): reconciliation flags money owed by it.
    Column("owed_since", UtcDateTime, nullable=True, index=True),
    # When billing asked for a stop of the parcel that has no answer yet (None: none waits):
    # reconciliation asks about stops nobody answered by it.
    Column("parcel_stop_asked_at", UtcDateTime, nullable=True, index=True),
    # How many of its refunds billing paid out: beside `invoices.credit_notes`, reconciliation
    # finds refunds paid out that no credit note answers without reading every order.
    Column("refunds_paid_out", Integer, nullable=False, server_default="0", index=True),
)

payments = _document_table(
    "payments",
    # When the oldest gateway request still without its answer was sent (None: all answered):
    # reconciliation finds unknown and long-sent captures and refunds by it.
    Column("open_since", UtcDateTime, nullable=True, index=True),
)

fraud_reviews = _document_table(
    "fraud_reviews",
    Column("customer_id", Text, nullable=False, index=True),
    Column("approved_at", UtcDateTime, nullable=True, index=True),
)

shipments = _document_table("shipments")

notifications = _document_table("notifications")

invoices = _document_table(
    "invoices",
    Column("order_id", Text, nullable=False),
    Column("credit_notes", Integer, nullable=False, server_default="0"),  # see `orders.refunds_paid_out`
    # One invoice per order: the database refuses a second one even if two
    # workers race past the owner's check.
    UniqueConstraint("order_id"),
)

# What reconciliation found disagreeing, for support. One row per (kind, business id).
discrepancies = _document_table(
    "discrepancies",
    Column("status", Text, nullable=False, index=True),
)

# Every event an owner recorded, written in the same transaction as the state
# change that produced it; a publisher marks `published_at` once it went out.
outbox = Table(
    "outbox",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("event_type", Text, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("aggregate_type", Text, nullable=False),
    Column("aggregate_id", Text, nullable=False),
    Column("aggregate_version", Integer, nullable=False),
    # Order among the events of one aggregate version: (aggregate_version,
    # position) is the order in which the owner recorded its events.
    Column("position", Integer, nullable=False),
    Column("correlation_id", Text, nullable=False),
    Column("causation_id", Text, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=True),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("published_at", UtcDateTime, nullable=True),
    # The W3C traceparent of the step that recorded the event (NULL: not traced): the
    # relay's publish continues that trace.
    Column("trace_parent", Text, nullable=True),
    # What the relay published the row as (CloudEvents types, space separated);
    # NULL with published_at set: an internal event, handled but not published.
    Column("published_as", Text, nullable=True),
    # A row that can never be published as it is (unknown type): kept and shown.
    Column("parked_at", UtcDateTime, nullable=True),
    Column("park_reason", Text, nullable=True),
    Index(None, "aggregate_type", "aggregate_id"),
    Index(None, "correlation_id"),
    Index(None, "published_at"),
    # The aggregates a parked row holds (adapters/outbox.py HELD): a partial index, so that
    # the relay's "is this aggregate held?" probes an index of the few parked rows only.
    Index(
        "ix_outbox_parked_aggregate", "aggregate_type", "aggregate_id",
        sqlite_where=text("parked_at IS NOT NULL"), postgresql_where=text("parked_at IS NOT NULL"),
    ),
)

# The inbox: a command id seen once is never decided again; its first result is
# returned instead.
processed_commands = Table(
    "processed_commands",
    metadata,
    Column("command_id", Text, primary_key=True),
    Column("command_type", Text, nullable=False),
    Column("result", JSON, nullable=False),
    Column("processed_at", UtcDateTime, nullable=False),
    # What caused the command (an event id, or `{workflow id}/request`): with the events'
    # causation ids (= command ids) this links a business transaction into one chain.
    Column("causation_id", Text, nullable=True),
    # What the command id stood for (`Command.fingerprint`): the same id for another command
    # is refused, not answered with this result. NULL: recorded before it was kept.
    Column("fingerprint", Text, nullable=True),
)

AGGREGATE_TABLES: tuple[Table, ...] = (
    orders, payments, fraud_reviews, shipments, notifications, invoices, discrepancies
)
