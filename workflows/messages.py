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

from domain.contracts import Actor, Money, ReviewDecision
from domain.shared.messages import DERIVED_ID_MAX, ID_MAX, TEXT_MAX

Id = Annotated[str, Field(min_length=1, max_length=ID_MAX)]
Reason = Annotated[str, Field(min_length=1, max_length=TEXT_MAX)]


class InvalidRequest(Exception):
    """A start request that does not fit its message. Deliberately not a ValueError, so
    pydantic lets it through as it is, and the workflows fail on it (INVALID_REQUEST)."""


class Request(BaseModel):
    """What starts a process. One that does not validate raises InvalidRequest, naming
    every field that is wrong, on one line."""

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


class TrailView(BaseModel):
    """What every process shows: its status and the trail command → owner → event."""

    status: str
    trail: list[str]


# -- RefundWorkflow -----------------------------------------------------------------
class RefundRequest(Request):
    refund_id: Annotated[str, Field(min_length=1, max_length=DERIVED_ID_MAX)]  # a cancellation's is derived
    order_id: Id
    amount: Money | None = None  # None: everything still refundable
    reason: Reason
    requested_by: Actor


class ReviewResolution(BaseModel):
    decision: ReviewDecision
    reviewer: Actor
    note: str = ""


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


class NewPaymentMethod(BaseModel):
    card_token: str
    given_by: Actor | None = None


class CancellationRequest(BaseModel):
    requested_by: Actor
    reason: str = "cancelled on request"


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


class DeliveryRequest(Request):
    order_id: Id
    delivered_at: datetime | None = None
    requested_by: Actor


# -- ReconciliationWorkflow ----------------------------------------------------------------
class ReconciliationRun(BaseModel):
    """What a scheduled run does: the frequent pass always; the daily pass (settlements and
    stranded reservations) when `daily`, for `settlement_day` (default: yesterday, UTC)."""

    daily: bool = False
    settlement_day: date | None = None


class ReconciliationResult(TrailView):
    asked: int = 0  # unknown or long-sent items looked up at the gateway
    answered: int = 0  # ... that payments could decide on
    left_open: int = 0  # ... the gateway could not answer yet (asked again next run)
    discrepancies: int = 0  # new discrepancies recorded (support told once each)


class DiscrepancyResolution(Request):
    """Support says what was done about a discrepancy (`starter.py resolve-discrepancy`)."""

    discrepancy_id: Annotated[str, Field(min_length=1, max_length=DERIVED_ID_MAX)]
    note: Reason
    resolved_by: Actor
