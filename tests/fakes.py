"""An in-memory unit of work for service-layer tests that need no database.

It behaves like adapters.unit_of_work.SqlUnitOfWork where the tests can tell:
aggregates are stored as the same JSON documents (so a loaded aggregate is a
copy and unsaved changes never leak), versions are checked the same way, a
command id or event id is recorded once, and a failed commit changes nothing.

Two FakeUnitOfWork objects built on one FakeDatabase act like two workers on
one database, which is how a test stages a lost race.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel

from adapters.repository import STATE_CONTEXT, dump_state, load_state
from domain.payments.gateway import (
    Accepted,
    CaptureRequest,
    Declined,
    GatewayAnswer,
    GatewayRefusedRequest,
    GatewayUnavailable,
    LookupAnswer,
    RefundRequest,
    SettlementLine,
    may_be_the_same_account,
)
from domain.payments.gateway import NotFound as NoSuchPayment
from domain.shared.aggregate import AggregateRoot
from domain.shared.errors import ConcurrencyConflict, InvalidCommand, NotFound
from domain.shared.inbox import refuse_if_reused
from domain.shared.messages import Command, Event

A = TypeVar("A", bound=AggregateRoot)


@dataclass
class StoredDocument:
    aggregate_type: type[AggregateRoot]
    version: int
    state: dict[str, Any]

    def load(self, id: str) -> AggregateRoot:
        return load_state(self.aggregate_type, id, self.version, self.state)


@dataclass
class FakeDatabase:
    tables: dict[str, dict[str, StoredDocument]] = field(default_factory=dict)
    outbox: list[Event] = field(default_factory=list)
    processed: dict[str, dict[str, Any]] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def table(self, name: str) -> dict[str, StoredDocument]:
        return self.tables.setdefault(name, {})


class FakeRepository(Generic[A]):
    def __init__(self, database: FakeDatabase, table_name: str) -> None:
        self.table_name = table_name
        self.kind = table_name.removesuffix("s").replace("_", " ")  # "fraud_reviews" -> "fraud review"
        self._database = database
        self._rows = database.table(table_name)
        self._identity_map: dict[str, A] = {}

    @property
    def seen(self) -> list[A]:
        return list(self._identity_map.values())

    def get(self, id: str) -> A:
        aggregate = self.find(id)
        if aggregate is None:
            raise NotFound(code="not_found", message=f"no {self.kind} {id!r}")
        return aggregate

    def find(self, id: str) -> A | None:
        if id in self._identity_map:
            return self._identity_map[id]
        document = self._rows.get(id)
        return None if document is None else self._track(id, document)

    def find_all(self, ids) -> dict[str, A]:
        return {id: aggregate for id in ids if (aggregate := self.find(id)) is not None}

    def add(self, aggregate: A) -> A:
        tracked = self._identity_map.get(aggregate.id)
        if tracked is not None and tracked is not aggregate:
            raise ValueError(f"another {self.kind} {aggregate.id!r} is already in this unit of work")
        self._identity_map[aggregate.id] = aggregate
        return aggregate

    def add_new(self, aggregate: A) -> A:
        if self.find(aggregate.id) is not None:
            raise InvalidCommand("already_exists", f"{self.kind} {aggregate.id!r} already exists")
        return self.add(aggregate)

    def changed(self) -> list[A]:
        """What a commit would write: new aggregates, and loaded ones with events."""
        return [a for a in self.seen if a.version == 0 or a.pending_events]

    def check(self, aggregate: A) -> None:
        stored = self._rows.get(aggregate.id)
        if aggregate.version == 0 and stored is not None:
            raise ConcurrencyConflict(f"{self.kind} {aggregate.id!r} was created by someone else")
        if aggregate.version != 0 and (stored is None or stored.version != aggregate.version):
            raise ConcurrencyConflict(
                f"{self.kind} {aggregate.id!r} changed since version {aggregate.version} was loaded"
            )

    def write(self, aggregate: A) -> None:
        aggregate.version += 1
        self._rows[aggregate.id] = StoredDocument(type(aggregate), aggregate.version, dump_state(aggregate))

    def _track(self, id: str, document: StoredDocument) -> A:
        if id not in self._identity_map:
            self._identity_map[id] = document.load(id)  # type: ignore[assignment]
        return self._identity_map[id]

    def _where(self, predicate: Callable[[AggregateRoot], bool]) -> list[A]:
        return [
            self._track(id, document)
            for id, document in sorted(self._rows.items())
            if predicate(self._identity_map.get(id) or document.load(id))
        ]


class FakeFraudReviewRepository(FakeRepository[A]):
    def for_customer(self, customer_id: str) -> list[A]:
        return self._where(lambda review: review.customer_id == customer_id)  # type: ignore[attr-defined]


class FakeInvoiceRepository(FakeRepository[A]):
    def for_order(self, order_id: str) -> A | None:
        found = self._where(lambda invoice: invoice.order_id == order_id)  # type: ignore[attr-defined]
        return found[0] if found else None

    def for_orders(self, order_ids) -> dict[str, A]:
        wanted = set(order_ids)
        return {i.order_id: i for i in self._where(lambda invoice: invoice.order_id in wanted)}  # type: ignore[attr-defined]


class FakeOrderRepository(FakeRepository[A]):
    def reserving_since(self, cutoff: datetime) -> list[A]:
        return self._where(lambda o: o.reserved_since is not None and o.reserved_since <= cutoff)  # type: ignore[attr-defined]

    def owing_since(self, cutoff: datetime) -> list[A]:
        return self._where(lambda o: o.owed_since is not None and o.owed_since <= cutoff)  # type: ignore[attr-defined]

    def asking_a_stop_since(self, cutoff: datetime) -> list[A]:
        return self._where(lambda o: o.parcel_stop is not None and o.parcel_stop.asked_at <= cutoff)  # type: ignore[attr-defined]

    def paid_out_beyond_their_credit_notes(self, after: str = "", limit: int | None = None) -> list[A]:
        credit_notes = {
            document.state["order_id"]: len(document.state.get("credit_notes", []))
            for document in self._database.table("invoices").values()
        }
        found = self._where(
            lambda o: o.id > after and len(o.refunds_paid_out) > credit_notes.get(o.id, 0)  # type: ignore[attr-defined]
        )
        return found if limit is None else found[:limit]


class FakePaymentRepository(FakeRepository[A]):
    def awaiting_answers(self) -> list[A]:
        return self._where(lambda p: p.open_since is not None)  # type: ignore[attr-defined]


class FakeDiscrepancyRepository(FakeRepository[A]):
    def with_status(self, status: str) -> list[A]:
        return self._where(lambda d: d.status == status)  # type: ignore[attr-defined]


class FakeUnitOfWork:
    orders: FakeOrderRepository[Any]
    payments: FakePaymentRepository[Any]
    fraud_reviews: FakeFraudReviewRepository[Any]
    shipments: FakeRepository[Any]
    notifications: FakeRepository[Any]
    invoices: FakeInvoiceRepository[Any]
    discrepancies: FakeDiscrepancyRepository[Any]

    def __init__(self, database: FakeDatabase | None = None) -> None:
        self.database = database or FakeDatabase()
        self.committed = False  # did the last `with` block commit?
        self._open = False

    @property
    def outbox(self) -> list[Event]:
        return self.database.outbox

    @property
    def processed(self) -> dict[str, dict[str, Any]]:
        return self.database.processed

    def __enter__(self) -> Self:
        database = self.database
        self.orders = FakeOrderRepository(database, "orders")
        self.payments = FakePaymentRepository(database, "payments")
        self.fraud_reviews = FakeFraudReviewRepository(database, "fraud_reviews")
        self.shipments = FakeRepository(database, "shipments")
        self.notifications = FakeRepository(database, "notifications")
        self.invoices = FakeInvoiceRepository(database, "invoices")
        self.discrepancies = FakeDiscrepancyRepository(database, "discrepancies")
        self.committed = False
        self._open = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Nothing to roll back: uncommitted changes only ever lived in the loaded copies.
        self._open = False

    def pending_events(self) -> list[Event]:
        return [e for repository in self._repositories() for a in repository.seen for e in a.pending_events]

    def processed_result(self, command_id: str) -> dict[str, Any] | None:
        self._require_open()
        result = self.database.processed.get(command_id)
        return None if result is None else dict(result)

    def answer_to(self, command: Command) -> dict[str, Any] | None:
        result = self.processed_result(command.command_id)
        if result is not None:
            refuse_if_reused(command, self.database.fingerprints.get(command.command_id))
        return result

    def commit(self, command: Command | None = None, result: BaseModel | dict[str, Any] | None = None) -> list[Event]:
        self._require_open()
        changes = [(repo, aggregate) for repo in self._repositories() for aggregate in repo.changed()]
        # Check everything first, so that a conflict leaves the database untouched.
        for repository, aggregate in changes:
            repository.check(aggregate)
        events = [event for _, aggregate in changes for event in aggregate.pending_events]
        known_events = {event.event_id for event in self.database.outbox}
        if any(event.event_id in known_events for event in events):
            raise ConcurrencyConflict("one of these events was already recorded")
        if command is not None and command.command_id in self.database.processed:
            raise ConcurrencyConflict(f"command {command.command_id!r} was already processed")

        for repository, aggregate in changes:
            repository.write(aggregate)
            aggregate.clear_events()
        self.database.outbox.extend(events)
        if command is not None:
            if isinstance(result, BaseModel):  # stored as the database stores it
                result = result.model_dump(mode="json", context=STATE_CONTEXT)
            self.database.processed[command.command_id] = dict(result) if result is not None else {}
            self.database.fingerprints[command.command_id] = command.fingerprint()
        self.committed = True
        return events

    def _repositories(self) -> tuple[FakeRepository[Any], ...]:
        return (
            self.orders,
            self.payments,
            self.fraud_reviews,
            self.shipments,
            self.notifications,
            self.invoices,
            self.discrepancies,
        )

    def _require_open(self) -> None:
        if not self._open:
            raise RuntimeError("open the unit of work first: `with uow: ...`")


class FakeGateway:
    """An in-process PaymentGateway with the faults reconciliation is about, chosen by card
    token (captures) or by a refund's reference (the refund id) containing a scenario word:

      answer_lost    the money moves, but every answer is lost (GatewayUnavailable)
      never_arrives  nothing moves, and nothing answers (GatewayUnavailable)
      refused        the request is refused as invalid (400); nothing moves
      declined       an ordinary decline

    Look-ups tell the truth: what moved is Accepted, a decline Declined, anything else
    NotFound. `settlements(day)` lists what moved, like the gateway's settlement listing.
    Idempotent by key, like the real one: a retry never moves money twice.
    """

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self.moved: dict[str, SettlementLine] = {}  # business id -> what moved
        self.declined: dict[str, str] = {}
        self.calls: dict[str, int] = {}  # business id -> money-moving requests received
        self.reachable = True  # False: look-ups and the settlement listing fail too (the gateway is down)
        self.refuses_lookups = False  # True: look-ups are refused (400), as for another account's payment
        self.unreachable_for: set[str] = set()  # business ids whose look-ups fail as if the gateway were down
        # Whose account the key speaks for; a test swaps it to play a worker given another key.
        self.account_id = "test:acct_fake"

    def account(self) -> str:
        return self.account_id

    # -- money-moving requests ------------------------------------------------------------
    def capture(self, request: CaptureRequest) -> GatewayAnswer:
        return self._request("capture", request.idempotency_key, request.reference, request.amount, request.card_token)

    def refund(self, request: RefundRequest) -> GatewayAnswer:
        return self._request("refund", request.idempotency_key, request.charge, request.amount, request.reference)

    def _request(self, kind, key, order_or_charge, amount, scenario) -> GatewayAnswer:
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            if "refused" in scenario:
                raise GatewayRefusedRequest(f"invalid request for {key}")
            if "never_arrives" in scenario:
                raise GatewayUnavailable("timed out")
            if "declined" in scenario:
                self.declined[key] = "card_declined"
                return Declined(code="card_declined")
            line = self.moved.get(key) or SettlementLine(
                kind=kind,
                business_id=key,
                order_id=order_or_charge if kind == "capture" else self._order_of_charge(order_or_charge),
                reference=f"{'ch' if kind == 'capture' else 're'}_{key}",
                amount=amount,
                settled_at=self.clock(),
            )
            self.moved[key] = line
            if "answer_lost" in scenario:
                raise GatewayUnavailable("the answer was lost")
            # A capture's answer says which currency was charged, as Stripe's does.
            return Accepted(reference=line.reference, currency=amount.currency if kind == "capture" else "")

    def _order_of_charge(self, charge: str) -> str:
        return next((l.order_id for l in self.moved.values() if l.reference == charge), charge)

    # -- look-ups (never move money) --------------------------------------------------------
    def find_capture(self, request: CaptureRequest) -> LookupAnswer:
        return self._find(request.idempotency_key, request.sent_to)

    def find_refund(self, request: RefundRequest) -> LookupAnswer:
        return self._find(request.idempotency_key, request.sent_to)

    def _find(self, key: str, sent_to: str) -> LookupAnswer:
        with self._lock:
            if not self.reachable or key in self.unreachable_for:
                raise GatewayUnavailable("the gateway is down")
            if not may_be_the_same_account(sent_to, self.account_id):  # as the Stripe adapter refuses it
                raise GatewayRefusedRequest(f"{key} went to account {sent_to}; this key is {self.account_id}'s")
            if self.refuses_lookups:
                raise GatewayRefusedRequest(f"resource_missing: no such payment for {key}")
            if key in self.moved:
                line = self.moved[key]
                return Accepted(reference=line.reference, currency=line.amount.currency if line.kind == "capture" else "")
            if key in self.declined:
                return Declined(code=self.declined[key])
            return NoSuchPayment()

    def settlements(self, day: date) -> list[SettlementLine]:
        with self._lock:
            if not self.reachable:
                raise GatewayUnavailable("the gateway is down")
            return sorted(
                (line for line in self.moved.values() if line.settled_at.date() == day), key=lambda l: l.business_id
            )

    # -- what tests look at -------------------------------------------------------------------
    def refunds_paid(self, refund_id: str) -> int:
        """How many times money went out for this refund (idempotency: never more than once)."""
        return 1 if refund_id in self.moved else 0

    def close(self) -> None:
        """Nothing to release (the worker closes its gateway on shutdown)."""
