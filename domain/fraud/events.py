"""Facts fraud records."""

from __future__ import annotations

from typing import Literal

from domain.shared.messages import Event
from domain.shared.money import Money


class RefundCleared(Event):
    type: Literal["RefundCleared"] = "RefundCleared"
    refund_id: str
    order_id: str


class FraudReviewOpened(Event):
    type: Literal["FraudReviewOpened"] = "FraudReviewOpened"
    refund_id: str
    order_id: str
    customer_id: str
    amount: Money
    reasons: list[str]


class ReviewApproved(Event):
    type: Literal["ReviewApproved"] = "ReviewApproved"
    refund_id: str
    reviewer: str
    note: str


class ReviewRejected(Event):
    type: Literal["ReviewRejected"] = "ReviewRejected"
    refund_id: str
    reviewer: str
    reason: str  # "rejected_by_analyst" or "review_expired"
    note: str


class RefundWithdrawn(Event):
    """A screened refund will not be paid: it no longer counts as one of the customer's refunds."""

    type: Literal["RefundWithdrawn"] = "RefundWithdrawn"
    refund_id: str
    reason: str
