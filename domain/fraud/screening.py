"""RefundScreening: the domain service that decides whether a refund needs a person.

It looks across refunds (this one and the customer's recent ones), which no
single FraudReview can see, so it is a service rather than an aggregate method.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import ClassVar

from domain.shared.money import Money


@dataclass(frozen=True)
class Screening:
    reasons: tuple[str, ...]

    @property
    def needs_review(self) -> bool:
        return bool(self.reasons)


# A refund of this much or more needs a person, per currency: about 1,000 EUR in each
# (README "Fraud screening"). A currency missing here sends every refund to a person.
LARGE_REFUND: dict[str, Decimal] = {
    "EUR": Decimal("1000"), "USD": Decimal("1000"), "GBP": Decimal("1000"), "CHF": Decimal("1000"),
    "CAD": Decimal("1500"), "AUD": Decimal("1500"), "NZD": Decimal("1500"), "SGD": Decimal("1500"),
    "SEK": Decimal("10000"), "NOK": Decimal("10000"), "DKK": Decimal("7500"), "PLN": Decimal("4000"),
    "CZK": Decimal("25000"), "HKD": Decimal("8000"),
    "JPY": Decimal("150000"), "KRW": Decimal("1400000"), "ISK": Decimal("150000"),
    "BHD": Decimal("300"), "KWD": Decimal("300"), "JOD": Decimal("700"),
}


class RefundScreening:
    LARGE_REFUND: ClassVar[dict[str, Decimal]] = LARGE_REFUND
    FREQUENT_COUNT = 3  # the third refund ...
    FREQUENT_WINDOW = timedelta(days=7)  # ... within seven days

    def screen(self, amount: Money, approved_at: datetime, others: list[datetime]) -> Screening:
        """`others`: when the customer's other counted refunds were approved (before or
        after this one: screenings need not run in the order of approval)."""
        reasons: list[str] = []
        threshold = self.LARGE_REFUND.get(amount.currency)
        if threshold is None:
            reasons.append("no_threshold_for_currency")
        elif amount >= Money.of(threshold, amount.currency):
            reasons.append("large_amount")
        if self._frequent(approved_at, others):
            reasons.append("frequent_refunds")
        return Screening(reasons=tuple(reasons))

    def _frequent(self, approved_at: datetime, others: list[datetime]) -> bool:
        """Judged by approval times, not by the order screenings run in: this refund needs
        a person when some seven days hold it and enough others to make three. In approval
        order that is the third; when an earlier one is screened late, it is that one —
        either way, three refunds within seven days never all pass unseen."""
        near = sorted(at for at in others if abs(at - approved_at) <= self.FREQUENT_WINDOW)
        for start in [approved_at, *(at for at in near if at <= approved_at)]:
            within = [at for at in near if start <= at <= start + self.FREQUENT_WINDOW]
            if len(within) + 1 >= self.FREQUENT_COUNT:
                return True
        return False
