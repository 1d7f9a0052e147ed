"""Payments' Payment: what the gateway is asked, and what its answers mean."""

from __future__ import annotations

import pytest

from domain.payments.commands import CapturePayment, RetryPaymentCapture, SendRefundToGateway, UpdatePaymentMethod
from domain.payments.events import (
    CaptureAttempted,
    GatewayRefundDeclined,
    GatewayRefundRequested,
    GatewayRefundSettled,
    PaymentAbandoned,
    PaymentCaptured,
    PaymentDeclined,
    PaymentMethodUpdated,
)
from domain.payments.gateway import Accepted, CaptureRequest, Declined, RefundRequest
from domain.payments.payment import AttemptStatus, GatewayRefundStatus, Payment
from domain.shared.errors import DomainError, InvalidCommand, NotAuthorized
from domain.shared.money import Money
from tests.unit.builders import (
    CUSTOMER,
    ORDER_ID,
    OTHER_CUSTOMER,
    SUPPORT,
    SYSTEM,
    assert_refused,
    command,
    eur,
    names,
)

CHARGE = "ch_123"


def capture_cmd(amount: str = "100.00", command_id: str | None = None, card_token: str = "tok_visa") -> CapturePayment:
    fields = {"command_id": command_id} if command_id else {}
    return command(
        CapturePayment, order_id=ORDER_ID, customer_id="c-1", amount=eur(amount), card_token=card_token, **fields
    )


def refund_cmd(refund_id: str = "r-1", amount: Money | str = "30.00") -> SendRefundToGateway:
    amount = amount if isinstance(amount, Money) else eur(amount)
    return command(SendRefundToGateway, order_id=ORDER_ID, refund_id=refund_id, amount=amount, command_id=f"send-{refund_id}")


def new_payment(amount: str = "100.00") -> Payment:
    return Payment.for_order(capture_cmd(amount))


def captured_payment(amount: str = "100.00") -> Payment:
    payment = new_payment(amount)
    cmd = capture_cmd(amount)
    payment.begin_capture(cmd)
    payment.record_capture_answer(cmd, Accepted(CHARGE))
    payment.clear_events()
    return payment


def refund_sent(payment: Payment, refund_id: str, amount: str) -> SendRefundToGateway:
    cmd = refund_cmd(refund_id, amount)
    payment.begin_refund(cmd)
    payment.clear_events()
    return cmd


# == capture =========================================================================================
def test_a_payment_belongs_to_one_order_and_starts_without_a_capture():
    payment = new_payment("100.00")
    assert payment.id == ORDER_ID and payment.customer_id == "c-1" and payment.amount == eur("100")
    assert payment.capture is None and payment.captured == eur("0")
    assert payment.pending_events == []


def test_beginning_a_capture_creates_an_attempt_keyed_by_the_command_id():
    cmd = capture_cmd(command_id="payment-o-1/capture-1", card_token="tok_mc")
    payment = Payment.for_order(cmd)
    request = payment.begin_capture(cmd)
    assert request == CaptureRequest(
        idempotency_key="payment-o-1/capture-1", amount=eur("100"), card_token="tok_mc", reference=ORDER_ID
    )
    [attempt] = payment.attempts
    assert attempt.attempt_id == cmd.command_id and attempt.status is AttemptStatus.SENT
    [attempted] = payment.pending_events
    assert isinstance(attempted, CaptureAttempted)
    assert attempted.attempt_id == cmd.command_id and attempted.amount == eur("100")


def test_asking_again_with_the_same_command_asks_the_same_thing_and_records_nothing_new():
    payment = new_payment()
    cmd = capture_cmd()
    first = payment.begin_capture(cmd)
    state, events = payment.model_dump(), payment.pending_events
    again = payment.begin_capture(cmd)
    assert again == first
    assert payment.pending_events == events
    assert payment.model_dump() == state


def test_asking_again_after_the_answer_still_names_the_same_request():
    payment = new_payment()
    cmd = capture_cmd()
    first = payment.begin_capture(cmd)
    payment.record_capture_answer(cmd, Accepted(CHARGE))
    payment.clear_events()
    assert payment.begin_capture(cmd) == first
    assert payment.pending_events == []


def test_an_accepted_capture_records_the_payment_as_captured():
    payment = new_payment()
    cmd = capture_cmd()
    payment.begin_capture(cmd)
    payment.clear_events()
    payment.record_capture_answer(cmd, Accepted(CHARGE))
    [captured] = payment.pending_events
    assert isinstance(captured, PaymentCaptured)
    assert captured.gateway_reference == CHARGE and captured.amount == eur("100")
    assert captured.attempt_id == cmd.command_id and captured.customer_id == "c-1"
    assert payment.capture is not None and payment.captured == eur("100")
    assert payment.attempts[0].status is AttemptStatus.CAPTURED


def test_a_declined_capture_records_the_decline_code():
    payment = new_payment()
    cmd = capture_cmd()
    payment.begin_capture(cmd)
    payment.clear_events()
    payment.record_capture_answer(cmd, Declined("insufficient_funds"))
    [declined] = payment.pending_events
    assert isinstance(declined, PaymentDeclined) and declined.decline_code == "insufficient_funds"
    assert payment.capture is None and payment.captured == eur("0")
    assert payment.attempts[0].status is AttemptStatus.DECLINED


def retry_cmd(command_id: str | None = None) -> RetryPaymentCapture:
    fields = {"command_id": command_id} if command_id else {}
    return command(RetryPaymentCapture, order_id=ORDER_ID, **fields)


def declined_payment(*codes: str) -> Payment:
    """A payment whose attempts so far were all declined with these codes."""
    first = capture_cmd()
    payment = Payment.for_order(first)
    for i, code in enumerate(codes or ("card_declined",)):
        cmd = first if i == 0 else retry_cmd()
        payment.begin_capture(cmd)
        payment.record_capture_answer(cmd, Declined(code))
    payment.clear_events()
    return payment


def test_after_a_decline_another_attempt_may_be_made():
    payment = declined_payment("card_declined")
    retry = retry_cmd()
    request = payment.begin_capture(retry)
    assert request.idempotency_key == retry.command_id != payment.attempts[0].attempt_id
    assert request.amount == payment.amount and request.card_token == "tok_visa"
    assert names(payment.pending_events) == ["CaptureAttempted"]
    assert len(payment.attempts) == 2


# == failed-payment recovery ============================================================================
def test_a_soft_decline_leaves_the_payment_recoverable():
    payment = declined_payment("insufficient_funds")
    assert not payment.abandoned


@pytest.mark.parametrize("code", ["stolen_card", "lost_card", "pickup_card", "fraudulent", "card_stolen", "card_lost"])
def test_a_hard_decline_abandons_the_payment_at_once(code):
    payment = Payment.for_order(cmd := capture_cmd())
    payment.begin_capture(cmd)
    payment.clear_events()
    payment.record_capture_answer(cmd, Declined(code))
    assert names(payment.pending_events) == ["PaymentDeclined", "PaymentAbandoned"]
    abandoned = payment.pending_events[1]
    assert isinstance(abandoned, PaymentAbandoned)
    assert abandoned.reason == f"hard_decline:{code}" and abandoned.attempts == 1 and abandoned.customer_id == "c-1"
    assert payment.abandoned


def test_the_fourth_declined_attempt_abandons_the_payment():
    payment = declined_payment("card_declined", "card_declined", "card_declined")
    assert not payment.abandoned
    last = retry_cmd()
    payment.begin_capture(last)
    payment.clear_events()
    payment.record_capture_answer(last, Declined("card_declined"))
    assert names(payment.pending_events) == ["PaymentDeclined", "PaymentAbandoned"]
    assert payment.pending_events[1].reason == "attempts_exhausted" and payment.pending_events[1].attempts == 4
    assert payment.abandoned


def test_the_fourth_attempt_may_still_succeed():
    payment = declined_payment("card_declined", "card_declined", "card_declined")
    last = retry_cmd()
    payment.begin_capture(last)
    payment.record_capture_answer(last, Accepted(CHARGE))
    assert names(payment.pending_events) == ["CaptureAttempted", "PaymentCaptured"]
    assert not payment.abandoned


def test_no_attempt_is_made_once_the_payment_is_abandoned():
    payment = declined_payment("card_stolen")
    assert_refused(payment, lambda: payment.begin_capture(retry_cmd()), InvalidCommand, "payment_abandoned")


def test_no_attempt_is_made_once_the_payment_is_captured():
    payment = captured_payment()
    assert_refused(payment, lambda: payment.begin_capture(retry_cmd()), InvalidCommand, "already_captured")


def test_no_new_attempt_is_made_while_the_last_one_awaits_its_answer():
    payment = declined_payment("card_declined", "card_declined", "card_declined")
    payment.begin_capture(retry_cmd())  # the fourth, not answered yet
    payment.clear_events()
    assert_refused(payment, lambda: payment.begin_capture(retry_cmd()), InvalidCommand, "attempt_in_flight")


def test_a_retry_asks_for_the_payments_amount_with_the_payments_card():
    payment = declined_payment("card_declined")
    request = payment.begin_capture(retry_cmd())
    assert request.amount == eur("100") and request.card_token == "tok_visa" and request.reference == ORDER_ID


def test_a_new_payment_method_is_used_by_the_next_attempt():
    payment = declined_payment("insufficient_funds")
    payment.update_payment_method(
        command(UpdatePaymentMethod, actor=CUSTOMER, order_id=ORDER_ID, card_token="tok_new")
    )
    [updated] = payment.pending_events
    assert isinstance(updated, PaymentMethodUpdated) and updated.card_token == "tok_new"
    payment.clear_events()
    assert payment.begin_capture(retry_cmd()).card_token == "tok_new"
    assert payment.attempts[0].card_token == "tok_visa"  # earlier attempts keep the card they used


def new_card(card_token: str) -> UpdatePaymentMethod:
    return command(UpdatePaymentMethod, actor=CUSTOMER, order_id=ORDER_ID, card_token=card_token)


def declined_with_card_saved(saved_card: str = "pm_saved") -> Payment:
    """A payment whose first attempt was declined, the gateway having saved its card."""
    first = capture_cmd()
    payment = Payment.for_order(first)
    payment.begin_capture(first)
    payment.record_capture_answer(first, Declined("insufficient_funds", saved_card=saved_card))
    payment.clear_events()
    return payment


def test_the_next_attempt_charges_the_card_the_gateway_saved_not_the_token_used_up():
    payment = declined_with_card_saved("pm_saved")

    request = payment.begin_capture(retry_cmd())

    assert (request.card_token, request.card_saved) == ("pm_saved", True)
    assert (payment.card_token, payment.saved_card) == ("tok_visa", "pm_saved")
    assert (payment.attempts[0].card_token, payment.attempts[0].saved_card) == ("tok_visa", "pm_saved")


def test_a_new_card_is_charged_as_given_not_the_card_saved_before():
    payment = declined_with_card_saved("pm_saved")
    payment.update_payment_method(new_card("tok_new"))

    request = payment.begin_capture(retry_cmd())
    assert (request.card_token, request.card_saved) == ("tok_new", False)
    assert payment.saved_card == ""


def test_the_same_card_given_again_stays_saved_since_its_token_is_spent():
    payment = declined_with_card_saved("pm_saved")
    payment.update_payment_method(new_card("tok_visa"))  # the form sent again with the first card

    assert payment.begin_capture(retry_cmd()).card_token == "pm_saved"


def test_a_card_saved_by_an_answer_that_came_after_a_new_card_does_not_replace_the_new_card():
    payment = new_payment()
    first = capture_cmd()
    payment.begin_capture(first)
    payment.update_payment_method(new_card("tok_new"))  # given while the first attempt was still out

    payment.record_capture_answer(first, Declined("insufficient_funds", saved_card="pm_old_card"))

    assert payment.begin_capture(retry_cmd()).card_token == "tok_new"
    assert payment.attempts[0].saved_card == "pm_old_card"


def test_a_saved_card_charged_again_and_saved_again_stays_the_card_charged():
    payment = declined_with_card_saved("pm_saved")
    retry = retry_cmd()
    payment.begin_capture(retry)

    payment.record_capture_answer(retry, Declined("insufficient_funds", saved_card="pm_saved"))

    assert payment.begin_capture(retry_cmd()).card_token == "pm_saved"


@pytest.mark.parametrize(
    ("build", "code"),
    [(captured_payment, "already_captured"), (lambda: declined_payment("fraudulent"), "payment_abandoned")],
    ids=["captured", "abandoned"],
)
def test_the_payment_method_cannot_change_once_the_payment_is_captured_or_abandoned(build, code):
    payment = build()
    assert_refused(
        payment,
        lambda: payment.update_payment_method(
            command(UpdatePaymentMethod, actor=CUSTOMER, order_id=ORDER_ID, card_token="tok_new")
        ),
        InvalidCommand,
        code,
    )


def test_a_capture_after_a_capture_is_refused():
    payment = captured_payment()
    assert_refused(payment, lambda: payment.begin_capture(capture_cmd()), InvalidCommand, "already_captured")


@pytest.mark.parametrize("amount", ["99.99", "100.01"])
def test_a_capture_for_another_amount_than_the_orders_is_refused(amount):
    payment = new_payment("100.00")
    assert_refused(payment, lambda: payment.begin_capture(capture_cmd(amount)), InvalidCommand, "amount_mismatch")


def test_an_answer_for_an_attempt_never_begun_is_refused():
    payment = new_payment()
    assert_refused(
        payment, lambda: payment.record_capture_answer(capture_cmd(), Accepted(CHARGE)), InvalidCommand, "no_open_attempt"
    )


@pytest.mark.parametrize("first_answer", [Accepted(CHARGE), Declined("card_declined")], ids=["accepted", "declined"])
def test_an_attempt_is_answered_only_once(first_answer):
    payment = new_payment()
    cmd = capture_cmd()
    payment.begin_capture(cmd)
    payment.record_capture_answer(cmd, first_answer)
    payment.clear_events()
    assert_refused(
        payment, lambda: payment.record_capture_answer(cmd, Accepted("ch_other")), InvalidCommand, "no_open_attempt"
    )


def test_a_payment_is_never_captured_twice_even_with_two_attempts_open():
    payment = new_payment()
    first, second = capture_cmd(), capture_cmd()
    payment.begin_capture(first)
    try:
        payment.begin_capture(second)  # the first answer is unknown yet (e.g. a gateway timeout)
        payment.record_capture_answer(first, Accepted("ch_1"))
        payment.record_capture_answer(second, Accepted("ch_2"))
    except DomainError:
        pass  # refusing either step would keep the rule
    captures = [e for e in payment.pending_events if isinstance(e, PaymentCaptured)]
    assert len(captures) <= 1
    assert sum(a.status is AttemptStatus.CAPTURED for a in payment.attempts) <= 1


# == refunds through the gateway =======================================================================
def test_a_refund_needs_a_captured_payment():
    payment = new_payment()
    assert_refused(payment, lambda: payment.begin_refund(refund_cmd()), InvalidCommand, "not_captured")


def test_a_refund_needs_a_capture_not_just_a_declined_attempt():
    payment = new_payment()
    cmd = capture_cmd()
    payment.begin_capture(cmd)
    payment.record_capture_answer(cmd, Declined("card_declined"))
    payment.clear_events()
    assert_refused(payment, lambda: payment.begin_refund(refund_cmd()), InvalidCommand, "not_captured")


def test_beginning_a_refund_asks_the_gateway_to_refund_the_capture_with_the_refund_id_as_key():
    payment = captured_payment()
    request = payment.begin_refund(refund_cmd("r-1", "30.00"))
    assert request == RefundRequest(idempotency_key="r-1", charge=CHARGE, amount=eur("30"), reference="r-1",
                                    order_id=ORDER_ID)
    [requested] = payment.pending_events
    assert isinstance(requested, GatewayRefundRequested)
    assert requested.refund_id == "r-1" and requested.amount == eur("30")
    assert payment.refunds["r-1"].status is GatewayRefundStatus.SENT


def test_a_refund_is_asked_in_the_currency_the_gateway_confirmed_at_capture():
    payment = new_payment()
    cmd = capture_cmd()
    payment.begin_capture(cmd)
    payment.record_capture_answer(cmd, Accepted(CHARGE, currency="EUR"))

    assert payment.capture is not None and payment.capture.gateway_currency == "EUR"
    assert payment.begin_refund(refund_cmd("r-1", "30.00")).charge_currency == "EUR"


def test_a_capture_recorded_before_payments_kept_the_gateways_currency_still_loads_and_refunds():
    stored = captured_payment().model_dump(mode="json")
    for attempt in stored["attempts"]:
        del attempt["gateway_currency"]  # a state document written before the field existed

    payment = Payment.model_validate(stored)

    assert payment.begin_refund(refund_cmd("r-1", "30.00")).charge_currency == ""  # the adapter reads the charge


def test_a_refund_of_everything_captured_may_be_sent():
    payment = captured_payment("100.00")
    payment.begin_refund(refund_cmd("r-1", "100.00"))
    assert names(payment.pending_events) == ["GatewayRefundRequested"]


def test_a_refund_of_more_than_captured_is_refused():
    payment = captured_payment("100.00")
    assert_refused(payment, lambda: payment.begin_refund(refund_cmd("r-1", "100.01")), InvalidCommand, "exceeds_captured")


def test_refunds_in_flight_count_against_what_may_still_be_refunded():
    payment = captured_payment("100.00")
    refund_sent(payment, "r-1", "70.00")
    assert payment.refunded == eur("70")
    assert_refused(payment, lambda: payment.begin_refund(refund_cmd("r-2", "30.01")), InvalidCommand, "exceeds_captured")
    payment.begin_refund(refund_cmd("r-2", "30.00"))
    assert names(payment.pending_events) == ["GatewayRefundRequested"]


def test_settled_refunds_count_against_what_may_still_be_refunded():
    payment = captured_payment("100.00")
    cmd = refund_sent(payment, "r-1", "70.00")
    payment.record_refund_answer(cmd, Accepted("re_1"))
    payment.clear_events()
    assert_refused(payment, lambda: payment.begin_refund(refund_cmd("r-2", "30.01")), InvalidCommand, "exceeds_captured")


@pytest.mark.parametrize("amount", [eur("0"), eur("-1"), Money.of("10", "USD")], ids=["zero", "negative", "usd"])
def test_a_refund_amount_must_be_positive_and_in_the_payments_currency(amount):
    payment = captured_payment()
    assert_refused(payment, lambda: payment.begin_refund(refund_cmd("r-1", amount)), InvalidCommand, "invalid_amount")


def test_sending_the_same_refund_again_asks_the_same_thing_and_records_nothing_new():
    payment = captured_payment()
    cmd = refund_cmd("r-1", "30.00")
    first = payment.begin_refund(cmd)
    state, events = payment.model_dump(), payment.pending_events
    assert payment.begin_refund(cmd) == first
    # a retry is keyed by the refund id, even if it arrives as another command
    assert payment.begin_refund(refund_cmd("r-1", "30.00").model_copy(update={"command_id": "other"})) == first
    assert payment.pending_events == events
    assert payment.model_dump() == state


@pytest.mark.parametrize("answer", [Accepted("re_1"), Declined("expired_card")], ids=["settled", "declined"])
def test_a_refund_that_was_answered_cannot_be_sent_again(answer):
    payment = captured_payment()
    cmd = refund_sent(payment, "r-1", "30.00")
    payment.record_refund_answer(cmd, answer)
    payment.clear_events()
    assert_refused(payment, lambda: payment.begin_refund(cmd), InvalidCommand, "refund_already_answered")


def test_an_accepted_refund_is_settled_with_the_gateways_reference():
    payment = captured_payment()
    cmd = refund_sent(payment, "r-1", "30.00")
    payment.record_refund_answer(cmd, Accepted("re_77"))
    [settled] = payment.pending_events
    assert isinstance(settled, GatewayRefundSettled)
    assert settled.gateway_reference == "re_77" and settled.amount == eur("30") and settled.refund_id == "r-1"
    assert payment.refunds["r-1"].status is GatewayRefundStatus.SETTLED


def test_a_declined_refund_records_the_decline_code():
    payment = captured_payment()
    cmd = refund_sent(payment, "r-1", "30.00")
    payment.record_refund_answer(cmd, Declined("charge_disputed"))
    [declined] = payment.pending_events
    assert isinstance(declined, GatewayRefundDeclined)
    assert declined.decline_code == "charge_disputed" and declined.amount == eur("30")
    assert payment.refunds["r-1"].status is GatewayRefundStatus.DECLINED


def test_a_declined_refund_frees_its_amount():
    payment = captured_payment("100.00")
    cmd = refund_sent(payment, "r-1", "100.00")
    payment.record_refund_answer(cmd, Declined("charge_disputed"))
    payment.clear_events()
    assert payment.refunded == eur("0")
    payment.begin_refund(refund_cmd("r-2", "100.00"))
    assert names(payment.pending_events) == ["GatewayRefundRequested"]


def test_an_answer_for_a_refund_never_sent_is_refused():
    payment = captured_payment()
    assert_refused(
        payment, lambda: payment.record_refund_answer(refund_cmd("r-9"), Accepted("re_1")), InvalidCommand, "no_open_refund"
    )


def test_a_refund_is_answered_only_once():
    payment = captured_payment()
    cmd = refund_sent(payment, "r-1", "30.00")
    payment.record_refund_answer(cmd, Accepted("re_1"))
    payment.clear_events()
    assert_refused(payment, lambda: payment.record_refund_answer(cmd, Declined("late")), InvalidCommand, "no_open_refund")


def test_a_customer_may_not_change_the_payment_method_of_someone_elses_order():
    payment = declined_payment("insufficient_funds")
    assert_refused(
        payment,
        lambda: payment.update_payment_method(
            command(UpdatePaymentMethod, actor=OTHER_CUSTOMER, order_id=ORDER_ID, card_token="tok_attacker")
        ),
        NotAuthorized,
        "not_your_order",
    )


@pytest.mark.parametrize("actor", [SUPPORT, SYSTEM], ids=["support", "system"])
def test_support_and_system_may_change_the_payment_method_of_any_order(actor):
    payment = declined_payment("insufficient_funds")
    payment.update_payment_method(command(UpdatePaymentMethod, actor=actor, order_id=ORDER_ID, card_token="tok_2"))
    assert payment.card_token == "tok_2"
