"""What payments may rely on from its gateway, proven on the simulator and on Stripe's
test mode with the same tests (see conftest.py): money moves once per business id,
declines are facts, refusals are clear, look-ups tell the truth and move nothing,
and the settlement listing agrees to the minor unit.

Cards used are Stripe's documented test cards, which the simulator knows too.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from adapters.stripe_gateway import StripeGateway
from domain.payments.gateway import (
    Accepted,
    CaptureRequest,
    Declined,
    GatewayRefusedRequest,
    NotFound,
    RefundRequest,
)
from domain.shared.money import Money
from tests.contract.conftest import Provider


def capture_request(provider: Provider, amount: str = "120.00", currency: str = "EUR",
                    card: str = "pm_card_visa", saved: bool = False) -> CaptureRequest:
    order_id = provider.business_id("order")
    return CaptureRequest(idempotency_key=provider.business_id("attempt"), amount=Money.of(amount, currency),
                          card_token=card, reference=order_id, card_saved=saved)


def refund_request(provider: Provider, payment: str, amount: str, currency: str = "EUR") -> RefundRequest:
    refund_id = provider.business_id("refund")
    return RefundRequest(idempotency_key=refund_id, charge=payment, amount=Money.of(amount, currency),
                         reference=refund_id)


def captured(provider: Provider, request: CaptureRequest) -> str:
    answer = provider.gateway.capture(request)
    assert isinstance(answer, Accepted), answer
    return answer.reference


def test_a_capture_is_accepted_with_the_payment_intent_as_its_reference(provider: Provider):
    answer = provider.gateway.capture(capture_request(provider))

    assert isinstance(answer, Accepted) and answer.reference.startswith("pi_")


def test_the_same_business_id_captures_once_and_answers_the_same(provider: Provider):
    request = capture_request(provider)

    first, again = provider.gateway.capture(request), provider.gateway.capture(request)

    assert first == again
    today = datetime.now(timezone.utc).date()
    lines = [line for line in provider.gateway.settlements(today) if line.business_id == request.idempotency_key]
    assert [(line.kind, line.reference, line.amount) for line in lines] == [("capture", first.reference, request.amount)]


def test_the_same_business_id_with_another_amount_is_refused_and_moves_nothing_more(provider: Provider):
    request = capture_request(provider, "10.00")
    reference = captured(provider, request)

    with pytest.raises(GatewayRefusedRequest, match="idempotency"):
        provider.gateway.capture(CaptureRequest(request.idempotency_key, Money.of("11.00", "EUR"),
                                                request.card_token, request.reference))

    today = datetime.now(timezone.utc).date()
    assert [line.reference for line in provider.gateway.settlements(today)
            if line.business_id == request.idempotency_key] == [reference]


@pytest.mark.parametrize(("card", "code"), [
    ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ("tok_chargeDeclinedFraudulent", "fraudulent"),
])
def test_a_declined_card_is_a_decline_with_the_issuers_code_and_moves_no_money(provider: Provider, card, code):
    request = capture_request(provider, card=card)

    assert provider.gateway.capture(request) == Declined(code)
    assert provider.gateway.capture(request) == Declined(code)  # a decline is final for its key
    today = datetime.now(timezone.utc).date()
    assert [line for line in provider.gateway.settlements(today) if line.business_id == request.idempotency_key] == []


def test_a_refund_is_accepted_once_per_business_id(provider: Provider):
    payment = captured(provider, capture_request(provider, "100.00"))
    request = refund_request(provider, payment, "60.00")

    first, again = provider.gateway.refund(request), provider.gateway.refund(request)

    assert isinstance(first, Accepted) and first.reference.startswith("re_") and first == again
    today = datetime.now(timezone.utc).date()
    lines = [line for line in provider.gateway.settlements(today) if line.business_id == request.idempotency_key]
    assert [(line.kind, line.reference, line.amount) for line in lines] == [("refund", first.reference, request.amount)]


def test_a_refund_above_what_remains_is_refused_and_moves_no_money(provider: Provider):
    payment = captured(provider, capture_request(provider, "100.00"))
    assert isinstance(provider.gateway.refund(refund_request(provider, payment, "60.00")), Accepted)
    too_much = refund_request(provider, payment, "40.01")

    with pytest.raises(GatewayRefusedRequest):
        provider.gateway.refund(too_much)

    assert provider.gateway.find_refund(too_much) == NotFound()
    assert isinstance(provider.gateway.refund(refund_request(provider, payment, "40.00")), Accepted)


@pytest.mark.parametrize("currency", ["EUR", "JPY"])
def test_a_capture_answer_carries_the_currency_the_provider_charged_in(provider: Provider, currency: str):
    answer = provider.gateway.capture(capture_request(provider, "5000", currency))

    assert isinstance(answer, Accepted) and answer.currency == currency


@pytest.mark.parametrize("kept", [True, False], ids=["currency kept at capture", "capture recorded before"])
def test_a_refund_in_another_currency_than_the_payment_is_refused_before_anything_moves(provider: Provider,
                                                                                       kept: bool):
    answer = provider.gateway.capture(capture_request(provider, "100.00", "EUR"))
    assert isinstance(answer, Accepted)
    in_dollars = refund_request(provider, answer.reference, "10.00", "USD")
    if kept:  # payments asks with the currency the capture's answer carried
        in_dollars = replace(in_dollars, charge_currency=answer.currency)

    with pytest.raises(GatewayRefusedRequest, match="USD"):
        provider.gateway.refund(in_dollars)

    assert provider.gateway.find_refund(in_dollars) == NotFound()


def test_zero_decimal_amounts_cross_exactly(provider: Provider):
    request = capture_request(provider, "5000", "JPY")
    payment = captured(provider, request)
    refund = refund_request(provider, payment, "1234", "JPY")
    assert isinstance(provider.gateway.refund(refund), Accepted)

    today = datetime.now(timezone.utc).date()
    amounts = {line.business_id: line.amount for line in provider.gateway.settlements(today)}
    assert amounts[request.idempotency_key] == Money.of("5000", "JPY")
    assert amounts[refund.idempotency_key] == Money.of("1234", "JPY")


def test_look_ups_find_what_moved_and_say_so_when_nothing_did(provider: Provider):
    request = capture_request(provider, "42.00")
    payment = captured(provider, request)
    refund = refund_request(provider, payment, "2.00")
    accepted_refund = provider.gateway.refund(refund)

    assert provider.eventually(lambda: provider.gateway.find_capture(request),
                               lambda a: a != NotFound()) == Accepted(payment, "EUR")
    assert provider.gateway.find_refund(refund) == accepted_refund
    assert provider.gateway.find_capture(capture_request(provider)) == NotFound()
    assert provider.gateway.find_refund(refund_request(provider, payment, "2.00")) == NotFound()


def test_a_refund_look_up_for_a_payment_the_provider_does_not_know_is_no_answer(provider: Provider):
    # Another account's key, or test records asked of live: "not found" would free money that
    # may have gone out from the right account.
    payment = captured(provider, capture_request(provider))
    stranger = replace(refund_request(provider, payment, "2.00"), charge="pi_not_of_this_account")

    with pytest.raises(GatewayRefusedRequest, match="resource_missing|No such"):
        provider.gateway.find_refund(stranger)


def test_a_look_up_finds_a_decline(provider: Provider):
    # Stripe's card that is saved on a Customer and then declines each charge: a PaymentIntent
    # exists to find (a card declined as it is saved never gets one: nothing to look up).
    request = capture_request(provider, card="pm_card_chargeCustomerFail")
    declined = provider.gateway.capture(request)

    assert isinstance(declined, Declined)
    assert provider.eventually(lambda: provider.gateway.find_capture(request),
                               lambda a: a != NotFound()) == declined


def test_a_card_charged_once_can_be_charged_again_by_a_later_attempt(provider: Provider):
    # A customer's token is good for one use: the later attempts of a failed payment charge the
    # card as the first attempt left it saved (`saved_card`), with no customer present.
    first = provider.gateway.capture(capture_request(provider, card="tok_visa"))
    assert isinstance(first, Accepted) and first.saved_card.startswith("pm_")

    again = provider.gateway.capture(capture_request(provider, card=first.saved_card, saved=True))

    assert isinstance(again, Accepted) and again.reference != first.reference
    assert again.saved_card == first.saved_card


def test_a_declined_cards_next_attempt_declines_for_the_card_not_for_a_used_up_token(provider: Provider):
    first = provider.gateway.capture(capture_request(provider, card="tok_chargeDeclinedInsufficientFunds"))
    assert first == Declined("insufficient_funds") and first.saved_card.startswith("pm_")

    retry = capture_request(provider, card=first.saved_card, saved=True)
    assert provider.gateway.capture(retry) == Declined("insufficient_funds")


def test_look_ups_move_no_money(provider: Provider):
    request = capture_request(provider, "7.00")
    refund = refund_request(provider, captured(provider, request), "7.00")
    today = datetime.now(timezone.utc).date()

    def this_runs_lines() -> list:  # the account may be shared: look at this run's money only
        return [line for line in provider.gateway.settlements(today) if provider.run in line.order_id]

    before = this_runs_lines()
    provider.gateway.find_capture(capture_request(provider))
    provider.gateway.find_refund(refund)
    provider.gateway.find_capture(request)

    assert this_runs_lines() == before
    assert provider.gateway.find_refund(refund) == NotFound()


def test_a_wrong_api_key_is_refused_clearly_and_moves_no_money(provider: Provider):
    wrong = StripeGateway("sk_test_not_a_real_key", provider.gateway.api_base if provider.name == "simulator" else None)
    request = capture_request(provider)
    try:
        with pytest.raises(GatewayRefusedRequest, match="API key"):
            wrong.capture(request)
    finally:
        wrong.close()

    assert provider.gateway.find_capture(request) == NotFound()


def test_the_gateway_names_the_test_mode_account_its_key_speaks_for(provider: Provider):
    # Payments keeps it with every request; a look-up under another account's key is refused.
    mode, _, account_id = provider.gateway.account().partition(":")
    assert mode == "test" and account_id.startswith("acct_")


def test_a_refund_the_cards_bank_sends_back_later_is_listed_as_its_reversal(provider: Provider):
    """Stripe's pm_card_refundFail: the refund succeeds, then fails some time later and a
    `refund_failure` gives the money back. The listing says so, under the refund's id."""
    payment = captured(provider, capture_request(provider, "50.00", card="pm_card_refundFail"))
    request = refund_request(provider, payment, "20.00")
    paid = provider.gateway.refund(request)
    assert isinstance(paid, Accepted)
    today = datetime.now(timezone.utc).date()

    def reversals() -> list:
        return [(line.kind, line.reference, line.amount) for line in provider.gateway.settlements(today)
                if line.business_id == request.idempotency_key and line.kind == "refund_reversal"]

    deadline = time.monotonic() + (10 if provider.name == "simulator" else 600)  # Stripe: "some time later"
    while not (found := reversals()) and time.monotonic() < deadline:
        time.sleep(0.5 if provider.name == "simulator" else 10)

    assert found == [("refund_reversal", paid.reference, request.amount)]
