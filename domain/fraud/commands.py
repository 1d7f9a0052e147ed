"""Commands fraud decides."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from domain.shared.actor import Role
from domain.shared.messages import DERIVED_ID_MAX, TEXT_MAX, Command
from domain.shared.money import Money


class FraudCommand(Command):
    owner: ClassVar[str] = "fraud"
    refund_id: str = Field(min_length=1, max_length=DERIVED_ID_MAX)  # a cancellation's refund id is derived


class ScreenRefund(FraudCommand):
    """Does this approved refund need a person to look at it?"""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    order_id: str
    customer_id: str
    amount: Money
    approved_at: datetime
    # Money settleflow owes back because it cancelled a paid order (billing says so):
    # no review may hold it, so it is cleared without one.
    owed: bool = False


class ReviewDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ResolveFraudReview(FraudCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.FRAUD_ANALYST})
    decision: ReviewDecision
    note: str = Field(default="", max_length=TEXT_MAX)


class ExpireFraudReview(FraudCommand):
    """Nobody decided in time; fraud says what that means."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
