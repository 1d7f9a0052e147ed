"""Commands fraud decides."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from domain.shared.actor import Role
from domain.shared.messages import Command, DerivedId, Id, Note, Text
from domain.shared.money import Money


class FraudCommand(Command):
    owner: ClassVar[str] = "fraud"
    refund_id: DerivedId  # a cancellation's refund id is derived


class ScreenRefund(FraudCommand):
    """Does this approved refund need a person to look at it?"""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    order_id: Id
    customer_id: Id
    amount: Money
    approved_at: datetime
    # Money settleflow owes back because it cancelled a paid order (billing says so):
    # no review may hold it, so it is cleared without one.
    owed: bool = False
    requested_by: str = ""  # who asked for the refund: they may not decide its review


class ReviewDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ResolveFraudReview(FraudCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.FRAUD_ANALYST})
    decision: ReviewDecision
    note: Note = ""


class ExpireFraudReview(FraudCommand):
    """Nobody decided in time; fraud says what that means."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})


class WithdrawRefund(FraudCommand):
    """The refund will not be paid after all (cancelled, or declined by the gateway):
    fraud no longer counts it among the customer's refunds."""

    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    reason: Text
