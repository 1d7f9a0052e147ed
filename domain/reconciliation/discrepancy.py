"""Discrepancy: one disagreement between settleflow's records and the gateway's (or money
held by a flow that no longer runs), kept open for support until someone resolves it.

The owner describes and flags; it never moves money and never decides for billing or
payments. One discrepancy per (kind, business id): finding it again changes nothing, so
support is told once.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from domain.reconciliation.commands import RecordDiscrepancy, ResolveDiscrepancy, discrepancy_id
from domain.reconciliation.events import DiscrepancyRecorded, DiscrepancyResolved
from domain.shared.aggregate import AggregateRoot
from domain.shared.errors import InvalidCommand
from domain.shared.money import Money


class DiscrepancyKind(StrEnum):
    MISSING_AT_GATEWAY = "missing_at_gateway"  # settleflow says it moved; the gateway's listing has nothing
    MISSING_IN_PAYMENTS = "missing_in_payments"  # the gateway moved money payments has no settled record of
    MISSING_IN_BILLING = "missing_in_billing"  # the gateway moved money billing's ledger does not show
    AMOUNT_DIFFERS = "amount_differs"
    CURRENCY_DIFFERS = "currency_differs"
    FLOW_GONE = "flow_gone"  # money reserved or in flight, and the flow that would finish it no longer runs


class DiscrepancyStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Discrepancy(AggregateRoot):
    kind: DiscrepancyKind
    order_id: str
    business_id: str
    ours: Money | None = None
    gateway: Money | None = None
    detail: str
    found_at: datetime
    status: DiscrepancyStatus = DiscrepancyStatus.OPEN
    resolved_by: str = ""
    resolved_at: datetime | None = None
    note: str = ""

    @classmethod
    def found(cls, command: RecordDiscrepancy) -> Discrepancy:
        try:
            kind = DiscrepancyKind(command.kind)
        except ValueError:
            raise InvalidCommand("unknown_kind", f"no discrepancy of kind {command.kind!r}") from None
        if command.discrepancy_id != discrepancy_id(kind, command.business_id):
            raise InvalidCommand(
                "wrong_id", f"a {kind.value} discrepancy of {command.business_id} is {discrepancy_id(kind, command.business_id)}"
            )
        discrepancy = cls(
            id=command.discrepancy_id,
            kind=kind,
            order_id=command.order_id,
            business_id=command.business_id,
            ours=command.ours,
            gateway=command.gateway,
            detail=command.detail,
            found_at=command.issued_at,
        )
        discrepancy.record(
            command,
            DiscrepancyRecorded(
                discrepancy_id=discrepancy.id,
                kind=kind.value,
                order_id=command.order_id,
                business_id=command.business_id,
                ours=command.ours,
                gateway=command.gateway,
                detail=command.detail,
            ),
        )
        return discrepancy

    def resolve(self, command: ResolveDiscrepancy) -> None:
        if self.status is DiscrepancyStatus.RESOLVED:
            raise InvalidCommand("already_resolved", f"discrepancy {self.id} was resolved by {self.resolved_by}")
        self.status = DiscrepancyStatus.RESOLVED
        self.resolved_by, self.resolved_at, self.note = str(command.actor), command.issued_at, command.note
        self.record(
            command, DiscrepancyResolved(discrepancy_id=self.id, resolved_by=self.resolved_by, note=command.note)
        )
