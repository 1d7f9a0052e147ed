"""RefundScreening: the domain service that decides whether a refund needs a person.

It looks across refunds (this one and the customer's recent ones), which no
single FraudReview can see, so it is a service rather than an aggregate method.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from domain.shared.money import Money


@dataclass(frozen=True)
class Screening:
    reasons: tuple[str, ...]

    @property
    def needs_review(self) -> bool:
        return bool(self.reasons)


class RefundScreening:
    LARGE_REFUND = Decimal("1000.00")  # in the order's own currency
    FREQUENT_COUNT = 3  # the third approved refund ...
    FREQUENT_WINDOW = timedelta(days=7)  # ... within seven days

    def screen(self, amount: Money, approved_at: datetime, earlier_approvals: list[datetime]) -> Screening:
        reasons: list[str] = []
        if amount >= Money.of(self.LARGE_REFUND, amount.currency):
            reasons.append("large_amount")
        window_start = approved_at - self.FREQUENT_WINDOW
        recent = [at for at in earlier_approvals if window_start <= at <= approved_at]
        if len(recent) + 1 >= self.FREQUENT_COUNT:
            reasons.append("frequent_refunds")
        return Screening(reasons=tuple(reasons))
