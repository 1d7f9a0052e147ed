"""The messages people and other processes exchange with the process managers:
what starts a workflow, what its Updates carry, what its `status` query answers.

They live outside the workflow modules on purpose. The workflow sandbox re-imports
a workflow's module for every run; a pydantic model defined there would have its
validators built again each time (measured: about a tenth of a worker's CPU, see
README "Performance"). Imported with `imports_passed_through`, they are built once
per process.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from domain.contracts import OPEN_REQUESTS_PER_READ, Actor, Money, ReviewDecision
from domain.shared.actor import Role
from domain.shared.messages import DerivedId, Id, Note, Text

# One definition of an id and a text: the very types the owners' commands use
# (domain/shared/text.py), so a request or an Update that passes here can always
# be turned into a command and recorded.
Reason = Text


def Token() -> Any:  # noqa: N802 - reads as a type in the models below
    """The sender's signed token (JWT), passed on to the command untouched: the owner's
    activity verifies it. Hidden from repr so that no log line shows it."""
    return Field(default=None, repr=False)


class InvalidRequest(Exception):
    """A start request or an Update argument that does not fit its message. Deliberately
    not a ValueError, so pydantic lets it through as it is: the workflows fail on it
    (INVALID_REQUEST), and an Update is refused with it before its validator runs."""


class Request(BaseModel):
    """What starts a process, or what an Update carries. One that does not validate raises
    InvalidRequest, naming every field that is wrong, on one line: a start request fails
    the workflow with it, an Update is refused with it."""

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_as_a_whole(cls, data: Any, handler: Any) -> Any:
        try:
            return handler(data)
        except ValidationError as bad:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in bad.errors()
            )
            raise InvalidRequest(f"invalid {cls.__name__}: {problems}") from None


# Every status a process shows (its `status` query and, unless passing, the FlowStatus
# search attribute). A test keeps it in step with the workflows.
FLOW_STATUSES = frozenset({
    "started",
    # RefundWorkflow
    "requested", "under_review", "sending", "completed", "rejected", "cancelled", "failed",
    # PaymentWorkflow
    "capturing", "recovering", "paid", "refunded", "returned", "abandoned",
    # ShipOrderWorkflow, ConfirmDeliveryWorkflow
    "shipping", "shipped", "stopped", "refused", "delivering", "waiting_for_shipment", "delivered",
    # waiting for the gateway's real answer (RefundWorkflow, PaymentWorkflow)
    "awaiting_reconciliation",
    # ReconciliationWorkflow, ResolveDiscrepancyWorkflow
    "asking_gateway", "comparing_settlements", "done", "not_all_recorded", "resolving", "resolved",
})
# Statuses a flow passes within one run of decisions, without waiting for anybody: the
# status query shows them, the FlowStatus search attribute does not (Process.set_status),
# so `starter.py list --status` does not take them.
PASSING_STATUSES = frozenset({"started", "requested", "shipping", "delivering"})
SEARCHABLE_STATUSES = FLOW_STATUSES - PASSING_STATUSES


class TrailView(BaseModel):
    """What every process shows: its status and the trail command → owner → event."""

    status: str
    trail: list[str]


# -- RefundWorkflow -----------------------------------------------------------------
CANCELLATION_REFUND = "-cancellation"  # the end of a cancelled order's refund id: `{order_id}-cancellation`


class RefundRequest(Request):
    refund_id: DerivedId  # a cancellation's is derived
    order_id: Id
    amount: Money | None = None  # None: everything still refundable
    reason: Reason
    requested_by: Actor
    token: str | None = Token()

    @model_validator(mode="after")
    def _cancellation_ids_are_settleflows_own(self) -> RefundRequest:
        # A cancelled order's refund is `refund-{order}-cancellation`, and owners answer a
        # command id they saw with its first answer: a refund someone else had started under
        # that id would answer the cancellation's steps with its own facts, and no money moved.
        if self.refund_id.endswith(CANCELLATION_REFUND) and self.requested_by.role is not Role.SYSTEM:
            raise InvalidRequest(
                f"invalid RefundRequest: refund_id: ids ending in {CANCELLATION_REFUND!r} are a cancelled "
                "order's, set by settleflow"
            )
        return self


class AddressedUpdate(Request):
    """An Update's argument, naming the flow it is for (its workflow id). The flow refuses one
    addressed to another (`Process.addressed_here`): the argument's bytes, encrypted, lifted from
    one flow's history and sent as another flow's Update would otherwise decide there in its
    signer's name. Settleflow's clients fill it in (adapters/temporal.py `AddressUpdates`)."""

    to_flow: str = ""


class ReviewResolution(AddressedUpdate):
    """An Update's argument: one that does not validate is refused before the validator runs."""

    decision: ReviewDecision
    reviewer: Actor
    note: Note = ""
    token: str | None = Token()


class RefundStatus(TrailView):
    refund_id: str
    order_id: str
    amount: Money | None = None
    reason: str = ""  # why it ended as it did (rejection code, decline code ...)


# -- PaymentWorkflow ----------------------------------------------------------------
class OrderRequest(Request):
    order_id: Id
    customer_id: Id
    amount: Money
    card_token: Id
    placed_by: Actor
    token: str | None = Token()
    placed_at: datetime | None = None  # None: placed when the request reached settleflow


class NewPaymentMethod(AddressedUpdate):
    card_token: Id
    given_by: Actor | None = None  # None: refused (old flows took it as system)
    token: str | None = Token()


class CancellationRequest(AddressedUpdate):
    requested_by: Actor
    reason: Reason = "cancelled on request"
    token: str | None = Token()


class PaymentStatus(TrailView):
    order_id: str
    amount: Money
    attempts: int = 0
    next_attempt_at: datetime | None = None
    decline_code: str = ""
    invoice_number: str = ""
    refund_workflow_id: str = ""
    reason: str = ""


# -- ShipOrderWorkflow, ConfirmDeliveryWorkflow -------------------------------------------
class ShipmentRequest(Request):
    order_id: Id
    tracking: Id
    shipped_at: datetime | None = None
    requested_by: Actor
    token: str | None = Token()
    # The warehouse's nth request for this order: one refused (not paid yet, a wrong date) may
    # be asked again, and is then a new question with commands of its own (`ask_again`).
    attempt: int = Field(1, ge=1, le=1000)


class DeliveryRequest(Request):
    order_id: Id
    delivered_at: datetime | None = None
    requested_by: Actor
    token: str | None = Token()
    attempt: int = Field(1, ge=1, le=1000)  # as for ShipmentRequest


def ask_again(step: str, attempt: int) -> str:
    """A step's name in the nth request for the same fact: the first keeps its plain name
    (the ids of flows already recorded), a later one gets commands of its own, since the
    owners' inboxes answer a command id seen before with its first answer."""
    return step if attempt == 1 else f"{step}-{attempt}"


# -- ReconciliationWorkflow ----------------------------------------------------------------
MAX_LOOKUPS_PER_PASS = OPEN_REQUESTS_PER_READ  # a pass cannot ask about more than one read returns


class ReconciliationRun(BaseModel):
    """What a scheduled run does: the frequent pass always; the daily pass (settlements and
    stranded reservations) when `daily`, for `settlement_day` (default: yesterday, UTC)."""

    daily: bool = False
    settlement_day: date | None = None
    # Gateway look-ups one pass makes at most (each is a few events in the run's history, which
    # Temporal caps); more open requests than that are asked about by the passes after it.
    lookups_per_pass: int = Field(500, ge=1, le=MAX_LOOKUPS_PER_PASS)


class ReconciliationResult(TrailView):
    asked: int = 0  # unknown or long-sent items looked up at the gateway
    answered: int = 0  # ... that payments could decide on
    left_open: int = 0  # ... the gateway could not answer yet, or not asked this pass (asked again next run)
    discrepancies: int = 0  # new discrepancies recorded (support told once each)
    credited: int = 0  # credit notes invoicing issued for refunds paid out without one
    not_recorded: list[str] = []  # discrepancies that could not be recorded (the run ends failed)
    not_told: list[str] = []  # ... recorded, support not told of them (the run ends failed)


class DiscrepancyResolution(Request):
    """Support says what was done about a discrepancy (`starter.py resolve-discrepancy`)."""

    discrepancy_id: DerivedId
    note: Reason
    resolved_by: Actor
    token: str | None = Token()
