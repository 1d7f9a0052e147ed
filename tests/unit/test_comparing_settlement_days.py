"""The daily comparison (`CompareSettlements`) reads the days around the one it compares: a
business id belongs to the day its first movement settled on, and is reported by that day's
comparison alone, whatever settled under it after midnight."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from activities.reconciliation import ReconciliationActivities
from domain.payments.gateway import SettlementLine
from domain.reconciliation.discrepancy import DiscrepancyKind
from domain.reconciliation.queries import SettlementDay
from tests.fakes import FakeDatabase, FakeUnitOfWork
from tests.unit.builders import eur

DAY = date(2025, 3, 1)


class ListingByDay:
    """A gateway whose settlement listing is fixed: the lines that settled on each day."""

    def __init__(self, *lines: SettlementLine) -> None:
        self.lines = lines

    def account(self) -> str:
        return "test:acct_fake"

    def settlements(self, day: date) -> list[SettlementLine]:
        return [line for line in self.lines if line.settled_at.date() == day]


def charge(reference: str, settled_at: datetime) -> SettlementLine:
    return SettlementLine(kind="capture", business_id="o-1/attempt-1", order_id="o-1", reference=reference,
                          amount=eur("10.00"), settled_at=settled_at)


def compared(gateway: ListingByDay, day: date) -> list[tuple[DiscrepancyKind, str]]:
    recon = ReconciliationActivities(lambda: FakeUnitOfWork(FakeDatabase()), gateway)  # type: ignore[arg-type]
    return sorted((finding.kind, str(finding.gateway)) for finding in recon.compare_settlements(SettlementDay(day=day)))


def test_a_second_charge_just_after_midnight_is_reported_with_the_first_by_its_day_and_not_again_the_next():
    before_midnight = datetime(2025, 3, 1, 23, 59, tzinfo=UTC)
    gateway = ListingByDay(charge("pi_1", before_midnight), charge("pi_2", before_midnight + timedelta(minutes=11)))

    assert compared(gateway, DAY) == [
        (DiscrepancyKind.DUPLICATE_AT_GATEWAY, "20.00 EUR"),  # both movements, under one id
        (DiscrepancyKind.MISSING_IN_PAYMENTS, "20.00 EUR"),  # this account's payments hold no record of it
    ]
    assert compared(gateway, DAY + timedelta(days=1)) == []  # the day before reported it, in full
