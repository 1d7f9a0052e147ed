"""Fraud: RefundScreening decides whether a person must look; FraudReview records the outcome."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest

from domain.fraud.commands import ExpireFraudReview, ResolveFraudReview, ReviewDecision, ScreenRefund, WithdrawRefund
from domain.fraud.events import FraudReviewOpened, RefundCleared, ReviewApproved, ReviewRejected
from domain.fraud.review import FraudReview, ReviewStatus
from domain.fraud.screening import LARGE_REFUND, RefundScreening
from domain.shared.errors import InvalidCommand
from domain.shared.money import CURRENCY_EXPONENTS, Money
from tests.unit.builders import FRAUD_ANALYST, SYSTEM, T0, assert_refused, command, days, money, names

screening = RefundScreening()
APPROVED_AT = T0


def screen(amount: Money, earlier: list[datetime] = (), approved_at: datetime = APPROVED_AT):
    return screening.screen(amount, approved_at, list(earlier))


# == RefundScreening: large amounts =====================================================================
@pytest.mark.parametrize(
    ("amount", "currency", "needs_review"),
    [
        ("999.99", "EUR", False),
        ("1000.00", "EUR", True),
        ("1000.01", "EUR", True),
        ("0.01", "EUR", False),
        ("999.99", "USD", False),
        ("1000.00", "GBP", True),
        ("1000", "JPY", False),  # 1,000 yen is a few euros, not a large refund
        ("149999", "JPY", False),
        ("150000", "JPY", True),
        ("299.999", "KWD", False),
        ("300.000", "KWD", True),  # 999.999 KWD is about 3,000 EUR: large
        ("999.999", "KWD", True),
    ],
)
def test_a_refund_at_or_above_its_currencys_threshold_needs_a_review(amount, currency, needs_review):
    verdict = screen(money(amount, currency))
    assert verdict.needs_review is needs_review
    assert verdict.reasons == (("large_amount",) if needs_review else ())


# == RefundScreening: frequent refunds ===================================================================
SMALL = money("10.00")


def test_a_customers_first_refund_clears():
    assert screen(SMALL, []).reasons == ()


def test_a_second_refund_within_seven_days_clears():
    assert screen(SMALL, [APPROVED_AT - days(1)]).reasons == ()


def test_the_third_refund_within_seven_days_needs_a_review():
    verdict = screen(SMALL, [APPROVED_AT - days(1), APPROVED_AT - days(6)])
    assert verdict.reasons == ("frequent_refunds",)


def test_refunds_older_than_seven_days_do_not_count():
    earlier = [APPROVED_AT - days(1), APPROVED_AT - days(7) - timedelta(seconds=1)]
    assert screen(SMALL, earlier).reasons == ()


def test_a_refund_exactly_seven_days_earlier_still_counts():
    earlier = [APPROVED_AT - days(1), APPROVED_AT - days(7)]
    assert screen(SMALL, earlier).reasons == ("frequent_refunds",)


def test_refunds_approved_after_this_one_count_when_it_is_screened_late():
    later = [APPROVED_AT + days(1), APPROVED_AT + timedelta(seconds=1)]
    assert screen(SMALL, later).reasons == ("frequent_refunds",)


def test_three_refunds_spread_over_more_than_seven_days_all_clear_whichever_is_screened():
    times = [APPROVED_AT, APPROVED_AT + days(5), APPROVED_AT + days(10)]
    for this in times:
        assert screen(SMALL, [t for t in times if t != this], approved_at=this).reasons == ()


def test_a_refund_approved_at_the_same_moment_counts():
    assert screen(SMALL, [APPROVED_AT, APPROVED_AT]).reasons == ("frequent_refunds",)


def test_a_large_and_frequent_refund_gives_both_reasons():
    verdict = screen(money("5000.00"), [APPROVED_AT - days(1), APPROVED_AT - days(2)])
    assert verdict.reasons == ("large_amount", "frequent_refunds")


def test_screening_is_judged_at_the_approval_time_not_the_real_clock():
    long_ago = datetime(2001, 6, 1, tzinfo=APPROVED_AT.tzinfo)
    assert screen(SMALL, [long_ago - days(1), long_ago - days(2)], approved_at=long_ago).needs_review


# == FraudReview.screen ==================================================================================
def screen_cmd(refund_id: str = "r-1", amount: str = "10.00", approved_at: datetime = APPROVED_AT, customer_id="c-1"):
    return command(
        ScreenRefund,
        refund_id=refund_id,
        order_id=f"o-{refund_id}",
        customer_id=customer_id,
        amount=money(amount),
        approved_at=approved_at,
    )


def reviewed(refund_id: str, approved_at: datetime, customer_id: str = "c-1") -> FraudReview:
    review = FraudReview.screen(screen_cmd(refund_id, approved_at=approved_at, customer_id=customer_id), [], screening)
    review.clear_events()
    return review


def open_review(amount: str = "1500.00") -> FraudReview:
    review = FraudReview.screen(screen_cmd(amount=amount), [], screening)
    assert review.status is ReviewStatus.OPEN
    review.clear_events()
    return review


def test_a_refund_that_needs_no_person_is_cleared():
    cmd = screen_cmd(amount="999.99")
    review = FraudReview.screen(cmd, [], screening)
    [cleared] = review.pending_events
    assert isinstance(cleared, RefundCleared)
    assert cleared.refund_id == "r-1" and cleared.order_id == "o-r-1"
    assert review.id == "r-1" and review.status is ReviewStatus.CLEARED and review.reasons == []
    assert review.approved_at == APPROVED_AT and review.customer_id == "c-1"


def test_a_large_refund_opens_a_review_with_its_reason():
    review = FraudReview.screen(screen_cmd(amount="1000.00"), [], screening)
    [opened] = review.pending_events
    assert isinstance(opened, FraudReviewOpened)
    assert opened.reasons == ["large_amount"]
    assert opened.amount == money("1000.00") and opened.customer_id == "c-1" and opened.order_id == "o-r-1"
    assert review.status is ReviewStatus.OPEN and review.reasons == ["large_amount"]


def test_the_customers_earlier_reviews_count_as_earlier_approvals():
    history = [reviewed("r-a", APPROVED_AT - days(1)), reviewed("r-b", APPROVED_AT - days(3))]
    review = FraudReview.screen(screen_cmd("r-c"), history, screening)
    assert names(review.pending_events) == ["FraudReviewOpened"]
    assert review.reasons == ["frequent_refunds"]


def test_one_earlier_review_in_the_window_clears():
    review = FraudReview.screen(screen_cmd("r-c"), [reviewed("r-a", APPROVED_AT - days(1))], screening)
    assert names(review.pending_events) == ["RefundCleared"]


def test_earlier_reviews_older_than_seven_days_do_not_count():
    history = [reviewed("r-a", APPROVED_AT - days(1)), reviewed("r-b", APPROVED_AT - days(8))]
    review = FraudReview.screen(screen_cmd("r-c"), history, screening)
    assert names(review.pending_events) == ["RefundCleared"]


def test_the_refund_being_screened_is_not_counted_as_its_own_history():
    history = [reviewed("r-a", APPROVED_AT - days(1)), reviewed("r-c", APPROVED_AT)]
    review = FraudReview.screen(screen_cmd("r-c"), history, screening)
    assert names(review.pending_events) == ["RefundCleared"]


# == resolving and expiring ===============================================================================
def resolve_cmd(decision: ReviewDecision, note: str = "checked the parcel photos") -> ResolveFraudReview:
    return command(ResolveFraudReview, actor=FRAUD_ANALYST, refund_id="r-1", decision=decision, note=note)


def expire_cmd() -> ExpireFraudReview:
    return command(ExpireFraudReview, actor=SYSTEM, refund_id="r-1", issued_at=APPROVED_AT + days(3))


def test_an_analyst_approving_a_review_records_who_and_why():
    review = open_review()
    review.resolve(resolve_cmd(ReviewDecision.APPROVE))
    [approved] = review.pending_events
    assert isinstance(approved, ReviewApproved)
    assert approved.refund_id == "r-1" and approved.reviewer == "fraud_analyst:analyst-1"
    assert approved.note == "checked the parcel photos"
    assert review.status is ReviewStatus.APPROVED and review.decided_by == "fraud_analyst:analyst-1"


def test_an_analyst_rejecting_a_review_records_a_rejection_by_the_analyst():
    review = open_review()
    review.resolve(resolve_cmd(ReviewDecision.REJECT, note="same address as 40 other refunds"))
    [rejected] = review.pending_events
    assert isinstance(rejected, ReviewRejected)
    assert rejected.reason == "rejected_by_analyst" and rejected.note == "same address as 40 other refunds"
    assert rejected.reviewer == "fraud_analyst:analyst-1"
    assert review.status is ReviewStatus.REJECTED


def test_an_expired_review_counts_as_a_rejection():
    review = open_review()
    review.expire(expire_cmd())
    [rejected] = review.pending_events
    assert isinstance(rejected, ReviewRejected)
    assert rejected.reason == "review_expired" and rejected.reviewer == str(SYSTEM) and rejected.note == ""
    assert review.status is ReviewStatus.EXPIRED


def _cleared() -> FraudReview:
    review = FraudReview.screen(screen_cmd(amount="10.00"), [], screening)
    review.clear_events()
    return review


def _resolved(decision: ReviewDecision):
    def build() -> FraudReview:
        review = open_review()
        review.resolve(resolve_cmd(decision))
        review.clear_events()
        return review

    return build


def _expired() -> FraudReview:
    review = open_review()
    review.expire(expire_cmd())
    review.clear_events()
    return review


NOT_OPEN = {
    "cleared": _cleared,
    "approved": _resolved(ReviewDecision.APPROVE),
    "rejected": _resolved(ReviewDecision.REJECT),
    "expired": _expired,
}


@pytest.mark.parametrize("build", NOT_OPEN.values(), ids=NOT_OPEN.keys())
@pytest.mark.parametrize("decision", list(ReviewDecision))
def test_only_an_open_review_can_be_resolved(build, decision):
    review = build()
    assert_refused(review, lambda: review.resolve(resolve_cmd(decision)), InvalidCommand, "review_not_open")


@pytest.mark.parametrize("build", NOT_OPEN.values(), ids=NOT_OPEN.keys())
def test_only_an_open_review_can_expire(build):
    review = build()
    assert_refused(review, lambda: review.expire(expire_cmd()), InvalidCommand, "review_not_open")


def test_every_currency_settleflow_takes_has_a_large_refund_threshold():
    assert set(LARGE_REFUND) == set(CURRENCY_EXPONENTS)


# == the third refund within seven days: what counts, and in any order =======================================
def test_rejected_expired_and_withdrawn_refunds_do_not_count_as_refunds():
    rejected = open_review()
    rejected.resolve(command(ResolveFraudReview, actor=FRAUD_ANALYST, refund_id="r-1", decision=ReviewDecision.REJECT))
    expired = FraudReview.screen(screen_cmd("r-2", amount="1500.00", approved_at=APPROVED_AT - days(1)), [], screening)
    expired.expire(command(ExpireFraudReview, refund_id="r-2"))
    failed = reviewed("r-3", APPROVED_AT - days(2))
    failed.withdraw(command(WithdrawRefund, refund_id="r-3", reason="declined by the gateway"))
    cancelled = reviewed("r-4", APPROVED_AT - days(3))
    cancelled.withdraw(command(WithdrawRefund, refund_id="r-4", reason="order cancelled"))

    review = FraudReview.screen(screen_cmd("r-5"), [rejected, expired, failed, cancelled], screening)
    assert names(review.pending_events) == ["RefundCleared"]


def test_a_withdrawn_refund_is_recorded_once_and_a_rejected_one_not_at_all():
    cleared = reviewed("r-1", APPROVED_AT)
    cleared.withdraw(command(WithdrawRefund, refund_id="r-1", reason="declined"))
    cleared.withdraw(command(WithdrawRefund, refund_id="r-1", reason="declined"))
    assert names(cleared.pending_events) == ["RefundWithdrawn"] and cleared.status is ReviewStatus.WITHDRAWN

    rejected = open_review()
    rejected.expire(command(ExpireFraudReview, refund_id="r-1"))
    rejected.clear_events()
    rejected.withdraw(command(WithdrawRefund, refund_id="r-1", reason="review expired"))
    assert rejected.pending_events == [] and rejected.status is ReviewStatus.EXPIRED


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=str)
def test_three_refunds_within_seven_days_send_one_to_a_person_whatever_order_they_are_screened_in(order):
    """In approval order the third is reviewed; screened in any other order, the last one
    screened sees the other two and is reviewed: never all three cleared."""
    approved = [APPROVED_AT, APPROVED_AT + days(2), APPROVED_AT + days(6)]
    history: list[FraudReview] = []
    verdicts = {}
    for i in order:
        review = FraudReview.screen(screen_cmd(f"r-{i}", approved_at=approved[i]), history, screening)
        verdicts[i] = review.status
        history.append(review)
    assert sorted(verdicts.values()) == sorted([ReviewStatus.CLEARED, ReviewStatus.CLEARED, ReviewStatus.OPEN])
    assert verdicts[order[-1]] is ReviewStatus.OPEN
