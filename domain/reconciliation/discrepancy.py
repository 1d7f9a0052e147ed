"""Discrepancy: one disagreement between settleflow's records and the gateway's (or money
held by a flow that no longer runs), kept open for support until someone resolves it.

The owner describes and flags; it never moves money and never decides for billing or
payments. One discrepancy per (kind, business id): finding it again while it is open changes
nothing, so support is told once. Found again by a pass issued after support resolved it (a
resumed flow gone again, the gateway moving money under that id again), it is open again and
recorded again (`DiscrepancyRecorded`, the fact support is told on); a pass issued before
the resolution changes nothing.
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
    DUPLICATE_AT_GATEWAY = "duplicate_at_gateway"  # the gateway moved money twice (or more) under one business id
    AMOUNT_DIFFERS = "amount_differs"
    CURRENCY_DIFFERS = "currency_differs"
    FLOW_GONE = "flow_gone"  # money reserved or in flight, and the flow that would finish it no longer runs
    # An order owes its customer money back (cancelled, parcel returned) and no refund is on its way.
    MONEY_OWED = "money_owed"
    # A refund the gateway paid out, then reversed (the card's bank sent it back): billing counts
    # it paid, and the customer has not been paid.
    REFUND_REVERSED = "refund_reversed"
    # A stop of a parcel billing asked for was never answered: the flow carrying it ended on the way.
    PARCEL_NOT_STOPPED = "parcel_not_stopped"
    # The gateway's settlements of a day could not be read: nothing of that day was compared.
    SETTLEMENTS_NOT_COMPARED = "settlements_not_compared"
    # The gateway refused to say what became of a request (e.g. a payment another account holds).
    LOOKUP_REFUSED = "lookup_refused"
    # A refund paid out that invoicing would not credit (no invoice, a credit beyond it): the
    # customer's books show no credit note for money that went back.
    REFUND_NOT_CREDITED = "refund_not_credited"


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
    found_at: datetime  # when it was found: first, or again after support resolved it
    status: DiscrepancyStatus = DiscrepancyStatus.OPEN
    resolved_by: str = ""
    resolved_at: datetime | None = None  # the last resolution (kept when found again after it)
    note: str = ""

    @classmethod
    def found(cls, command: RecordDiscrepancy) -> Discrepancy:
        kind = _kind_of(command)
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
        discrepancy._record_found(command)
        return discrepancy

    def found_again(self, command: RecordDiscrepancy) -> None:
        """Still open: already known, unless money moved again since (`_moved_again`): then it
        says what is found now, recorded again for support to be told. Resolved at or after the
        time this pass was issued: nothing changes. Resolved before it, and still a question
        (`_still_a_question`): found again since support dealt with it, so it is open again with
        what was found now, and recorded again. The last resolution is kept, for support to see
        what was done before."""
        _kind_of(command)
        if self.status is DiscrepancyStatus.OPEN:
            news = self._moved_again(command)
        else:
            resolved_before = self.resolved_at is not None and self.resolved_at < command.issued_at
            news = resolved_before and self._still_a_question(command)
        if not news:
            return
        self.status = DiscrepancyStatus.OPEN
        self.order_id, self.ours, self.gateway = command.order_id, command.ours, command.gateway
        self.detail, self.found_at = command.detail, command.issued_at
        self._record_found(command)

    def _moved_again(self, command: RecordDiscrepancy) -> bool:
        """Found with other money than support was told of (an amount that changed), or, for a
        duplicate, other movements (a third charge under one id, though of the same amount)."""
        if (command.ours, command.gateway) != (self.ours, self.gateway):
            return True
        return self.kind is DiscrepancyKind.DUPLICATE_AT_GATEWAY and command.detail != self.detail

    def _still_a_question(self, command: RecordDiscrepancy) -> bool:
        """A day still not compared is a question again whenever a pass fails to compare it;
        anything else support resolved is one again only when what is found differs: a day
        compared again finds the same lines, a reservation support dealt with is still held by
        the same gone run (a resumed flow gone again is another run: reopened), money owed that
        support paid back another way is the same amount owed since the same moment (owed
        again later — another refund declined — is another moment: reopened)."""
        if self.kind is DiscrepancyKind.SETTLEMENTS_NOT_COMPARED:
            return True
        return (command.detail, command.ours, command.gateway) != (self.detail, self.ours, self.gateway)

    def _record_found(self, command: RecordDiscrepancy) -> None:
        self.record(
            command,
            DiscrepancyRecorded(
                discrepancy_id=self.id,
                kind=self.kind.value,
                order_id=self.order_id,
                business_id=self.business_id,
                ours=self.ours,
                gateway=self.gateway,
                detail=self.detail,
            ),
        )

    def resolve(self, command: ResolveDiscrepancy) -> None:
        if self.status is DiscrepancyStatus.RESOLVED:
            raise InvalidCommand("already_resolved", f"discrepancy {self.id} was resolved by {self.resolved_by}")
        self.status = DiscrepancyStatus.RESOLVED
        self.resolved_by, self.resolved_at, self.note = str(command.actor), command.issued_at, command.note
        self.record(
            command, DiscrepancyResolved(discrepancy_id=self.id, resolved_by=self.resolved_by, note=command.note)
        )


def _kind_of(command: RecordDiscrepancy) -> DiscrepancyKind:
    """The command's kind, refused when unknown or when the id is not `kind:business-id`."""
    try:
        kind = DiscrepancyKind(command.kind)
    except ValueError:
        raise InvalidCommand("unknown_kind", f"no discrepancy of kind {command.kind!r}") from None
    if command.discrepancy_id != discrepancy_id(kind, command.business_id):
        raise InvalidCommand(
            "wrong_id", f"a {kind.value} discrepancy of {command.business_id} is {discrepancy_id(kind, command.business_id)}"
        )
    return kind
