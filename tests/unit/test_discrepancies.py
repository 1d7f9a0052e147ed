"""The reconciliation owner: discrepancies described once, resolved by support, and the daily
comparison of the ledgers with the gateway's settlement listing."""

from __future__ import annotations

from datetime import UTC, date, datetime

from domain.payments.gateway import SettlementLine
from domain.reconciliation.commands import RecordDiscrepancy, ResolveDiscrepancy, discrepancy_id
from domain.reconciliation.discrepancy import Discrepancy, DiscrepancyKind, DiscrepancyStatus
from domain.reconciliation.settlement import LedgerEntry, compare
from domain.shared.errors import InvalidCommand
from domain.shared.money import Money
from tests.unit.builders import SUPPORT, assert_refused, command, eur, names

DAY = date(2025, 3, 1)
NOON = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def record(kind: str = "flow_gone", business_id: str = "r-1") -> RecordDiscrepancy:
    return command(
        RecordDiscrepancy,
        discrepancy_id=discrepancy_id(kind, business_id),
        kind=kind,
        order_id="o-1",
        business_id=business_id,
        ours=eur("30.00"),
        detail="billing holds 30.00 EUR reserved; its flow was terminated.",
    )


def line(kind: str, business_id: str, amount: str, currency: str = "EUR", at: datetime = NOON) -> SettlementLine:
    return SettlementLine(
        kind=kind, business_id=business_id, order_id="o-1", reference=f"x_{business_id}",
        amount=Money.of(amount, currency), settled_at=at,
    )


def entry(kind: str, business_id: str, amount: str, billed: str | None = "same") -> LedgerEntry:
    return LedgerEntry(
        kind=kind, business_id=business_id, order_id="o-1", amount=eur(amount), sent_at=NOON,
        billed=eur(amount) if billed == "same" else (eur(billed) if billed else None),
    )


def test_a_discrepancy_is_recorded_open_with_what_was_found():
    found = Discrepancy.found(record())
    assert names(found.pending_events) == ["DiscrepancyRecorded"]
    assert (found.id, found.status, found.ours) == ("flow_gone:r-1", DiscrepancyStatus.OPEN, eur("30.00"))


def test_a_discrepancy_of_an_unknown_kind_or_with_a_made_up_id_is_refused():
    bad_kind = record().model_copy(update={"kind": "looks_odd", "discrepancy_id": "looks_odd:r-1"})
    wrong_id = record().model_copy(update={"discrepancy_id": "something-else"})
    for bad, code in ((bad_kind, "unknown_kind"), (wrong_id, "wrong_id")):
        try:
            Discrepancy.found(bad)
        except InvalidCommand as refused:
            assert refused.code == code
        else:
            raise AssertionError(f"{bad} was accepted")


def test_support_resolves_a_discrepancy_once_with_a_note():
    found = Discrepancy.found(record())
    found.clear_events()
    resolve = command(ResolveDiscrepancy, actor=SUPPORT, discrepancy_id=found.id, note="refunded by hand")
    found.resolve(resolve)
    assert names(found.pending_events) == ["DiscrepancyResolved"]
    assert (found.status, found.resolved_by, found.note) == (DiscrepancyStatus.RESOLVED, "support:agent-7", "refunded by hand")
    found.clear_events()
    assert_refused(found, lambda: found.resolve(resolve), InvalidCommand, "already_resolved")


def test_ledgers_that_agree_with_the_listing_yield_no_discrepancy():
    gateway = [line("capture", "a-1", "100.00"), line("refund", "r-1", "30.00")]
    ours = [entry("capture", "a-1", "100.00"), entry("refund", "r-1", "30.00")]
    assert compare(DAY, gateway, ours) == []


def test_each_kind_of_disagreement_is_found_once():
    gateway = [
        line("refund", "r-stray", "10.00"),  # payments has nothing
        line("refund", "r-amount", "31.00"),  # payments says 30.00
        line("capture", "a-currency", "100.00", "USD"),  # payments says EUR
        line("refund", "r-unbilled", "5.00"),  # billing has not completed it
    ]
    ours = [
        entry("refund", "r-amount", "30.00"),
        entry("capture", "a-currency", "100.00"),
        entry("refund", "r-unbilled", "5.00", billed=None),
        entry("refund", "r-lost", "7.00"),  # the gateway has nothing
    ]
    found = {(f.kind, f.business_id) for f in compare(DAY, gateway, ours)}
    assert found == {
        (DiscrepancyKind.MISSING_IN_PAYMENTS, "r-stray"),
        (DiscrepancyKind.AMOUNT_DIFFERS, "r-amount"),
        (DiscrepancyKind.CURRENCY_DIFFERS, "a-currency"),
        (DiscrepancyKind.MISSING_IN_BILLING, "r-unbilled"),
        (DiscrepancyKind.MISSING_AT_GATEWAY, "r-lost"),
    }


def test_a_movement_settled_after_midnight_is_not_missing_from_the_day_it_was_sent():
    next_morning = datetime(2025, 3, 2, 0, 5, tzinfo=UTC)
    assert compare(DAY, [line("refund", "r-1", "30.00", at=next_morning)], [entry("refund", "r-1", "30.00")]) == []
