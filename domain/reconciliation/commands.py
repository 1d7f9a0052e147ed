"""Commands the reconciliation owner decides: record a discrepancy, resolve one."""

from __future__ import annotations

from typing import ClassVar

from typing import Annotated

from pydantic import AfterValidator, Field

from domain.shared.actor import Role
from domain.shared.messages import DERIVED_ID_MAX, Command, DerivedId, Text
from domain.shared.text import storable
from domain.shared.money import Money


def discrepancy_id(kind: str, business_id: str) -> str:
    """The same disagreement found again is the same discrepancy."""
    return f"{kind}:{business_id}"


class ReconciliationCommand(Command):
    owner: ClassVar[str] = "reconciliation"
    discrepancy_id: DerivedId


class RecordDiscrepancy(ReconciliationCommand):
    """Reconciliation found records that disagree (or money held by a flow that is gone).
    It describes what it saw; it changes no money."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    kind: str = Field(min_length=1, max_length=100)
    # The order it concerns; "" for one about no single order (a day's settlements not compared).
    order_id: Annotated[str, Field(max_length=DERIVED_ID_MAX), AfterValidator(storable)]
    business_id: DerivedId  # the refund id or the capture attempt id (or the day, for a day's settlements)
    ours: Money | None = None  # what settleflow's records say (None: nothing)
    gateway: Money | None = None  # what the gateway's records say (None: nothing)
    detail: Text


class ResolveDiscrepancy(ReconciliationCommand):
    """Support looked into a discrepancy and says what was done about it."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SUPPORT})
    note: Text
