"""Small builders for unit tests: commands with their trace fields filled in,
owners already brought to the state a test starts from, and one assertion that
a refused command changed nothing.

Nothing here does I/O or reads the clock: every time is a fixed, aware datetime.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from domain.billing.commands import (
    MarkOrderPaid,
    OrderLine,
    PlaceOrder,
    RecordDelivery,
    RecordShipment,
)
from domain.billing.order import Order
from domain.shared.actor import Actor, Role
from domain.shared.aggregate import AggregateRoot
from domain.shared.errors import DomainError
from domain.shared.messages import Command, Event
from domain.shared.money import Money
from tests.tokens import token_for

C = TypeVar("C", bound=Command)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

CUSTOMER_ID = "c-1"
CUSTOMER = Actor(role=Role.CUSTOMER, id=CUSTOMER_ID)
OTHER_CUSTOMER = Actor(role=Role.CUSTOMER, id="c-2")
SUPPORT = Actor(role=Role.SUPPORT, id="agent-7")
WAREHOUSE = Actor(role=Role.WAREHOUSE, id="dock-3")
FRAUD_ANALYST = Actor(role=Role.FRAUD_ANALYST, id="analyst-1")
SYSTEM = Actor.system("test-policy")

_ids = itertools.count(1)


def command(cls: type[C], *, actor: Actor = SYSTEM, issued_at: datetime = T0, **fields: Any) -> C:
    """Build a command with a fresh command id, an actor and an issue time.
    Any of the three can be overridden (`command_id=...`, `actor=...`, `issued_at=...`)."""
    fields.setdefault("command_id", f"{cls.__name__}-{next(_ids)}")
    if actor.role is not Role.SYSTEM:  # from outside: signed, as the guard requires
        fields.setdefault("credential", token_for(actor))
    return cls(actor=actor, issued_at=issued_at, **fields)


def money(amount: str | int, currency: str = "EUR") -> Money:
    return Money.of(amount, currency)


def eur(amount: str | int) -> Money:
    return Money.of(amount, "EUR")


def names(events: list[Event]) -> list[str]:
    return [type(event).__name__ for event in events]


def days(n: float) -> timedelta:
    return timedelta(days=n)


# -- billing orders in a given state -------------------------------------------------------
ORDER_ID = "o-1"


def place_order(
    *amounts: str,
    currency: str = "EUR",
    order_id: str = ORDER_ID,
    customer_id: str = CUSTOMER_ID,
    placed_at: datetime = T0,
) -> PlaceOrder:
    amounts = amounts or ("60.00", "40.00")
    return command(
        PlaceOrder,
        actor=CUSTOMER,
        issued_at=placed_at,
        order_id=order_id,
        customer_id=customer_id,
        lines=[OrderLine(description=f"item {i}", amount=Money.of(a, currency)) for i, a in enumerate(amounts, 1)],
    )


def placed_order(*amounts: str, currency: str = "EUR", placed_at: datetime = T0) -> Order:
    order = Order.place(place_order(*amounts, currency=currency, placed_at=placed_at))
    order.clear_events()
    return order


def paid_order(*amounts: str, currency: str = "EUR", placed_at: datetime = T0) -> Order:
    order = placed_order(*amounts, currency=currency, placed_at=placed_at)
    order.mark_paid(command(MarkOrderPaid, order_id=order.id, amount=order.total, payment_reference="ch_1"))
    order.clear_events()
    return order


def shipped_order(*amounts: str, currency: str = "EUR", shipped_at: datetime = T0) -> Order:
    order = paid_order(*amounts, currency=currency, placed_at=min(T0, shipped_at))
    order.record_shipment(command(RecordShipment, order_id=order.id, tracking="TRK-1", shipped_at=shipped_at))
    order.clear_events()
    return order


DELIVERED_AT = T0 + days(2)


def delivered_order(*amounts: str, currency: str = "EUR", delivered_at: datetime = DELIVERED_AT) -> Order:
    order = shipped_order(*amounts, currency=currency, shipped_at=min(T0, delivered_at))
    order.record_delivery(command(RecordDelivery, order_id=order.id, delivered_at=delivered_at, issued_at=delivered_at))
    order.clear_events()
    return order


# -- refusals --------------------------------------------------------------------------------
def assert_refused(
    aggregate: AggregateRoot,
    decide: Callable[[], object],
    error: type[DomainError],
    code: str,
) -> DomainError:
    """The owner refuses outright: the expected error and code, no event recorded,
    and the aggregate's state exactly as before."""
    state_before = aggregate.model_dump()
    events_before = aggregate.pending_events
    with pytest.raises(error) as refused:
        decide()
    assert refused.value.code == code, f"expected {code!r}, got {refused.value.code!r}: {refused.value.message}"
    assert aggregate.pending_events == events_before, "a refused command recorded an event"
    assert aggregate.model_dump() == state_before, "a refused command changed the state"
    return refused.value
