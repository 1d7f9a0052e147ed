"""Unit of work: one database transaction around one decision.

An activity loads aggregates through the repositories, lets the owner decide,
and commits. The commit writes, in one transaction: the changed aggregates
(version-checked), every event they recorded (the outbox) and the command id
with its result (the inbox). Either all of it lands or none of it does.

    with uow:
        if (done := uow.answer_to(command)) is not None:
            return done
        order = uow.orders.get(command.order_id)
        order.request_refund(command)
        events = uow.commit(command, result={...})
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, bindparam, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from adapters import db, tables, tracing
from adapters.repository import (
    STATE_CONTEXT,
    DiscrepancyRepository,
    FraudReviewRepository,
    InvoiceRepository,
    OrderRepository,
    PaymentRepository,
    SqlRepository,
    is_unique_violation,
)
from domain.shared.aggregate import AggregateRoot
from domain.shared.errors import ConcurrencyConflict
from domain.shared.inbox import refuse_if_reused
from domain.shared.messages import Command, Event

# PostgreSQL's "try again" errors: two transactions got in each other's way and
# one was chosen to lose. Like a version clash, the cure is to reload and decide again.
RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


@dataclass(frozen=True)
class AggregateTypes:
    """The pydantic class each repository loads. Passed in rather than imported,
    so the adapters depend on no particular owner's module."""

    orders: type[AggregateRoot]
    payments: type[AggregateRoot]
    fraud_reviews: type[AggregateRoot]
    shipments: type[AggregateRoot]
    notifications: type[AggregateRoot]
    invoices: type[AggregateRoot]
    discrepancies: type[AggregateRoot]


def default_aggregate_types() -> AggregateTypes:
    from domain.billing.order import Order
    from domain.fraud.review import FraudReview
    from domain.invoicing.invoice import Invoice
    from domain.notifications.notification import Notification
    from domain.payments.payment import Payment
    from domain.reconciliation.discrepancy import Discrepancy
    from domain.shipping.shipment import Shipment

    return AggregateTypes(
        orders=Order,
        payments=Payment,
        fraud_reviews=FraudReview,
        shipments=Shipment,
        notifications=Notification,
        invoices=Invoice,
        discrepancies=Discrepancy,
    )


# Built once: SQLAlchemy reuses their compiled SQL (see repository._Statements).
_PROCESSED_RESULT = select(tables.processed_commands.c.result).where(
    tables.processed_commands.c.command_id == bindparam("find_command_id")
)
_ANSWER = select(tables.processed_commands.c.result, tables.processed_commands.c.fingerprint).where(
    tables.processed_commands.c.command_id == bindparam("find_command_id")
)
_RECORD_PROCESSED = insert(tables.processed_commands)
_RECORD_EVENTS = insert(tables.outbox)


def _stored_result(result: BaseModel | dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json", context=STATE_CONTEXT)
    return result if result is not None else {}


class SqlUnitOfWork:
    orders: OrderRepository[Any]
    payments: PaymentRepository[Any]
    fraud_reviews: FraudReviewRepository[Any]
    shipments: SqlRepository[Any]
    notifications: SqlRepository[Any]
    invoices: InvoiceRepository[Any]
    discrepancies: DiscrepancyRepository[Any]

    def __init__(
        self,
        engine: Engine,
        aggregate_types: AggregateTypes,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.aggregate_types = aggregate_types
        self.clock = clock  # stamps updated_at / recorded_at / processed_at, never a decision
        self._connection: Connection | None = None
        self._turn: AbstractContextManager[object] = nullcontext()  # this process's turn at a SQLite file

    # -- transaction ---------------------------------------------------------------
    def __enter__(self) -> Self:
        if self._connection is not None:
            raise RuntimeError("this unit of work is already open")
        self._turn = db.one_writer(self.engine)
        self._turn.__enter__()
        try:
            self._connection = self.engine.connect()
            self._connection.begin()
            self._open_repositories(self._connection)
        except BaseException:
            self.__exit__(None, None, None)  # the connection closed, the turn given back
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        turn, self._turn = self._turn, nullcontext()
        try:
            if connection is not None:
                try:
                    connection.rollback()  # whatever was not committed is dropped
                finally:
                    connection.close()
        finally:
            turn.__exit__(None, None, None)

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("open the unit of work first: `with uow: ...`")
        return self._connection

    def _open_repositories(self, connection: Connection) -> None:
        types, clock = self.aggregate_types, self.clock
        # Index columns a test's stand-in aggregate may lack are left empty.
        self.orders = OrderRepository(
            connection,
            tables.orders,
            types.orders,
            lambda o: {
                "customer_id": o.customer_id,
                "reserved_since": getattr(o, "reserved_since", None),
                "owed_since": getattr(o, "owed_since", None),
                "parcel_stop_asked_at": stop.asked_at if (stop := getattr(o, "parcel_stop", None)) else None,
                "refunds_paid_out": len(getattr(o, "refunds_paid_out", ())),
            },
            clock=clock,
        )
        self.payments = PaymentRepository(
            connection, tables.payments, types.payments, lambda p: {"open_since": getattr(p, "open_since", None)}, clock=clock
        )
        self.fraud_reviews = FraudReviewRepository(
            connection,
            tables.fraud_reviews,
            types.fraud_reviews,
            lambda r: {"customer_id": r.customer_id, "approved_at": r.approved_at},
            clock=clock,
        )
        self.shipments = SqlRepository(connection, tables.shipments, types.shipments, clock=clock)
        self.notifications = SqlRepository(connection, tables.notifications, types.notifications, clock=clock)
        self.invoices = InvoiceRepository(
            connection,
            tables.invoices,
            types.invoices,
            lambda i: {"order_id": i.order_id, "credit_notes": len(getattr(i, "credit_notes", ()))},
            clock=clock,
        )
        self.discrepancies = DiscrepancyRepository(
            connection, tables.discrepancies, types.discrepancies, lambda d: {"status": str(d.status)}, clock=clock
        )

    def _repositories(self) -> tuple[SqlRepository[Any], ...]:
        return (
            self.orders,
            self.payments,
            self.fraud_reviews,
            self.shipments,
            self.notifications,
            self.invoices,
            self.discrepancies,
        )

    def pending_events(self) -> list[Event]:
        """Everything the owners recorded in this unit of work, not yet committed."""
        return [e for repository in self._repositories() for a in repository.seen for e in a.pending_events]

    # -- inbox -------------------------------------------------------------------------
    def processed_result(self, command_id: str) -> dict[str, Any] | None:
        """The stored result when this command was already handled, else None."""
        return self.connection.execute(_PROCESSED_RESULT, {"find_command_id": command_id}).scalar_one_or_none()

    def answer_to(self, command: Command) -> dict[str, Any] | None:
        """The stored result when this very command was already handled, else None; refused
        (`command_id_reused`) when its id was handled for another command."""
        row = self.connection.execute(_ANSWER, {"find_command_id": command.command_id}).one_or_none()
        if row is None:
            return None
        refuse_if_reused(command, row.fingerprint)
        return row.result

    # -- commit ------------------------------------------------------------------------
    def commit(self, command: Command | None = None, result: BaseModel | dict[str, Any] | None = None) -> list[Event]:
        """Save every changed aggregate, its events and the command's result, atomically.

        A result given as a model is stored like the state and the outbox: money in integer
        minor units (what `processed_result` returns reads back through the same model).

        Returns the events written. Raises ConcurrencyConflict, with nothing
        written, when an aggregate changed since it was loaded or the command
        (or one of its events) was already recorded: reload and decide again.
        """
        connection = self.connection
        now = self.clock()
        saved: list[tuple[AggregateRoot, int]] = []  # (aggregate, version before saving)
        try:
            outbox_rows: list[dict[str, Any]] = []
            for repository in self._repositories():
                # Always the same order (table, then id), so two transactions that
                # touch the same rows lock them in the same order and cannot deadlock.
                for aggregate in sorted(repository.seen, key=lambda a: a.id):
                    before, events = aggregate.version, aggregate.pending_events
                    new_version = repository.save(aggregate)
                    if new_version is None:
                        continue
                    saved.append((aggregate, before))
                    outbox_rows += _outbox_rows(repository, aggregate, new_version, events, now)
            if outbox_rows:
                connection.execute(_RECORD_EVENTS, outbox_rows)
            if command is not None:
                connection.execute(
                    _RECORD_PROCESSED,
                    {
                        "command_id": command.command_id,
                        "command_type": type(command).__name__,
                        # {} rather than NULL, so "processed without a result" still reads as processed
                        "result": _stored_result(result),
                        "processed_at": now,
                        "causation_id": command.causation_id or None,
                        "fingerprint": command.fingerprint(),
                    },
                )
            connection.commit()
        except ConcurrencyConflict:
            self._abandon(saved)
            raise
        except IntegrityError as error:
            self._abandon(saved)
            if is_unique_violation(error):
                raise ConcurrencyConflict("this command or one of its events was already recorded") from error
            raise
        except DBAPIError as error:
            self._abandon(saved)
            if getattr(error.orig, "sqlstate", None) in RETRYABLE_SQLSTATES:
                raise ConcurrencyConflict("the database chose this transaction to lose a race") from error
            raise
        except BaseException:
            self._abandon(saved)
            raise

        written: list[Event] = []
        for aggregate, _ in saved:
            written += aggregate.clear_events()
        return written

    def rollback(self) -> None:
        self.connection.rollback()

    def _abandon(self, saved: list[tuple[AggregateRoot, int]]) -> None:
        """Undo a failed commit: in the database, and in the aggregates' versions,
        so that memory still matches what is stored."""
        for aggregate, before in saved:
            aggregate.version = before
        self.connection.rollback()


def _outbox_rows(
    repository: SqlRepository[Any], aggregate: AggregateRoot, version: int, events: list[Event], now: datetime
) -> list[dict[str, Any]]:
    traceparent = tracing.current_traceparent()
    return [
        {
            "event_id": event.event_id,
            "event_type": type(event).__name__,
            "schema_version": event.schema_version,
            "payload": event.model_dump(mode="json", context=STATE_CONTEXT),
            "aggregate_type": repository.table.name,
            "aggregate_id": aggregate.id,
            "aggregate_version": version,
            "position": position,
            "correlation_id": event.correlation_id,
            "causation_id": event.causation_id,
            "occurred_at": event.occurred_at,
            "recorded_at": now,
            "published_at": None,
            "trace_parent": traceparent,
        }
        for position, event in enumerate(events)
    ]
