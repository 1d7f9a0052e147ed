"""FraudReview: fraud's record of one approved refund, and of any human review of it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from domain.fraud.commands import ExpireFraudReview, ResolveFraudReview, ReviewDecision, ScreenRefund, WithdrawRefund
from domain.fraud.events import FraudReviewOpened, RefundCleared, RefundWithdrawn, ReviewApproved, ReviewRejected
from domain.fraud.screening import RefundScreening, Screening
from domain.shared.aggregate import AggregateRoot
from domain.shared.errors import InvalidCommand, NotAuthorized
from domain.shared.money import Money


class ReviewStatus(StrEnum):
    CLEARED = "cleared"  # no person needed
    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"  # cleared or approved, but then cancelled or failed: not paid


# The refunds "the third refund within seven days" counts: approved for money and not
# (yet) known to be rejected, cancelled or failed. An open review counts: it may be paid.
COUNTED = frozenset({ReviewStatus.CLEARED, ReviewStatus.OPEN, ReviewStatus.APPROVED})


class FraudReview(AggregateRoot):
    order_id: str
    customer_id: str
    amount: Money
    approved_at: datetime
    status: ReviewStatus
    reasons: list[str] = []
    decided_by: str = ""
    note: str = ""
    requested_by: str = ""  # the id of whoever asked for the refund

    @classmethod
    def screen(
        cls, command: ScreenRefund, customer_history: list[FraudReview], screening: RefundScreening
    ) -> FraudReview:
        others = [r.approved_at for r in customer_history if r.id != command.refund_id and r.status in COUNTED]
        verdict = screening.screen(command.amount, command.approved_at, others)
        if command.owed:
            # A person may decide how owed money goes back, never whether: no review.
            verdict = Screening(reasons=())
        review = cls(
            id=command.refund_id,
            order_id=command.order_id,
            customer_id=command.customer_id,
            amount=command.amount,
            approved_at=command.approved_at,
            status=ReviewStatus.OPEN if verdict.needs_review else ReviewStatus.CLEARED,
            reasons=list(verdict.reasons),
            requested_by=command.requested_by,
        )
        if verdict.needs_review:
            review.record(
                command,
                FraudReviewOpened(
                    refund_id=review.id,
                    order_id=review.order_id,
                    customer_id=review.customer_id,
                    amount=review.amount,
                    reasons=review.reasons,
                ),
            )
        else:
            review.record(command, RefundCleared(refund_id=review.id, order_id=review.order_id))
        return review

    def resolve(self, command: ResolveFraudReview) -> None:
        self._must_be_open()
        if self.requested_by and command.actor.id == self.requested_by:
            # Separation of duties: the person who asked for the money never approves it.
            raise NotAuthorized("own_refund", f"{command.actor.id} requested refund {self.id} and may not decide its review")
        self.decided_by, self.note = str(command.actor), command.note
        if command.decision is ReviewDecision.APPROVE:
            self.status = ReviewStatus.APPROVED
            self.record(command, ReviewApproved(refund_id=self.id, reviewer=self.decided_by, note=command.note))
        else:
            self.status = ReviewStatus.REJECTED
            self.record(
                command,
                ReviewRejected(
                    refund_id=self.id, reviewer=self.decided_by, reason="rejected_by_analyst", note=command.note
                ),
            )

    def expire(self, command: ExpireFraudReview) -> None:
        """An unreviewed refund is not paid: expiry counts as a rejection."""
        self._must_be_open()
        self.status, self.decided_by = ReviewStatus.EXPIRED, str(command.actor)
        self.record(
            command,
            ReviewRejected(refund_id=self.id, reviewer=self.decided_by, reason="review_expired", note=""),
        )

    def withdraw(self, command: WithdrawRefund) -> None:
        """The refund will not be paid. One fraud already rejected does not count anyway,
        and hearing it twice changes nothing."""
        if self.status not in COUNTED:
            return
        self.status = ReviewStatus.WITHDRAWN
        self.record(command, RefundWithdrawn(refund_id=self.id, reason=command.reason))

    def _must_be_open(self) -> None:
        if self.status is not ReviewStatus.OPEN:
            raise InvalidCommand("review_not_open", f"the review of refund {self.id} is {self.status.value}")
