"""Payments' rules for gateway answers nobody has: unknown is a state (a fact, not a failure),
and only the gateway's confirmed answer, asked by reconciliation, decides what it was."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.payments.answers import FoundByReconciliation, GatewayQuestion
from domain.payments.commands import MarkCaptureUnknown, MarkRefundUnknown, ReconcileCapture, ReconcileGatewayRefund
from domain.payments.events import (
    GatewayRefundDeclined,
    GatewayRefundNotFound,
    GatewayRefundNotSent,
    GatewayRefundOutcomeUnknown,
    GatewayRefundSettled,
    PaymentCaptured,
    PaymentDeclined,
)
from domain.payments.gateway import Accepted, Declined, NotFound
from domain.payments.payment import AttemptStatus, GatewayRefundStatus, Payment
from domain.shared.errors import InvalidCommand
from tests.unit.builders import ORDER_ID, T0, assert_refused, command, eur, names
from tests.unit.test_payment import CHARGE, capture_cmd, captured_payment, new_payment, refund_cmd, refund_sent

LATER = T0 + Payment.SENT_TOO_LONG


def mark_refund(refund_id: str = "r-1") -> MarkRefundUnknown:
    return command(MarkRefundUnknown, order_id=ORDER_ID, refund_id=refund_id, reason="gateway_unavailable")


def reconcile_refund(refund_id: str = "r-1", at=T0) -> ReconcileGatewayRefund:
    return command(ReconcileGatewayRefund, order_id=ORDER_ID, refund_id=refund_id, issued_at=at)


def unknown_refund(amount: str = "30.00") -> Payment:
    payment = captured_payment("100.00")
    refund_sent(payment, "r-1", amount)
    payment.mark_refund_unknown(mark_refund())
    payment.clear_events()
    return payment


def attempt_sent() -> tuple[Payment, str]:
    payment = new_payment("100.00")
    cmd = capture_cmd("100.00", command_id="payment-o-1/capture")
    payment.begin_capture(cmd)
    payment.clear_events()
    return payment, cmd.command_id


def mark_capture(attempt_id: str) -> MarkCaptureUnknown:
    return command(MarkCaptureUnknown, order_id=ORDER_ID, attempt_id=attempt_id, reason="gateway_unavailable")


def reconcile_capture(attempt_id: str, at=T0) -> ReconcileCapture:
    return command(ReconcileCapture, order_id=ORDER_ID, attempt_id=attempt_id, issued_at=at)


# == refunds ==========================================================================================
def test_a_sent_refund_without_an_answer_becomes_unknown_and_still_counts_as_refunded():
    payment = captured_payment("100.00")
    refund_sent(payment, "r-1", "30.00")

    payment.mark_refund_unknown(mark_refund())

    assert names(payment.pending_events) == ["GatewayRefundOutcomeUnknown"]
    assert payment.refunds["r-1"].status is GatewayRefundStatus.UNKNOWN
    assert payment.refunded == eur("30.00")  # its money may have gone out


def test_marking_a_refund_unknown_twice_records_nothing_the_second_time():
    payment = unknown_refund()
    payment.mark_refund_unknown(mark_refund())
    assert payment.pending_events == []


def test_a_refund_payments_never_sent_is_confirmed_not_sent():
    payment = captured_payment("100.00")
    payment.mark_refund_unknown(mark_refund("r-never"))
    assert names(payment.pending_events) == ["GatewayRefundNotSent"]
    assert payment.refunded == eur("0")


def test_a_refund_confirmed_not_sent_is_never_sent_afterwards():
    # Its flow fails the refund on "not sent" and billing releases the money; a send still on
    # its way (an activity attempt the flow stopped waiting for) must not pay it after all.
    payment = captured_payment("100.00")
    payment.mark_refund_unknown(mark_refund("r-late"))
    payment.clear_events()

    assert_refused(payment, lambda: payment.begin_refund(refund_cmd("r-late", "30.00")), InvalidCommand, "refund_never_sent")
    assert payment.refunds["r-late"].status is GatewayRefundStatus.NOT_SENT
    assert payment.refunded == eur("0")
    assert payment.awaiting_reconciliation(LATER + timedelta(days=1)) == []


def test_a_refund_closed_unsent_is_confirmed_not_sent_again_to_a_new_question():
    payment = captured_payment("100.00")
    payment.mark_refund_unknown(mark_refund("r-never"))
    payment.clear_events()

    again = command(MarkRefundUnknown, order_id=ORDER_ID, refund_id="r-never", reason="cancelled_while_sending")
    payment.mark_refund_unknown(again)

    assert names(payment.pending_events) == ["GatewayRefundNotSent"]
    assert payment.refunds["r-never"].status is GatewayRefundStatus.NOT_SENT


def test_a_refund_already_answered_cannot_be_marked_unknown():
    payment = captured_payment("100.00")
    cmd = refund_sent(payment, "r-1", "30.00")
    payment.record_refund_answer(cmd, Accepted("re_1"))
    payment.clear_events()
    assert_refused(payment, lambda: payment.mark_refund_unknown(mark_refund()), InvalidCommand, "refund_already_answered")


def test_a_late_answer_to_an_unknown_refund_is_refused_reconciliation_decides_it():
    payment = unknown_refund()
    late = refund_cmd("r-1", "30.00")
    assert_refused(payment, lambda: payment.record_refund_answer(late, Accepted("re_1")), InvalidCommand, "no_open_refund")


@pytest.mark.parametrize(
    ("answer", "status", "event"),
    [
        (Accepted("re_1"), GatewayRefundStatus.SETTLED, "GatewayRefundSettled"),
        (Declined("expired_or_canceled_card"), GatewayRefundStatus.DECLINED, "GatewayRefundDeclined"),
        (NotFound(), GatewayRefundStatus.NOT_FOUND, "GatewayRefundNotFound"),
    ],
)
def test_reconciling_an_unknown_refund_records_what_the_gateway_says(answer, status, event):
    payment = unknown_refund()
    payment.reconcile_refund(reconcile_refund(), answer)
    assert names(payment.pending_events) == [event]
    assert payment.refunds["r-1"].status is status


def test_a_refund_the_gateway_never_had_no_longer_counts_as_refunded():
    payment = unknown_refund()
    payment.reconcile_refund(reconcile_refund(), NotFound())
    assert payment.refunded == eur("0")


def test_a_refund_still_within_its_flows_retries_is_not_reconciled():
    payment = captured_payment("100.00")
    refund_sent(payment, "r-1", "30.00")
    early = reconcile_refund(at=LATER - timedelta(minutes=1))
    assert_refused(payment, lambda: payment.refund_lookup(early), InvalidCommand, "still_in_flight")


def test_a_refund_sent_longer_ago_than_any_retry_is_reconciled_as_it_is():
    payment = captured_payment("100.00")
    refund_sent(payment, "r-1", "30.00")
    request = payment.refund_lookup(reconcile_refund(at=LATER))
    assert (request.idempotency_key, request.charge) == ("r-1", CHARGE)
    payment.reconcile_refund(reconcile_refund(at=LATER), Accepted("re_1"))
    assert payment.refunds["r-1"].status is GatewayRefundStatus.SETTLED


def test_a_settled_refund_is_not_reconciled_again():
    payment = unknown_refund()
    payment.reconcile_refund(reconcile_refund(), Accepted("re_1"))
    payment.clear_events()
    assert_refused(payment, lambda: payment.reconcile_refund(reconcile_refund(), NotFound()), InvalidCommand, "already_answered")


def test_reconciliation_is_due_for_unknown_and_long_sent_requests_only():
    payment = captured_payment("100.00")
    refund_sent(payment, "r-unknown", "10.00")
    payment.mark_refund_unknown(mark_refund("r-unknown"))
    refund_sent(payment, "r-sent", "10.00")

    assert [item[:3] for item in payment.awaiting_reconciliation(T0)] == [("refund", "r-unknown", "unknown")]
    assert [item[1] for item in payment.awaiting_reconciliation(LATER)] == ["r-unknown", "r-sent"]
    assert payment.open_since == T0


# == captures ==========================================================================================
def test_a_capture_attempt_without_an_answer_becomes_unknown_and_blocks_another_attempt():
    payment, attempt_id = attempt_sent()
    payment.mark_capture_unknown(mark_capture(attempt_id))
    assert names(payment.pending_events) == ["CaptureOutcomeUnknown"]
    payment.clear_events()
    retry = capture_cmd("100.00", command_id="payment-o-1/retry-1")
    assert_refused(payment, lambda: payment.begin_capture(retry), InvalidCommand, "attempt_in_flight")


def test_a_capture_the_gateway_confirms_it_never_made_is_a_failed_attempt_and_another_may_follow():
    payment, attempt_id = attempt_sent()
    payment.mark_capture_unknown(mark_capture(attempt_id))
    payment.clear_events()

    payment.reconcile_capture(reconcile_capture(attempt_id), NotFound())

    assert names(payment.pending_events) == ["PaymentDeclined"]
    assert payment.attempts[0].decline_code == Payment.NOT_CHARGED
    payment.clear_events()
    payment.begin_capture(capture_cmd("100.00", command_id="payment-o-1/retry-1"))
    assert len(payment.attempts) == 2


def test_a_decline_reconciliation_finds_keeps_the_card_the_gateway_saved_for_the_next_attempt():
    payment, attempt_id = attempt_sent()
    payment.mark_capture_unknown(mark_capture(attempt_id))

    payment.reconcile_capture(reconcile_capture(attempt_id), Declined("insufficient_funds", saved_card="pm_saved"))

    retry = capture_cmd("100.00", command_id="payment-o-1/retry-1")
    assert payment.begin_capture(retry).card_token == "pm_saved"


def test_a_capture_never_made_whose_card_was_saved_on_the_way_has_the_next_attempt_charge_that_card():
    payment, attempt_id = attempt_sent()
    payment.mark_capture_unknown(mark_capture(attempt_id))

    payment.reconcile_capture(reconcile_capture(attempt_id), NotFound(saved_card="pm_saved"))

    assert payment.attempts[0].decline_code == Payment.NOT_CHARGED
    retry = capture_cmd("100.00", command_id="payment-o-1/retry-1")
    assert payment.begin_capture(retry).card_token == "pm_saved"


SEARCH_LAG = timedelta(hours=1)  # Stripe's search, in an outage


def test_a_capture_the_gateways_search_does_not_find_yet_stays_unknown_until_the_search_has_caught_up():
    # Cancelled while capturing at T0, looked up 20 s later: Stripe's search may not show the
    # PaymentIntent yet. Taking "not found" then would let the customer be charged twice.
    payment, attempt_id = attempt_sent()
    payment.mark_capture_unknown(mark_capture(attempt_id))  # issued at T0
    payment.clear_events()

    too_soon = reconcile_capture(attempt_id, at=T0 + timedelta(seconds=20))
    assert_refused(
        payment, lambda: payment.reconcile_capture(too_soon, NotFound(settles_after=SEARCH_LAG)),
        InvalidCommand, "not_found_too_soon",
    )
    assert payment.attempts[0].status is AttemptStatus.UNKNOWN

    payment.reconcile_capture(reconcile_capture(attempt_id, at=T0 + SEARCH_LAG), NotFound(settles_after=SEARCH_LAG))
    assert names(payment.pending_events) == ["PaymentDeclined"]
    assert payment.attempts[0].decline_code == Payment.NOT_CHARGED


def test_a_capture_the_search_finds_is_taken_at_once_however_young():
    payment, attempt_id = attempt_sent()
    payment.mark_capture_unknown(mark_capture(attempt_id))
    payment.clear_events()
    payment.reconcile_capture(reconcile_capture(attempt_id, at=T0 + timedelta(seconds=20)), Accepted("ch_9", "EUR"))
    assert payment.capture is not None and payment.capture.gateway_reference == "ch_9"


def test_a_refund_not_found_by_a_look_up_that_may_lag_stays_unknown_until_it_has_caught_up():
    payment = unknown_refund()  # marked unknown at T0
    too_soon = reconcile_refund(at=T0 + timedelta(minutes=5))
    assert_refused(
        payment, lambda: payment.reconcile_refund(too_soon, NotFound(settles_after=SEARCH_LAG)),
        InvalidCommand, "not_found_too_soon",
    )
    assert payment.refunded == eur("30.00")  # still reserved: its money may have gone out


def test_a_refund_not_found_while_a_send_its_flow_stopped_waiting_for_may_be_on_its_way_stays_unknown():
    # Cancelled while its send was under way (marked unknown at T0): the send may arrive yet, so
    # "not found" a few seconds later, within the time a request may be on the wire, frees nothing.
    on_the_wire = timedelta(seconds=40)
    payment = unknown_refund()
    right_after = reconcile_refund(at=T0 + timedelta(seconds=5))
    assert_refused(payment, lambda: payment.reconcile_refund(right_after, NotFound(settles_after=on_the_wire)),
                   InvalidCommand, "not_found_too_soon")
    assert (payment.refunds["r-1"].status, payment.refunded) == (GatewayRefundStatus.UNKNOWN, eur("30.00"))

    payment.reconcile_refund(reconcile_refund(at=T0 + on_the_wire), NotFound(settles_after=on_the_wire))
    assert payment.refunds["r-1"].status is GatewayRefundStatus.NOT_FOUND


def test_a_capture_reconciliation_finds_made_is_captured():
    payment, attempt_id = attempt_sent()
    payment.mark_capture_unknown(mark_capture(attempt_id))
    payment.clear_events()
    payment.reconcile_capture(reconcile_capture(attempt_id), Accepted("ch_9", currency="EUR"))
    assert names(payment.pending_events) == ["PaymentCaptured"]
    assert payment.capture is not None and payment.capture.gateway_reference == "ch_9"
    assert payment.capture.gateway_currency == "EUR"  # a refund of it is asked in Stripe's word
    assert payment.open_since is None


def test_a_capture_attempt_already_answered_cannot_be_marked_unknown():
    payment, attempt_id = attempt_sent()
    payment.record_capture_answer(capture_cmd("100.00", command_id=attempt_id), Accepted("ch_1"))
    payment.clear_events()
    assert_refused(
        payment, lambda: payment.mark_capture_unknown(mark_capture(attempt_id)), InvalidCommand, "attempt_already_answered"
    )
    assert payment.attempts[0].status is AttemptStatus.CAPTURED


# -- which recorded facts answer a waiting flow (domain/payments/answers.py) -----------------------
def refund_question(refund_id: str = "r-1") -> GatewayQuestion:
    return GatewayQuestion(kind="refund", order_id=ORDER_ID, business_id=refund_id, command_id="recon/1")


def test_a_settlement_a_decline_or_a_confirmed_absence_of_this_refund_answers_its_flow():
    answers = [
        GatewayRefundSettled(order_id=ORDER_ID, refund_id="r-1", amount=eur("30.00"), gateway_reference="re_1"),
        GatewayRefundDeclined(order_id=ORDER_ID, refund_id="r-1", amount=eur("30.00"), decline_code="expired_card"),
        GatewayRefundNotFound(order_id=ORDER_ID, refund_id="r-1", amount=eur("30.00")),
        GatewayRefundNotSent(order_id=ORDER_ID, refund_id="r-1"),
    ]
    assert all(refund_question().is_answered_by([answer]) for answer in answers)


def test_another_refunds_answer_or_a_fact_that_is_no_answer_does_not_answer_a_refunds_flow():
    other_refund = GatewayRefundSettled(order_id=ORDER_ID, refund_id="r-2", amount=eur("30.00"), gateway_reference="re_2")
    other_order = GatewayRefundSettled(order_id="o-2", refund_id="r-1", amount=eur("30.00"), gateway_reference="re_3")
    still_unknown = GatewayRefundOutcomeUnknown(order_id=ORDER_ID, refund_id="r-1", amount=eur("30.00"), reason="x")

    assert not refund_question().is_answered_by([other_refund])
    assert not refund_question().is_answered_by([other_order])
    assert not refund_question().is_answered_by([still_unknown])
    assert not refund_question().is_answered_by([])


def test_only_a_capture_or_decline_of_this_attempt_answers_a_payments_flow():
    question = GatewayQuestion(kind="capture", order_id=ORDER_ID, business_id="a-1", command_id="recon/1")
    captured = PaymentCaptured(
        order_id=ORDER_ID, customer_id="c-1", attempt_id="a-1", amount=eur("100.00"), gateway_reference="ch_1"
    )
    declined = PaymentDeclined(
        order_id=ORDER_ID, customer_id="c-1", attempt_id="a-1", amount=eur("100.00"), decline_code="not_charged"
    )

    assert question.is_answered_by([captured]) and question.is_answered_by([declined])
    assert not question.is_answered_by([captured.model_copy(update={"attempt_id": "a-2"})])
    assert not question.is_answered_by([GatewayRefundNotSent(order_id=ORDER_ID, refund_id="a-1")])


# == a flow gone while reconciliation found its answer ===================================================
def test_payments_keeps_which_reconciliation_command_found_a_refunds_answer_for_a_flow_resumed_later():
    payment = unknown_refund()
    assert payment.answers_found_by_reconciliation("r-1") == []  # none found yet
    found = reconcile_refund()

    payment.reconcile_refund(found, Accepted("re_1"))

    assert payment.answers_found_by_reconciliation("r-1") == [found.command_id]
    assert payment.answers_found_by_reconciliation("r-other") == []


def test_a_refund_answered_in_its_own_flow_names_no_reconciliation_command():
    payment = captured_payment("100.00")
    sent = refund_sent(payment, "r-1", "30.00")
    payment.record_refund_answer(sent, Accepted("re_1"))
    assert payment.answers_found_by_reconciliation("r-1") == []


def test_only_the_latest_capture_attempts_reconciled_answer_is_the_one_a_payment_flow_waits_for():
    payment, first = attempt_sent()
    payment.mark_capture_unknown(mark_capture(first))
    declined = reconcile_capture(first)
    payment.reconcile_capture(declined, NotFound())
    assert payment.answers_found_by_reconciliation() == [declined.command_id]

    payment.begin_capture(capture_cmd("100.00", command_id="payment-o-1/retry-1"))

    assert payment.answers_found_by_reconciliation() == []  # the new attempt's flow waits on its own answer


def test_a_refund_reconciliation_answered_is_not_sent_again_its_flow_gets_that_answer():
    payment = unknown_refund()
    found = reconcile_refund()
    payment.reconcile_refund(found, Accepted("re_1"))
    payment.clear_events()

    asked_again = payment.begin_refund(refund_cmd("r-1", "30.00"))  # the resumed flow's same command

    assert asked_again == FoundByReconciliation(command_id=found.command_id)
    assert payment.pending_events == []


def test_a_capture_attempt_reconciliation_answered_is_not_sent_again_its_flow_gets_that_answer():
    payment, attempt_id = attempt_sent()
    payment.mark_capture_unknown(mark_capture(attempt_id))
    found = reconcile_capture(attempt_id)
    payment.reconcile_capture(found, Accepted("ch_9", currency="EUR"))
    payment.clear_events()

    asked_again = payment.begin_capture(capture_cmd("100.00", command_id=attempt_id))

    assert asked_again == FoundByReconciliation(command_id=found.command_id)
    assert payment.pending_events == []


def test_another_refund_or_a_new_capture_attempt_is_asked_of_the_gateway_as_usual():
    payment = unknown_refund()
    payment.reconcile_refund(reconcile_refund(), Accepted("re_1"))
    assert not isinstance(payment.begin_refund(refund_cmd("r-2", "20.00")), FoundByReconciliation)

    payment, first = attempt_sent()
    payment.mark_capture_unknown(mark_capture(first))
    payment.reconcile_capture(reconcile_capture(first), NotFound())  # never charged: another may follow
    retry = payment.begin_capture(capture_cmd("100.00", command_id="payment-o-1/retry-1"))
    assert not isinstance(retry, FoundByReconciliation) and retry.idempotency_key == "payment-o-1/retry-1"


def test_a_sent_capture_not_found_counts_from_the_last_moment_it_may_be_sent_again_plus_the_search_lag():
    # Still `sent`: its flow may send it again under its key until KEY_KEPT_FOR after it first
    # left (23 h), so Stripe's search may not show it before that plus the search's lag.
    payment, attempt_id = attempt_sent()  # first sent at T0, never marked unknown
    lag_left = Payment.SENT_TOO_LONG - Payment.KEY_KEPT_FOR  # what is left of the lag at 25 h
    later = reconcile_capture(attempt_id, at=T0 + Payment.SENT_TOO_LONG)
    too_soon = NotFound(settles_after=lag_left + timedelta(seconds=2))
    assert_refused(payment, lambda: payment.reconcile_capture(later, too_soon), InvalidCommand, "not_found_too_soon")
    payment.reconcile_capture(later, NotFound(settles_after=lag_left))
    assert payment.attempts[0].decline_code == Payment.NOT_CHARGED


def test_a_capture_recorded_before_its_first_send_was_kept_counts_from_a_day_after_it_was_issued():
    payment, attempt_id = attempt_sent()
    payment.attempts[0].first_asked_at = None  # as saved before payments kept it
    later = reconcile_capture(attempt_id, at=T0 + Payment.SENT_TOO_LONG)
    too_soon = NotFound(settles_after=SEARCH_LAG + timedelta(seconds=2))  # 24 h + 1 h 2 s > 25 h
    assert_refused(payment, lambda: payment.reconcile_capture(later, too_soon), InvalidCommand, "not_found_too_soon")
    payment.reconcile_capture(later, NotFound(settles_after=SEARCH_LAG))
    assert payment.attempts[0].decline_code == Payment.NOT_CHARGED


def test_a_capture_first_sent_long_after_its_flow_started_is_left_to_its_flow_for_a_day():
    # A worker backlog (or a flow reset past a fixed bug) sends the capture 26 h after the flow
    # started: reconciliation leaves it to the flow, and a "not found" minutes after the send
    # is no answer (Stripe's search lags).
    payment = new_payment()
    attempt_id = "payment-o-1/capture"
    sent = T0 + timedelta(hours=26)
    payment.begin_capture(capture_cmd("100.00", command_id=attempt_id), asked_at=sent)
    payment.clear_events()
    minutes_later = reconcile_capture(attempt_id, at=sent + timedelta(minutes=5))

    assert payment.awaiting_reconciliation(sent + timedelta(minutes=5)) == []
    assert_refused(payment, lambda: payment.reconcile_capture(minutes_later, NotFound(settles_after=SEARCH_LAG)),
                   InvalidCommand, "still_in_flight")
    assert [a.status for a in payment.attempts] == [AttemptStatus.SENT]
    assert [k for k, *_ in payment.awaiting_reconciliation(sent + Payment.SENT_TOO_LONG)] == ["capture"]


def test_a_capture_is_not_sent_again_once_the_gateway_may_have_forgotten_its_key():
    # A flow resumed (or reset) a day after its capture first left asks again with the same key;
    # Stripe keeps a key 24 h, so a second request could charge again: refused, and the attempt
    # is left to reconciliation.
    payment = new_payment()
    attempt_id = "payment-o-1/capture"
    payment.begin_capture(capture_cmd("100.00", command_id=attempt_id), asked_at=T0)
    again = capture_cmd("100.00", command_id=attempt_id)
    assert payment.begin_capture(again, asked_at=T0 + Payment.KEY_KEPT_FOR - timedelta(seconds=1)).idempotency_key == attempt_id
    payment.clear_events()
    assert_refused(payment, lambda: payment.begin_capture(again, asked_at=T0 + Payment.KEY_KEPT_FOR),
                   InvalidCommand, "attempt_unknown")


def test_a_refund_is_not_sent_again_once_the_gateway_may_have_forgotten_its_key():
    payment = captured_payment()
    payment.begin_refund(refund_cmd("r-1", "30.00"), asked_at=T0)
    payment.clear_events()
    assert_refused(payment, lambda: payment.begin_refund(refund_cmd("r-1", "30.00"), asked_at=T0 + timedelta(hours=24, minutes=30)),
                   InvalidCommand, "refund_key_expired")
    assert payment.refunds["r-1"].status is GatewayRefundStatus.SENT


def test_a_capture_attempt_whose_answer_is_unknown_is_not_sent_again_reconciliation_asks():
    # A flow Reset to before its capture asks again: the gateway may have charged, and may have
    # forgotten the idempotency key by now (Stripe keeps it 24 h), so no second request goes out.
    payment, attempt_id = attempt_sent()
    payment.mark_capture_unknown(mark_capture(attempt_id))
    payment.clear_events()
    again = capture_cmd("100.00", command_id=attempt_id)
    assert_refused(payment, lambda: payment.begin_capture(again), InvalidCommand, "attempt_unknown")


# -- which gateway account a request went to ----------------------------------------------------
LIVE = "live:acct_1"


def test_a_capture_keeps_the_account_it_went_to_and_its_look_up_names_that_account():
    payment = new_payment()
    attempt_id = "payment-o-1/capture"
    payment.begin_capture(capture_cmd("100.00", command_id=attempt_id), asked_at=T0, asked_of=LIVE)
    payment.mark_capture_unknown(mark_capture(attempt_id))

    assert payment.attempts[0].sent_to == LIVE
    assert payment.capture_lookup(reconcile_capture(attempt_id, at=LATER)).sent_to == LIVE


def test_a_capture_is_not_sent_again_under_another_accounts_key():
    # A worker given another account's key (or the live key for a test-mode attempt) would send
    # the same idempotency key where it means nothing: payments refuses, reconciliation asks.
    payment = new_payment()
    attempt_id = "payment-o-1/capture"
    payment.begin_capture(capture_cmd("100.00", command_id=attempt_id), asked_at=T0, asked_of=LIVE)
    payment.clear_events()
    again = capture_cmd("100.00", command_id=attempt_id)
    assert_refused(payment, lambda: payment.begin_capture(again, asked_at=T0, asked_of="live:acct_2"),
                   InvalidCommand, "attempt_unknown")
    assert_refused(payment, lambda: payment.begin_capture(again, asked_at=T0, asked_of="test:acct_1"),
                   InvalidCommand, "attempt_unknown")
    assert payment.begin_capture(again, asked_at=T0, asked_of=LIVE).idempotency_key == attempt_id


def test_a_refund_is_not_sent_again_under_another_accounts_key_and_its_look_up_names_its_account():
    payment = captured_payment()
    payment.begin_refund(refund_cmd("r-1", "30.00"), asked_at=T0, asked_of=LIVE)
    payment.clear_events()
    assert_refused(payment, lambda: payment.begin_refund(refund_cmd("r-1", "30.00"), asked_at=T0, asked_of="live:acct_2"),
                   InvalidCommand, "refund_key_expired")
    assert payment.refunds["r-1"].status is GatewayRefundStatus.SENT
    payment.mark_refund_unknown(mark_refund("r-1"))
    assert payment.refund_lookup(reconcile_refund("r-1", at=LATER)).sent_to == LIVE


def test_a_request_recorded_before_accounts_were_kept_is_sent_again_and_from_then_on_belongs_to_that_account():
    payment = new_payment()
    attempt_id = "payment-o-1/capture"
    payment.begin_capture(capture_cmd("100.00", command_id=attempt_id), asked_at=T0)  # no account known
    payment.clear_events()
    again = capture_cmd("100.00", command_id=attempt_id)
    assert payment.begin_capture(again, asked_at=T0, asked_of=LIVE).sent_to == LIVE
    assert payment.attempts[0].sent_to == LIVE
    assert_refused(payment, lambda: payment.begin_capture(again, asked_at=T0, asked_of="live:acct_2"),
                   InvalidCommand, "attempt_unknown")


def test_a_refund_recorded_before_accounts_were_kept_belongs_to_the_account_that_took_its_payment():
    # Its payment's account is known: another account's key neither sends it again nor takes it.
    payment = refund_recorded_without_its_account()

    assert_refused(payment, lambda: payment.begin_refund(refund_cmd("r-1", "30.00"), asked_at=T0, asked_of="live:acct_2"),
                   InvalidCommand, "refund_key_expired")
    assert payment.refunds["r-1"].sent_to == ""  # a refusal changes nothing
    payment.mark_refund_unknown(mark_refund("r-1"))
    assert payment.refund_lookup(reconcile_refund("r-1", at=LATER)).sent_to == LIVE  # asked of that account alone


def test_a_refund_recorded_before_accounts_were_kept_is_sent_again_through_its_payments_account():
    payment = refund_recorded_without_its_account()

    assert payment.begin_refund(refund_cmd("r-1", "30.00"), asked_at=T0, asked_of=LIVE).sent_to == LIVE
    assert payment.refunds["r-1"].sent_to == LIVE


def refund_recorded_without_its_account():
    """A payment taken through LIVE, and its refund r-1 sent, as a worker of a version that kept
    no accounts recorded it (mid-deploy)."""
    payment = new_payment()
    cmd = capture_cmd("100.00")
    payment.begin_capture(cmd, asked_at=T0, asked_of=LIVE)
    payment.record_capture_answer(cmd, Accepted(CHARGE))
    payment.begin_refund(refund_cmd("r-1", "30.00"), asked_at=T0, asked_of=LIVE)
    payment.refunds["r-1"].sent_to = ""
    payment.clear_events()
    return payment


def test_a_refund_goes_only_through_the_account_that_took_the_payment():
    payment = new_payment()
    cmd = capture_cmd("100.00")
    payment.begin_capture(cmd, asked_at=T0, asked_of=LIVE)
    payment.record_capture_answer(cmd, Accepted(CHARGE))
    payment.clear_events()

    assert_refused(payment, lambda: payment.begin_refund(refund_cmd("r-1", "30.00"), asked_at=T0, asked_of="live:acct_2"),
                   InvalidCommand, "wrong_gateway_account")
    assert payment.refunds == {}
    assert payment.begin_refund(refund_cmd("r-1", "30.00"), asked_at=T0, asked_of=LIVE).sent_to == LIVE
