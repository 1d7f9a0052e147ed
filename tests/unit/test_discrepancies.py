"""The reconciliation owner: discrepancies described once, resolved by support, and the daily
comparison of the ledgers with the gateway's settlement listing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from domain.payments.gateway import Accepted, SettlementLine
from domain.reconciliation.commands import RecordDiscrepancy, ResolveDiscrepancy, discrepancy_id
from domain.reconciliation.discrepancy import Discrepancy, DiscrepancyKind, DiscrepancyStatus
from domain.reconciliation.settlement import LedgerEntry, compare, ledger_entries
from domain.shared.errors import InvalidCommand
from domain.shared.money import Money
from tests.unit.builders import SUPPORT, T0, assert_refused, command, delivered_order, eur, names
from tests.unit.test_order_refunds import approve, complete
from tests.unit.test_payment import captured_payment, refund_cmd

DAY = date(2025, 3, 1)
NOON = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def record(
    kind: str = "flow_gone", business_id: str = "r-1", issued_at: datetime = T0,
    detail: str = "billing holds 30.00 EUR reserved; its flow was terminated.",
) -> RecordDiscrepancy:
    return command(
        RecordDiscrepancy,
        issued_at=issued_at,
        discrepancy_id=discrepancy_id(kind, business_id),
        kind=kind,
        order_id="o-1",
        business_id=business_id,
        ours=eur("30.00"),
        detail=detail,
    )


def resolve(discrepancy: Discrepancy, at: datetime, note: str = "resumed refund-r-1, ticket 881") -> None:
    discrepancy.resolve(
        command(ResolveDiscrepancy, actor=SUPPORT, issued_at=at, discrepancy_id=discrepancy.id, note=note)
    )


def line(
    kind: str, business_id: str, amount: str, currency: str = "EUR", at: datetime = NOON, reference: str | None = None,
) -> SettlementLine:
    return SettlementLine(
        kind=kind, business_id=business_id, order_id="o-1", reference=reference or f"x_{business_id}",
        amount=Money.of(amount, currency), settled_at=at,
    )


def entry(kind: str, business_id: str, amount: str, billed: str | None = "same", reference: str = "") -> LedgerEntry:
    return LedgerEntry(
        kind=kind, business_id=business_id, order_id="o-1", amount=eur(amount), sent_at=NOON,
        billed=eur(amount) if billed == "same" else (eur(billed) if billed else None), reference=reference,
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


# -- found again --------------------------------------------------------------------------------
def test_a_discrepancy_found_again_after_support_resolved_it_is_open_again_and_recorded_again():
    discrepancy = Discrepancy.found(record(issued_at=T0))
    resolve(discrepancy, at=T0 + timedelta(hours=3))  # support resumed the flow, then resolved
    discrepancy.clear_events()

    # The resumed flow was terminated again: the next daily pass finds the same reservation.
    next_pass = T0 + timedelta(days=1)
    failed = "billing holds 30.00 EUR reserved; its flow failed."
    discrepancy.found_again(record(issued_at=next_pass, detail=failed))

    assert names(discrepancy.pending_events) == ["DiscrepancyRecorded"]  # what has support told
    [recorded] = discrepancy.pending_events
    assert (recorded.discrepancy_id, recorded.detail) == ("flow_gone:r-1", failed)
    assert (discrepancy.status, discrepancy.found_at, discrepancy.detail) == (DiscrepancyStatus.OPEN, next_pass, failed)
    # What support did last time stays in view, and it can be resolved again.
    assert (discrepancy.resolved_by, discrepancy.note) == ("support:agent-7", "resumed refund-r-1, ticket 881")
    discrepancy.clear_events()
    resolve(discrepancy, at=next_pass + timedelta(hours=1), note="refunded by hand, ticket 902")
    assert (discrepancy.status, discrepancy.note) == (DiscrepancyStatus.RESOLVED, "refunded by hand, ticket 902")


def test_an_open_duplicate_found_with_another_movement_tells_support_again():
    first = "the gateway settled 120.00 EUR for capture a-1 (pi_2): another movement under its id"
    discrepancy = Discrepancy.found(record(kind="duplicate_at_gateway", business_id="a-1", detail=first))
    discrepancy.clear_events()

    discrepancy.found_again(record(kind="duplicate_at_gateway", business_id="a-1", detail=first,
                                   issued_at=T0 + timedelta(days=1)))  # the same day compared again
    assert discrepancy.pending_events == []

    third = "the gateway settled 120.00 EUR for capture a-1 (pi_3): another movement under its id"
    discrepancy.found_again(record(kind="duplicate_at_gateway", business_id="a-1", detail=third,
                                   issued_at=T0 + timedelta(days=2)))  # a third charge, still open
    assert names(discrepancy.pending_events) == ["DiscrepancyRecorded"]
    assert (discrepancy.status, discrepancy.detail) == (DiscrepancyStatus.OPEN, third)


def test_a_discrepancy_found_again_while_it_is_open_changes_nothing():
    discrepancy = Discrepancy.found(record(issued_at=T0))
    discrepancy.clear_events()
    before = discrepancy.model_dump()

    discrepancy.found_again(record(issued_at=T0 + timedelta(days=1), detail="its flow failed."))

    assert discrepancy.pending_events == []
    assert discrepancy.model_dump() == before


def test_a_discrepancy_found_by_a_pass_issued_before_or_when_support_resolved_it_changes_nothing():
    resolved_at = T0 + timedelta(hours=3)
    for issued_at in (resolved_at - timedelta(minutes=1), resolved_at):  # a pass that began before it
        discrepancy = Discrepancy.found(record(issued_at=T0))
        resolve(discrepancy, at=resolved_at)
        discrepancy.clear_events()
        before = discrepancy.model_dump()

        discrepancy.found_again(record(issued_at=issued_at))

        assert discrepancy.pending_events == [], issued_at
        assert discrepancy.model_dump() == before


def test_a_settlement_disagreement_support_resolved_is_open_again_only_when_what_is_found_differs():
    duplicate = "the gateway refunded r-1 twice: re_1 30.00 EUR, re_2 30.00 EUR (60.00 EUR in all)."
    discrepancy = Discrepancy.found(record(kind="duplicate_at_gateway", detail=duplicate))
    resolve(discrepancy, at=T0 + timedelta(hours=3), note="30.00 EUR charged back to the customer")
    discrepancy.clear_events()

    # The day compared again (compare-settlements) finds the same lines: nothing new for support.
    discrepancy.found_again(record(kind="duplicate_at_gateway", issued_at=T0 + timedelta(days=1), detail=duplicate))
    assert (discrepancy.pending_events, discrepancy.status) == ([], DiscrepancyStatus.RESOLVED)

    # A third refund under the same id is news.
    thrice = duplicate.replace("twice", "three times")
    discrepancy.found_again(record(kind="duplicate_at_gateway", issued_at=T0 + timedelta(days=2), detail=thrice))
    assert names(discrepancy.pending_events) == ["DiscrepancyRecorded"]
    assert (discrepancy.status, discrepancy.detail) == (DiscrepancyStatus.OPEN, thrice)


def test_a_day_whose_settlements_were_not_compared_is_a_discrepancy_of_no_single_order():
    not_compared = command(
        RecordDiscrepancy, discrepancy_id=discrepancy_id("settlements_not_compared", "2026-11-30"),
        kind="settlements_not_compared", order_id="", business_id="2026-11-30",
        detail="the gateway's settlements of 2026-11-30 could not be read.",
    )
    found = Discrepancy.found(not_compared)
    assert (found.id, found.order_id, names(found.pending_events)) == (
        "settlements_not_compared:2026-11-30", "", ["DiscrepancyRecorded"])


# -- the daily comparison ----------------------------------------------------------------------
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


def test_two_refunds_the_gateway_paid_under_one_refund_id_are_a_duplicate_naming_both_references():
    gateway = [line("refund", "r-1", "30.00", reference="re_1"), line("refund", "r-1", "30.00", reference="re_2")]

    findings = compare(DAY, gateway, [entry("refund", "r-1", "30.00")])

    duplicate = [f for f in findings if f.kind is DiscrepancyKind.DUPLICATE_AT_GATEWAY]
    assert [(f.business_id, f.ours, f.gateway) for f in duplicate] == [("r-1", eur("30.00"), eur("60.00"))]
    assert "re_1" in duplicate[0].detail and "re_2" in duplicate[0].detail and "60.00 EUR" in duplicate[0].detail
    # The amounts are compared on what moved in all: 60.00 went out for a refund of 30.00.
    assert {(f.kind, f.ours, f.gateway) for f in findings} == {
        (DiscrepancyKind.DUPLICATE_AT_GATEWAY, eur("30.00"), eur("60.00")),
        (DiscrepancyKind.AMOUNT_DIFFERS, eur("30.00"), eur("60.00")),
    }


def test_two_captures_the_gateway_charged_for_one_attempt_are_a_duplicate_naming_both_references():
    attempt = "payment-o-1/capture"
    gateway = [
        line("capture", attempt, "100.00", reference="pi_1"),
        line("capture", attempt, "100.00", reference="pi_2"),
    ]

    findings = compare(DAY, gateway, [entry("capture", attempt, "100.00")])

    [duplicate] = [f for f in findings if f.kind is DiscrepancyKind.DUPLICATE_AT_GATEWAY]
    assert (duplicate.business_id, duplicate.gateway) == (attempt, eur("200.00"))
    assert "pi_1" in duplicate.detail and "pi_2" in duplicate.detail


def test_a_second_movement_days_after_the_first_is_a_duplicate_not_a_movement_payments_does_not_know():
    # The first charge settled (and was compared) days ago; this day's listing holds only the
    # second, under the same attempt id and another PaymentIntent.
    attempt = "payment-o-1/capture"
    gateway = [line("capture", attempt, "100.00", reference="pi_2")]

    findings = compare(DAY, gateway, [entry("capture", attempt, "100.00", reference="pi_1")])

    [duplicate] = findings
    assert (duplicate.kind, duplicate.business_id, duplicate.ours, duplicate.gateway) == (
        DiscrepancyKind.DUPLICATE_AT_GATEWAY, attempt, eur("100.00"), eur("100.00"))
    assert "pi_2" in duplicate.detail and "pi_1" in duplicate.detail and "another movement" in duplicate.detail


def test_a_later_second_movement_of_another_amount_is_only_a_duplicate_not_an_amount_payments_got_wrong():
    attempt = "payment-o-1/capture"
    found = compare(DAY, [line("capture", attempt, "120.00", reference="pi_2")],
                    [entry("capture", attempt, "100.00", billed=None, reference="pi_1")])

    assert [(f.kind, f.ours, f.gateway) for f in found] == [
        (DiscrepancyKind.DUPLICATE_AT_GATEWAY, eur("100.00"), eur("120.00"))]


def test_the_movement_payments_recorded_is_no_duplicate_and_an_unnamed_one_is_not_judged_by_its_id():
    recorded = [entry("refund", "r-1", "30.00", reference="re_1")]
    assert compare(DAY, [line("refund", "r-1", "30.00", reference="re_1")], recorded) == []
    # Payments recorded no gateway id (the gateway gave none): nothing to tell a second one by.
    assert compare(DAY, [line("refund", "r-1", "30.00", reference="re_9")], [entry("refund", "r-1", "30.00")]) == []


def test_a_listing_compares_only_what_went_to_its_own_account():
    # Read with another account's key, a listing does not hold what went to the first account:
    # those entries are not "missing at the gateway", they are that account's to compare.
    mine = entry("refund", "r-1", "30.00").model_copy(update={"sent_to": "live:acct_2"})
    theirs = entry("refund", "r-2", "40.00").model_copy(update={"sent_to": "live:acct_1"})
    older = entry("refund", "r-3", "50.00")  # recorded before accounts were kept: compared as before

    found = compare(DAY, [line("refund", "r-1", "30.00")], [mine, theirs, older], listed_by="live:acct_2")

    assert [(f.kind, f.business_id) for f in found] == [(DiscrepancyKind.MISSING_AT_GATEWAY, "r-3")]


def test_money_moved_in_this_account_under_an_id_payments_sent_to_another_says_so():
    theirs = entry("refund", "r-2", "40.00").model_copy(update={"sent_to": "live:acct_1"})

    [found] = compare(DAY, [line("refund", "r-2", "40.00", reference="re_9")], [theirs], listed_by="live:acct_2")

    assert (found.kind, found.gateway) == (DiscrepancyKind.MISSING_IN_PAYMENTS, eur("40.00"))
    assert "in account live:acct_2; payments sent it to account live:acct_1" in found.detail


def test_a_single_line_that_matches_its_entry_is_no_duplicate():
    assert compare(DAY, [line("refund", "r-1", "30.00", reference="re_1")], [entry("refund", "r-1", "30.00")]) == []


def test_a_duplicate_settled_the_next_day_does_not_hide_the_days_line():
    next_morning = datetime(2025, 3, 2, 0, 5, tzinfo=UTC)
    gateway = [
        line("refund", "r-1", "30.00", reference="re_1"),
        line("refund", "r-1", "30.00", at=next_morning, reference="re_2"),
    ]

    found = {(f.kind, f.business_id) for f in compare(DAY, gateway, [entry("refund", "r-1", "30.00")])}

    assert found == {(DiscrepancyKind.DUPLICATE_AT_GATEWAY, "r-1"), (DiscrepancyKind.AMOUNT_DIFFERS, "r-1")}


def test_a_duplicate_payments_knows_nothing_of_is_both_a_duplicate_and_missing_in_payments():
    gateway = [line("refund", "r-stray", "5.00", reference="re_1"), line("refund", "r-stray", "5.00", reference="re_2")]

    findings = {(f.kind, f.gateway) for f in compare(DAY, gateway, [])}

    assert findings == {
        (DiscrepancyKind.DUPLICATE_AT_GATEWAY, eur("10.00")),
        (DiscrepancyKind.MISSING_IN_PAYMENTS, eur("10.00")),
    }


# -- what the owners record as moved --------------------------------------------------------
def test_the_ledger_holds_the_captured_attempt_and_the_settled_refunds_with_what_billing_shows():
    payment, order = captured_payment("100.00"), delivered_order("100.00")
    for refund_id in ("r-1", "r-2", "r-3"):
        payment.begin_refund(refund_cmd(refund_id, "10.00"))
        approve(order, refund_id, "10.00")
    payment.record_refund_answer(refund_cmd("r-1", "10.00"), Accepted("re_1"))
    payment.record_refund_answer(refund_cmd("r-2", "10.00"), Accepted("re_2"))  # billing not told yet
    order.complete_refund(complete(order, "r-1"))

    entries = {(e.kind, e.business_id): e for e in ledger_entries(payment, order)}

    capture = payment.capture
    assert set(entries) == {("capture", capture.attempt_id), ("refund", "r-1"), ("refund", "r-2")}  # r-3 still sent
    assert (entries["capture", capture.attempt_id].billed, entries["capture", capture.attempt_id].reference) == (
        eur("100.00"), capture.gateway_reference)
    assert (entries["refund", "r-1"].billed, entries["refund", "r-1"].reference) == (eur("10.00"), "re_1")
    assert entries["refund", "r-2"].billed is None
    assert [e.billed for e in ledger_entries(payment, None)] == [None, None, None]  # no order: billing shows nothing


def test_a_settled_refund_recorded_without_its_account_is_compared_as_its_payments_accounts():
    payment = captured_payment("100.00")
    payment.begin_refund(refund_cmd("r-1", "10.00"))  # the refund's account was not kept
    payment.capture.sent_to = "live:acct_1"  # the payment's was
    payment.record_refund_answer(refund_cmd("r-1", "10.00"), Accepted("re_1"))

    [refund] = [e for e in ledger_entries(payment, None) if e.kind == "refund"]

    assert (refund.sent_to, payment.refunds["r-1"].sent_to) == ("live:acct_1", "")


def test_a_refund_the_gateway_paid_and_then_reversed_is_found_with_what_billing_counts_paid():
    reversed_at = NOON + timedelta(hours=3)
    findings = compare(
        DAY,
        [line("refund", "r-1", "30.00", reference="re_1"),
         line("refund_reversal", "r-1", "30.00", at=reversed_at, reference="re_1")],
        [entry("refund", "r-1", "30.00", reference="re_1")],
    )

    [reversed_refund] = findings  # the refund itself agrees; its reversal is the finding
    assert (reversed_refund.kind, reversed_refund.business_id) == (DiscrepancyKind.REFUND_REVERSED, "r-1")
    assert (reversed_refund.ours, reversed_refund.gateway) == (eur("30.00"), eur("30.00"))
    assert "customer was not paid" in reversed_refund.detail and "billing counts 30.00 EUR" in reversed_refund.detail


def test_a_reversal_is_found_on_the_day_it_happened_not_on_the_day_of_its_refund():
    refund_day = [line("refund", "r-1", "30.00", reference="re_1")]
    later = line("refund_reversal", "r-1", "30.00", at=NOON + timedelta(days=4), reference="re_1")

    on_the_refunds_day = compare(DAY, refund_day + [later], [entry("refund", "r-1", "30.00", reference="re_1")])
    on_its_own_day = compare(DAY + timedelta(days=4), [later], [entry("refund", "r-1", "30.00", reference="re_1")])

    assert on_the_refunds_day == []
    assert [f.kind for f in on_its_own_day] == [DiscrepancyKind.REFUND_REVERSED]


def test_a_reversal_of_a_refund_payments_holds_as_not_paid_asks_for_no_second_payment():
    # Its answer was read after the reversal: payments recorded it declined, billing owes it.
    [found] = compare(DAY, [line("refund_reversal", "r-1", "30.00", reference="re_1")], [])

    assert (found.kind, found.ours) == (DiscrepancyKind.REFUND_REVERSED, None)
    assert "nothing more is due for this refund" in found.detail and "pay the customer" not in found.detail
