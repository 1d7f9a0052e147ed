"""Fraud's activities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities.handling import decide
from domain.contracts import Outcome
from domain.fraud.commands import ExpireFraudReview, ResolveFraudReview, ScreenRefund, WithdrawRefund
from domain.fraud.review import FraudReview
from domain.fraud.screening import RefundScreening


class FraudActivities:
    def __init__(self, uow_factory: Callable[[], Any]) -> None:
        self.uow = uow_factory
        self.screening = RefundScreening()

    @activity.defn(name=ScreenRefund.activity_name())
    def screen_refund(self, command: ScreenRefund) -> Outcome:
        return decide(
            self.uow,
            command,
            lambda uow: uow.fraud_reviews.add_new(
                FraudReview.screen(command, uow.fraud_reviews.for_customer(command.customer_id), self.screening)
            ),
        )

    @activity.defn(name=ResolveFraudReview.activity_name())
    def resolve_fraud_review(self, command: ResolveFraudReview) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.fraud_reviews.get(command.refund_id).resolve(command))

    @activity.defn(name=ExpireFraudReview.activity_name())
    def expire_fraud_review(self, command: ExpireFraudReview) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.fraud_reviews.get(command.refund_id).expire(command))

    @activity.defn(name=WithdrawRefund.activity_name())
    def withdraw_refund(self, command: WithdrawRefund) -> Outcome:
        # A refund fraud never screened (billing rejected it first) is in no history: nothing to do.
        return decide(self.uow, command, lambda uow: self._withdraw(uow, command))

    @staticmethod
    def _withdraw(uow: Any, command: WithdrawRefund) -> None:
        if (review := uow.fraud_reviews.find(command.refund_id)) is not None:
            review.withdraw(command)
