"""The Stripe simulator, run as a real process, driven through settleflow's Stripe adapter
(the official SDK underneath) and, where the wire itself is the point, raw HTTP.

Every rule is checked on the simulator's ledger: the captures and refunds that actually
moved money. The scenario tokens are the simulator's own (Stripe has no such cards), so
they are proven here rather than in the contract suite.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone

import httpx
import pytest

from adapters.settings import SIMULATOR_API_KEY
from adapters.stripe_gateway import CAPTURE_REQUESTS_PER_TRY, SAVING_STEP_TRIES, StripeGateway, stripe_business_id
from domain.payments.gateway import (
    Accepted,
    CaptureRequest,
    Declined,
    GatewayRefusedRequest,
    GatewayUnavailable,
    NotFound,
    RefundRequest,
)
from domain.shared.money import Money
from simulators.control import configure, fail_next, one_time_token, read_calls, read_ledger, reset
from tests.gateway_process import free_port, gateway_simulator

HANG_SECONDS = 1.0
AUTH = {"Authorization": f"Bearer {SIMULATOR_API_KEY}"}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with gateway_simulator("--hang-seconds", str(HANG_SECONDS)) as url:
        yield url


@pytest.fixture(autouse=True)
def clean_simulator(base_url: str) -> None:
    # Each test starts from an empty account and default knobs, so ledger counts are exact.
    reset(base_url)
    configure(base_url, latency_ms=0, error_rate=0.0, hang_seconds=HANG_SECONDS, frozen_time=None,
              settlement_currency="")


@pytest.fixture
def gateway(base_url: str) -> Iterator[StripeGateway]:
    gateway = StripeGateway(SIMULATOR_API_KEY, base_url, timeout_seconds=5.0)
    yield gateway
    gateway.close()


@pytest.fixture
def impatient(base_url: str) -> Iterator[StripeGateway]:
    """Gives up on an answer well before the simulator's hanging tokens answer."""
    gateway = StripeGateway(SIMULATOR_API_KEY, base_url, timeout_seconds=0.3)
    yield gateway
    gateway.close()


def _key() -> str:
    return uuid.uuid4().hex


def capture_of(token: str = "tok_visa", amount: str = "120.00", currency: str = "EUR",
               key: str | None = None, saved: bool = False) -> CaptureRequest:
    return CaptureRequest(key or _key(), Money.of(amount, currency), token, "order-1", card_saved=saved)


def refund_of(payment: str, amount: str, currency: str = "EUR", key: str | None = None) -> RefundRequest:
    key = key or _key()
    return RefundRequest(key, payment, Money.of(amount, currency), key)


def paid(gateway: StripeGateway, token: str = "tok_visa", amount: str = "120.00", currency: str = "EUR") -> str:
    answer = gateway.capture(capture_of(token, amount, currency))
    assert isinstance(answer, Accepted), answer
    return answer.reference


def post(base_url: str, path: str, form: dict[str, str], key: str | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    idempotency = {"Idempotency-Key": key} if key else {}
    return httpx.post(f"{base_url}{path}", data=form, headers={**AUTH, **idempotency, **(headers or {})})


VISA_FORM = {"amount": "500", "currency": "eur", "confirm": "true", "payment_method": "pm_card_visa",
             "metadata[order_id]": "o-1"}


# -- Stripe's objects and idempotency ------------------------------------------------------

def test_a_capture_is_a_succeeded_payment_intent_with_its_charge_and_balance_transaction(base_url: str):
    answer = post(base_url, "/v1/payment_intents", VISA_FORM, key=_key())

    intent = answer.json()
    assert answer.status_code == 200
    assert (intent["object"], intent["status"], intent["amount"], intent["amount_received"], intent["currency"]) == (
        "payment_intent", "succeeded", 500, 500, "eur")
    assert intent["metadata"] == {"order_id": "o-1"}
    charge = httpx.get(f"{base_url}/v1/charges/{intent['latest_charge']}", headers=AUTH).json()
    assert (charge["payment_intent"], charge["amount"], charge["balance_transaction"].startswith("txn_")) == (
        intent["id"], 500, True)
    assert [(c["id"], c["amount"], c["currency"], c["reference"]) for c in read_ledger(base_url)["captures"]] == [
        (intent["id"], "5.00", "EUR", "o-1")]


def test_the_same_key_and_parameters_replay_the_stored_answer_byte_for_byte(base_url: str):
    key = _key()
    first = post(base_url, "/v1/payment_intents", VISA_FORM, key=key)
    again = post(base_url, "/v1/payment_intents", VISA_FORM, key=key)

    assert (first.status_code, first.content) == (again.status_code, again.content)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(read_ledger(base_url)["captures"]) == 1


def test_the_same_key_with_other_parameters_is_an_idempotency_error(base_url: str):
    key = _key()
    post(base_url, "/v1/payment_intents", VISA_FORM, key=key)

    other = post(base_url, "/v1/payment_intents", {**VISA_FORM, "amount": "501"}, key=key)

    assert other.status_code == 400 and other.json()["error"]["type"] == "idempotency_error"
    assert len(read_ledger(base_url)["captures"]) == 1


def test_a_key_used_for_a_payment_cannot_be_reused_for_a_refund(gateway: StripeGateway, base_url: str):
    request = capture_of()
    payment = gateway.capture(request).reference

    with pytest.raises(GatewayRefusedRequest, match="idempotency"):
        gateway.refund(refund_of(payment, "1.00", key=request.idempotency_key))

    assert read_ledger(base_url)["refunds"] == []


def test_concurrent_retries_with_one_key_move_money_once(gateway: StripeGateway, base_url: str):
    request = capture_of()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: gateway.capture(request), range(16)))

    assert len(set(answers)) == 1
    assert len(read_ledger(base_url)["captures"]) == 1


def test_payment_requests_without_an_idempotency_key_are_refused(base_url: str):
    answer = post(base_url, "/v1/payment_intents", VISA_FORM)

    assert answer.status_code == 400 and answer.json()["error"]["code"] == "idempotency_key_missing"
    assert read_ledger(base_url)["captures"] == []


def test_a_request_refused_before_running_leaves_its_key_free(gateway: StripeGateway, base_url: str):
    key = _key()
    bad = post(base_url, "/v1/payment_intents", {**VISA_FORM, "currency": "EUR"}, key=key)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "currency"

    assert post(base_url, "/v1/payment_intents", VISA_FORM, key=key).status_code == 200


@pytest.mark.parametrize("amount", ["1.5", "-5", "0", "1e2", "", "NaN"])
def test_amounts_must_be_positive_integers_in_minor_units(base_url: str, amount: str):
    answer = post(base_url, "/v1/payment_intents", {**VISA_FORM, "amount": amount}, key=_key())

    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    assert read_ledger(base_url)["captures"] == []


# -- the API key --------------------------------------------------------------------------

@pytest.mark.parametrize("authorization", [None, "Bearer sk_test_wrong", f"Basic {SIMULATOR_API_KEY}"])
def test_calls_without_the_right_api_key_are_401_and_touch_nothing(base_url: str, authorization: str | None):
    headers = {"Idempotency-Key": _key(), **({"Authorization": authorization} if authorization else {})}
    answer = httpx.post(f"{base_url}/v1/payment_intents", data=VISA_FORM, headers=headers)

    assert answer.status_code == 401 and "API Key" in answer.json()["error"]["message"]
    assert SIMULATOR_API_KEY not in answer.text
    assert read_ledger(base_url)["captures"] == []


def test_the_adapter_refuses_a_wrong_key_without_retrying(base_url: str):
    wrong = StripeGateway("sk_test_wrong", base_url)
    try:
        with pytest.raises(GatewayRefusedRequest, match="API key"):
            wrong.capture(capture_of())
    finally:
        wrong.close()


# -- money in minor units ---------------------------------------------------------------

@pytest.mark.parametrize(("amount", "currency", "minor"), [
    ("120.00", "EUR", 12000), ("5000", "JPY", 5000), ("5000", "KRW", 5000), ("1.230", "KWD", 1230),
    ("700", "ISK", 70000),
])
def test_amounts_cross_in_stripes_minor_units_of_the_currency(gateway: StripeGateway, base_url: str,
                                                              amount, currency, minor):
    payment = paid(gateway, amount=amount, currency=currency)

    [entry] = read_ledger(base_url)["captures"]
    assert (entry["id"], entry["minor"], entry["currency"]) == (payment, minor, currency)


def test_an_amount_stripe_cannot_take_is_refused_never_rounded(gateway: StripeGateway, base_url: str):
    payment = paid(gateway, amount="1.230", currency="KWD")

    with pytest.raises(GatewayRefusedRequest, match="divisible by 10"):
        gateway.refund(refund_of(payment, "0.005", "KWD"))

    assert read_ledger(base_url)["refunds"] == []


def test_a_currency_the_provider_does_not_take_is_a_clear_refusal(base_url: str):
    answer = post(base_url, "/v1/payment_intents", {**VISA_FORM, "currency": "xts"}, key=_key())

    assert answer.status_code == 400
    assert answer.json()["error"] == {"type": "invalid_request_error", "code": "parameter_invalid",
                                      "param": "currency", "message": "Invalid currency: xts."}


# -- Stripe's test cards and settleflow's aliases ------------------------------------------

@pytest.mark.parametrize(("token", "decline_code", "declined_when"), [
    ("tok_capture_declined", "insufficient_funds", "charged"),
    ("tok_card_stolen", "card_stolen", "charged"),
    ("tok_card_lost", "card_lost", "charged"),
    ("tok_fraudulent", "fraudulent", "charged"),
    ("pm_card_chargeCustomerFail", "generic_decline", "charged"),
    # Stripe's declining test cards decline as they are saved on a Customer: no PaymentIntent.
    ("pm_card_chargeDeclined", "generic_decline", "saved"),
    ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds", "saved"),
    ("pm_card_chargeDeclinedStolenCard", "stolen_card", "saved"),
    ("tok_chargeDeclinedExpiredCard", "expired_card", "saved"),
])
def test_declining_cards_decline_with_their_code_and_move_no_money(gateway: StripeGateway, base_url: str,
                                                                   token: str, decline_code: str, declined_when: str):
    request = capture_of(token)

    assert gateway.capture(request) == Declined(decline_code)
    assert gateway.capture(request) == Declined(decline_code)  # a decline is final for its key
    assert gateway.find_capture(request) == (Declined(decline_code) if declined_when == "charged" else NotFound())
    assert read_ledger(base_url)["captures"] == []


def test_a_decline_is_a_402_card_error_with_the_payment_intent(base_url: str):
    answer = post(base_url, "/v1/payment_intents", {**VISA_FORM, "payment_method": "pm_card_chargeDeclined"},
                  key=_key())

    error = answer.json()["error"]
    assert answer.status_code == 402
    assert (error["type"], error["code"], error["decline_code"]) == ("card_error", "card_declined", "generic_decline")
    assert error["payment_intent"]["status"] == "requires_payment_method"


@pytest.mark.parametrize("token", ["tok_visa", "pm_card_visa", "tok_mastercard", "tok_new"])
def test_other_cards_succeed_like_visa(gateway: StripeGateway, token: str):
    assert isinstance(gateway.capture(capture_of(token)), Accepted)


def test_a_refund_of_a_payment_whose_currency_stripe_confirmed_is_one_request(gateway: StripeGateway, base_url: str):
    captured = gateway.capture(capture_of(amount="50.00"))
    assert isinstance(captured, Accepted) and captured.currency == "EUR"
    before = len(read_calls(base_url))
    request = RefundRequest(_key(), captured.reference, Money.of("20.00", "EUR"), "r-1",
                            order_id="order-of-the-request", charge_currency=captured.currency)

    assert isinstance(gateway.refund(request), Accepted)

    assert read_calls(base_url)[before:] == ["POST /v1/refunds"]
    [refund] = read_ledger(base_url)["refunds"]
    assert (refund["amount"], refund["metadata"]["order_id"]) == ("20.00", "order-of-the-request")


def test_a_refund_of_a_capture_recorded_before_its_currency_was_kept_reads_the_payment_first(
        gateway: StripeGateway, base_url: str):
    payment = paid(gateway, amount="50.00")
    before = len(read_calls(base_url))

    assert isinstance(gateway.refund(refund_of(payment, "20.00")), Accepted)

    assert read_calls(base_url)[before:] == [f"GET /v1/payment_intents/{payment}", "POST /v1/refunds"]
    [refund] = read_ledger(base_url)["refunds"]
    assert refund["metadata"]["order_id"] == "order-1"  # from the payment's own metadata


def test_a_refund_declined_card_fails_the_refund_and_moves_no_money(gateway: StripeGateway, base_url: str):
    payment = paid(gateway, "tok_refund_declined")
    request = refund_of(payment, "20.00")

    assert gateway.refund(request) == Declined("expired_or_canceled_card")
    assert gateway.find_refund(request) == Declined("expired_or_canceled_card")
    assert read_ledger(base_url)["refunds"] == []


def test_a_flaky_card_fails_twice_then_succeeds_once(gateway: StripeGateway, base_url: str):
    request = capture_of("tok_flaky")
    for _ in range(2):
        with pytest.raises(GatewayUnavailable, match="503"):
            gateway.capture(request)
    assert read_ledger(base_url)["captures"] == []

    captured = gateway.capture(request)

    assert isinstance(captured, Accepted) and gateway.capture(request) == captured
    assert [c["id"] for c in read_ledger(base_url)["captures"]] == [captured.reference]


def test_a_timeout_after_the_charge_then_a_retry_returns_the_same_payment(impatient: StripeGateway, base_url: str):
    request = capture_of("tok_timeout")
    with pytest.raises(GatewayUnavailable):
        impatient.capture(request)
    charged = read_ledger(base_url)["captures"]
    assert len(charged) == 1  # the card was charged although the client stopped waiting

    assert impatient.capture(request) == Accepted(charged[0]["id"], "EUR")  # the stored answer, at once
    assert len(read_ledger(base_url)["captures"]) == 1


def test_a_refund_timeout_then_a_retry_returns_the_same_refund(gateway: StripeGateway, impatient: StripeGateway,
                                                               base_url: str):
    payment = paid(gateway, "tok_timeout")
    request = refund_of(payment, "20.00")
    with pytest.raises(GatewayUnavailable):
        impatient.refund(request)

    retried = impatient.refund(request)

    assert [r["id"] for r in read_ledger(base_url)["refunds"]] == [retried.reference]


def test_an_unavailable_card_is_always_503_and_never_charged(gateway: StripeGateway, base_url: str):
    request = capture_of("tok_unavailable")
    for _ in range(3):
        with pytest.raises(GatewayUnavailable):
            gateway.capture(request)

    not_found = gateway.find_capture(request)
    assert not_found == NotFound()
    # The simulator's search is current at once: "not found" waits only for a try still sending —
    # its PaymentIntent goes last, after the steps that save the card, each up to `on_the_wire`.
    assert gateway.on_the_wire == timedelta(seconds=4 * 5.0)  # its timeout: 5 s
    assert not_found.settles_after == CAPTURE_REQUESTS_PER_TRY * gateway.on_the_wire
    assert read_ledger(base_url)["captures"] == []


def test_refunds_unavailable_captures_but_never_refunds(gateway: StripeGateway, base_url: str):
    payment = paid(gateway, "tok_refunds_unavailable")
    request = refund_of(payment, "5.00")
    for _ in range(3):
        with pytest.raises(GatewayUnavailable):
            gateway.refund(request)

    assert gateway.find_refund(request) == NotFound()
    assert read_ledger(base_url)["refunds"] == []


# -- the scenarios reconciliation relies on -------------------------------------------------

def test_a_refund_whose_answer_is_lost_moved_money_once_and_a_look_up_finds_it(
        gateway: StripeGateway, impatient: StripeGateway, base_url: str):
    payment = paid(gateway, "tok_refund_answer_lost")
    request = refund_of(payment, "20.00")

    with pytest.raises(GatewayUnavailable):
        impatient.refund(request)  # the client gives up
    with pytest.raises(GatewayUnavailable):
        gateway.refund(request)  # a patient client gets a 503 after the hang: still no answer

    [moved] = read_ledger(base_url)["refunds"]
    assert gateway.find_refund(request) == Accepted(moved["id"])
    assert moved["reference"] == request.idempotency_key and moved["amount"] == "20.00"


def test_a_refund_that_never_arrives_moves_nothing_and_a_look_up_finds_nothing(
        gateway: StripeGateway, impatient: StripeGateway, base_url: str):
    payment = paid(gateway, "tok_refund_never_arrives")
    request = refund_of(payment, "20.00")

    with pytest.raises(GatewayUnavailable):
        impatient.refund(request)
    with pytest.raises(GatewayUnavailable):
        gateway.refund(request)

    assert gateway.find_refund(request) == NotFound()
    assert read_ledger(base_url)["refunds"] == []


def test_a_capture_whose_answer_is_lost_charged_once_and_a_look_up_finds_it(
        gateway: StripeGateway, impatient: StripeGateway, base_url: str):
    request = capture_of("tok_capture_answer_lost")

    for client in (impatient, gateway, impatient):
        with pytest.raises(GatewayUnavailable):
            client.capture(request)

    [charged] = read_ledger(base_url)["captures"]
    assert gateway.find_capture(request) == Accepted(charged["id"], "EUR")


def test_a_capture_that_never_arrives_charges_nothing_and_a_look_up_finds_nothing(
        gateway: StripeGateway, impatient: StripeGateway, base_url: str):
    request = capture_of("tok_capture_never_arrives")

    for client in (impatient, gateway):
        with pytest.raises(GatewayUnavailable):
            client.capture(request)

    assert gateway.find_capture(request) == NotFound()
    assert read_ledger(base_url)["captures"] == []


def test_a_look_up_that_finds_no_capture_still_names_the_card_the_attempt_saved_on_the_way(
        gateway: StripeGateway, base_url: str):
    # The customer's token was used up saving the card; the next attempt must charge that card.
    configure(base_url, hang_seconds=0)
    request = capture_of(one_time_token(base_url, "tok_capture_never_arrives"))
    with pytest.raises(GatewayUnavailable):
        gateway.capture(request)

    found = gateway.find_capture(request)

    assert found == NotFound() and found.saved_card.startswith("pm_")
    method = httpx.get(f"{base_url}/v1/payment_methods/{found.saved_card}", headers=AUTH).json()
    assert method["customer"].startswith("cus_")
    assert gateway.find_capture(capture_of()).saved_card == ""  # an attempt that never saved a card
    assert read_ledger(base_url)["captures"] == []


def test_the_adapter_knows_whose_account_its_key_speaks_for_from_the_gateway(gateway: StripeGateway, base_url: str):
    before = len(read_calls(base_url))
    assert gateway.account() == "test:acct_simulator"
    assert gateway.account() == "test:acct_simulator"
    assert read_calls(base_url)[before:] == ["GET /v1/account"]  # read once, then kept
    with gateway_simulator("--account-id", "acct_other") as other_url:
        other = StripeGateway(SIMULATOR_API_KEY, other_url)
        try:
            assert other.account() == "test:acct_other"
        finally:
            other.close()


def test_a_declared_account_must_be_the_keys_and_a_restricted_key_needs_one(base_url: str):
    def account_of(url: str, declared: str | None = None) -> str:
        gateway = StripeGateway(SIMULATOR_API_KEY, url, account_id=declared)
        try:
            return gateway.account()
        finally:
            gateway.close()

    assert account_of(base_url, "acct_simulator") == "test:acct_simulator"
    with pytest.raises(GatewayRefusedRequest, match="speaks for acct_simulator, not acct_other"):
        account_of(base_url, "acct_other")
    with gateway_simulator("--restricted-key") as restricted:
        with pytest.raises(GatewayRefusedRequest, match="SETTLEFLOW_STRIPE_ACCOUNT"):
            account_of(restricted)  # whose key it is cannot be guessed
        assert account_of(restricted, "acct_declared") == "test:acct_declared"


def test_a_look_up_for_a_request_sent_to_another_account_is_refused_without_asking(
        gateway: StripeGateway, impatient: StripeGateway, base_url: str):
    # Another account's search and refund list would find nothing, and "not found" would free
    # money that may have moved in the account the request went to.
    request = capture_of("tok_capture_answer_lost")
    with pytest.raises(GatewayUnavailable):
        impatient.capture(request)
    sent_elsewhere = CaptureRequest(request.idempotency_key, request.amount, request.card_token, request.reference,
                                    sent_to="test:acct_1AnotherAccount")
    payment = paid(gateway)
    refund = refund_of(payment, "1.00")
    gateway.refund(refund)
    assert gateway.account() == "test:acct_simulator"
    before = len(read_calls(base_url))

    with pytest.raises(GatewayRefusedRequest, match="acct_1AnotherAccount"):
        gateway.find_capture(sent_elsewhere)
    with pytest.raises(GatewayRefusedRequest, match="live:acct_simulator"):
        gateway.find_refund(RefundRequest(refund.idempotency_key, payment, refund.amount, refund.reference,
                                          sent_to="live:acct_simulator"))
    assert read_calls(base_url)[before:] == []
    # Asked of the account it went to, the same look-ups answer.
    mine = CaptureRequest(request.idempotency_key, request.amount, request.card_token, request.reference,
                          sent_to=gateway.account())
    assert isinstance(gateway.find_capture(mine), Accepted)
    assert isinstance(gateway.find_refund(refund), Accepted)


def test_refused_requests_move_nothing_and_a_look_up_finds_nothing(gateway: StripeGateway, base_url: str):
    capture = capture_of("tok_capture_refused")
    with pytest.raises(GatewayRefusedRequest, match="invalid_request_error"):
        gateway.capture(capture)
    payment = paid(gateway, "tok_refund_refused")
    refund = refund_of(payment, "1.00")
    with pytest.raises(GatewayRefusedRequest, match="invalid_request_error"):
        gateway.refund(refund)

    assert gateway.find_capture(capture) == NotFound()
    assert gateway.find_refund(refund) == NotFound()
    assert [c["id"] for c in read_ledger(base_url)["captures"]] == [payment]
    assert read_ledger(base_url)["refunds"] == []


def test_a_card_that_asks_for_3d_secure_is_declined_at_once_and_leaves_nothing_waiting(gateway: StripeGateway,
                                                                                      base_url: str):
    # Nobody is there to authenticate a merchant's capture: it is sent off-session, so Stripe
    # declines it instead of leaving a payment the customer could still complete later.
    request = capture_of("tok_threeDSecure2Required")

    answer = gateway.capture(request)

    assert answer == Declined("authentication_required") == gateway.find_capture(request)
    [intent] = httpx.get(f"{base_url}/v1/payment_intents/search",
                         params={"query": f"metadata['attempt_id']:'{request.idempotency_key}'"},
                         headers=AUTH).json()["data"]
    assert intent["status"] == "requires_payment_method"
    assert "POST /v1/payment_intents/" + intent["id"] + "/cancel" not in read_calls(base_url)
    assert read_ledger(base_url)["captures"] == []


def test_a_look_up_cancels_a_capture_left_waiting_for_3d_secure_and_then_answers_declined(
        gateway: StripeGateway, base_url: str):
    # The capture's own answer was lost: the intent still waits when reconciliation looks it up.
    request = capture_of("tok_threeDSecure2Required")
    left = post(base_url, "/v1/payment_intents", {**VISA_FORM, "payment_method": "tok_threeDSecure2Required",
                                                   "metadata[attempt_id]": request.idempotency_key},
                key=request.idempotency_key)
    assert left.json()["status"] == "requires_action"

    assert gateway.find_capture(request) == Declined("authentication_required")
    intent = httpx.get(f"{base_url}/v1/payment_intents/{left.json()['id']}", headers=AUTH).json()
    assert intent["status"] == "canceled"
    again = post(base_url, f"/v1/payment_intents/{intent['id']}/cancel", {})
    assert (again.status_code, again.json()["error"]["code"]) == (400, "payment_intent_unexpected_state")


# -- cards: a token is good for one use, a saved card for later attempts --------------------

def test_a_one_time_token_is_good_for_one_use_only(base_url: str):
    token = one_time_token(base_url)

    first = post(base_url, "/v1/payment_methods", {"type": "card", "card[token]": token}, key=_key())
    again = post(base_url, "/v1/payment_methods", {"type": "card", "card[token]": token}, key=_key())
    paying = post(base_url, "/v1/payment_intents", {**VISA_FORM, "payment_method": "",
                                                     "payment_method_data[type]": "card",
                                                     "payment_method_data[card][token]": token}, key=_key())

    assert first.status_code == 200 and first.json()["id"].startswith("pm_")
    assert [(r.status_code, r.json()["error"]["code"]) for r in (again, paying)] == [
        (400, "token_already_used"), (400, "token_already_used")]
    assert read_ledger(base_url)["captures"] == []


def test_a_payment_method_used_without_a_customer_cannot_be_used_again(base_url: str):
    method = post(base_url, "/v1/payment_methods", {"type": "card", "card[token]": one_time_token(base_url)},
                  key=_key()).json()["id"]

    first = post(base_url, "/v1/payment_intents", {**VISA_FORM, "payment_method": method}, key=_key())
    second = post(base_url, "/v1/payment_intents", {**VISA_FORM, "payment_method": method}, key=_key())

    assert first.json()["status"] == "succeeded"
    assert (second.status_code, second.json()["error"]["code"]) == (400, "payment_method_unexpected_state")
    assert len(read_ledger(base_url)["captures"]) == 1


def test_a_saved_card_is_charged_only_with_the_customer_it_is_saved_on(base_url: str):
    method = post(base_url, "/v1/payment_methods", {"type": "card", "card[token]": "tok_visa"}, key=_key()).json()
    customer, other = (post(base_url, "/v1/customers", {}, key=_key()).json()["id"] for _ in range(2))
    saved = post(base_url, f"/v1/payment_methods/{method['id']}/attach", {"customer": customer}, key=_key())

    without = post(base_url, "/v1/payment_intents", {**VISA_FORM, "payment_method": method["id"]}, key=_key())
    wrong = post(base_url, "/v1/payment_intents", {**VISA_FORM, "payment_method": method["id"], "customer": other},
                 key=_key())
    twice = [post(base_url, "/v1/payment_intents", {**VISA_FORM, "payment_method": method["id"],
                                                     "customer": customer}, key=_key()) for _ in range(2)]

    assert saved.json()["customer"] == customer
    assert [r.status_code for r in (without, wrong)] == [400, 400]
    assert [r.json()["status"] for r in twice] == ["succeeded", "succeeded"]
    assert len(read_ledger(base_url)["captures"]) == 2


def test_a_card_given_as_a_one_time_token_is_saved_and_the_next_attempt_charges_it(gateway: StripeGateway,
                                                                                   base_url: str):
    # A failed payment's retry, days later, cannot use the customer's token again (Stripe's are
    # good for one use): the first attempt saved the card, and the retry charges that.
    token = one_time_token(base_url, "tok_declined_once")

    first = gateway.capture(capture_of(token))
    assert first == Declined("insufficient_funds") and first.saved_card.startswith("pm_")
    with pytest.raises(GatewayRefusedRequest, match="token_already_used"):
        gateway.capture(capture_of(token))
    retry = gateway.capture(capture_of(first.saved_card, saved=True))

    assert isinstance(retry, Accepted) and retry.saved_card == first.saved_card
    [capture] = read_ledger(base_url)["captures"]
    assert (capture["id"], capture["amount"]) == (retry.reference, "120.00")


def test_an_attempt_sent_again_saves_its_card_once_and_charges_once(gateway: StripeGateway, base_url: str):
    request = capture_of(one_time_token(base_url))

    first, again = gateway.capture(request), gateway.capture(request)

    assert isinstance(first, Accepted) and first == again and first.saved_card == again.saved_card
    assert len(read_ledger(base_url)["captures"]) == 1


@pytest.mark.parametrize("failing_step", ["customers", "payment_methods", "attach", "payment_intents"])
@pytest.mark.parametrize("retried_by", ["the same worker", "another worker"])
def test_an_attempt_that_failed_at_any_step_saves_its_card_once_and_charges_once_when_sent_again(
        gateway: StripeGateway, base_url: str, failing_step: str, retried_by: str):
    request = capture_of(one_time_token(base_url))
    fail_next(base_url, failing_step, times=1 if failing_step == "payment_intents" else SAVING_STEP_TRIES)
    with pytest.raises(GatewayUnavailable):
        gateway.capture(request)

    # Temporal's retry: the same attempt, the same keys (another worker replays the steps at Stripe).
    retrying = gateway if retried_by == "the same worker" else StripeGateway(SIMULATOR_API_KEY, base_url)
    answer = retrying.capture(request)

    assert isinstance(answer, Accepted) and answer.saved_card.startswith("pm_")
    customers = httpx.get(f"{base_url}/v1/customers/search", headers=AUTH,
                          params={"query": f"metadata['attempt_id']:'{request.idempotency_key}'"}).json()["data"]
    [customer] = customers
    saved = httpx.get(f"{base_url}/v1/customers/{customer['id']}/payment_methods", headers=AUTH).json()["data"]
    assert [m["id"] for m in saved] == [answer.saved_card]
    assert [c["id"] for c in read_ledger(base_url)["captures"]] == [answer.reference]


@pytest.mark.parametrize("failing_step", ["customers", "payment_methods", "attach"])
def test_a_card_saving_step_that_fails_now_and_then_is_asked_again_at_once_and_the_try_goes_on(
        gateway: StripeGateway, base_url: str, failing_step: str):
    fail_next(base_url, failing_step, times=SAVING_STEP_TRIES - 1)

    answer = gateway.capture(capture_of(one_time_token(base_url)))

    assert isinstance(answer, Accepted)
    assert [c["id"] for c in read_ledger(base_url)["captures"]] == [answer.reference]


def test_a_retry_on_the_same_worker_sends_only_the_steps_not_yet_done(gateway: StripeGateway, base_url: str):
    request = capture_of(one_time_token(base_url))
    fail_next(base_url, "attach", times=SAVING_STEP_TRIES)
    with pytest.raises(GatewayUnavailable):
        gateway.capture(request)
    before = len(read_calls(base_url))

    assert isinstance(gateway.capture(request), Accepted)
    [attach, intent] = read_calls(base_url)[before:]
    assert attach.startswith("POST /v1/payment_methods/pm_") and attach.endswith("/attach")
    assert intent == "POST /v1/payment_intents"


def test_a_key_that_cannot_make_a_customer_leaves_the_customers_token_unused(gateway: StripeGateway, base_url: str):
    # The Customer comes first: a try that fails there has not spent the one-time token.
    token = one_time_token(base_url)
    fail_next(base_url, "customers", times=SAVING_STEP_TRIES)
    with pytest.raises(GatewayUnavailable):
        gateway.capture(capture_of(token))

    assert isinstance(gateway.capture(capture_of(token)), Accepted)  # another attempt, the same token


def test_the_card_an_attempt_saved_before_its_payment_intent_failed_pays_the_next_attempt(
        gateway: StripeGateway, base_url: str):
    request = capture_of(one_time_token(base_url))
    fail_next(base_url, "payment_intents", times=10)  # the attempt never gets its PaymentIntent through
    with pytest.raises(GatewayUnavailable):
        gateway.capture(request)
    fail_next(base_url, "payment_intents", times=0)

    found = gateway.find_capture(request)
    retry = gateway.capture(capture_of(found.saved_card, saved=True))

    assert found == NotFound() and isinstance(retry, Accepted)
    assert [c["id"] for c in read_ledger(base_url)["captures"]] == [retry.reference]


def test_a_token_spent_on_a_card_never_saved_is_refused_next_time_and_nothing_is_charged(
        gateway: StripeGateway, base_url: str):
    # The limit the README names: the try stopped between the token's PaymentMethod and the
    # attach, so no Customer holds the card; the next attempt's token is refused as used.
    token = one_time_token(base_url)
    request = capture_of(token)
    fail_next(base_url, "attach", times=10)
    with pytest.raises(GatewayUnavailable):
        gateway.capture(request)
    fail_next(base_url, "attach", times=0)

    assert gateway.find_capture(request).saved_card == ""
    with pytest.raises(GatewayRefusedRequest, match="token_already_used"):
        gateway.capture(capture_of(token))
    assert read_ledger(base_url)["captures"] == []


def test_a_card_declined_as_it_was_saved_is_saved_anew_by_the_next_attempt(gateway: StripeGateway, base_url: str):
    first = gateway.capture(capture_of("tok_chargeDeclinedInsufficientFunds"))
    assert first == Declined("insufficient_funds") and first.saved_card.startswith("pm_")
    unsaved = httpx.get(f"{base_url}/v1/payment_methods/{first.saved_card}", headers=AUTH).json()
    assert unsaved["customer"] is None
    before = len(read_calls(base_url))

    assert gateway.capture(capture_of(first.saved_card, saved=True)) == Declined("insufficient_funds")
    assert read_calls(base_url)[before:] == [
        f"GET /v1/payment_methods/{first.saved_card}", "POST /v1/customers",
        f"POST /v1/payment_methods/{first.saved_card}/attach"]  # declined there again: no PaymentIntent
    assert read_ledger(base_url)["captures"] == []


def test_a_payment_method_the_customer_gave_that_is_saved_elsewhere_is_charged_with_its_own_customer(
        gateway: StripeGateway, base_url: str):
    # A wallet's card, saved on the customer's Customer already: it cannot be saved on another.
    method = post(base_url, "/v1/payment_methods", {"type": "card", "card[token]": "tok_visa"}, key=_key()).json()
    wallet = post(base_url, "/v1/customers", {}, key=_key()).json()["id"]
    post(base_url, f"/v1/payment_methods/{method['id']}/attach", {"customer": wallet}, key=_key())
    before = len(read_calls(base_url))

    answer = gateway.capture(capture_of(method["id"]))  # given by the customer, not saved by settleflow

    assert isinstance(answer, Accepted) and answer.saved_card == method["id"]
    assert read_calls(base_url)[before:] == [f"GET /v1/payment_methods/{method['id']}", "POST /v1/payment_intents"]
    assert httpx.get(f"{base_url}/v1/payment_intents/{answer.reference}", headers=AUTH).json()["customer"] == wallet


def test_an_attempt_on_a_saved_card_sends_no_steps_to_save_it_again(gateway: StripeGateway, base_url: str):
    saved = gateway.capture(capture_of("tok_declined_once")).saved_card
    reset_calls = len(read_calls(base_url))

    assert isinstance(gateway.capture(capture_of(saved, saved=True)), Accepted)
    assert read_calls(base_url)[reset_calls:] == [f"GET /v1/payment_methods/{saved}", "POST /v1/payment_intents"]


# -- the settlement listing ----------------------------------------------------------------

def test_the_settlement_listing_agrees_with_the_ledger_and_pages_through_everything(
        gateway: StripeGateway, base_url: str):
    payments = [paid(gateway, amount=f"{n}.00") for n in range(1, 13)]  # more than one page of 10
    refund = refund_of(payments[0], "0.50")
    gateway.refund(refund)
    gateway.capture(capture_of("tok_capture_declined"))

    lines = gateway.settlements(datetime.now(timezone.utc).date())

    ledger = read_ledger(base_url)
    assert sorted((line.kind, line.reference, str(line.amount.amount)) for line in lines) == sorted(
        [("capture", c["id"], c["amount"]) for c in ledger["captures"]]
        + [("refund", r["id"], r["amount"]) for r in ledger["refunds"]])
    [refund_line] = [line for line in lines if line.kind == "refund"]
    assert (refund_line.business_id, refund_line.order_id) == (refund.idempotency_key, "order-1")


def test_a_payment_in_another_currency_than_the_accounts_is_listed_in_its_own_currency(
        gateway: StripeGateway, base_url: str):
    # Stripe books a balance transaction in the account's settlement currency, after exchange;
    # what the payment moved, in its own currency, is on its Charge or Refund.
    configure(base_url, settlement_currency="usd")
    try:
        payment = paid(gateway, amount="10.00", currency="EUR")
        gateway.refund(refund_of(payment, "2.00"))
    finally:
        configure(base_url, settlement_currency="")
    booked = httpx.get(f"{base_url}/v1/balance_transactions", headers=AUTH).json()["data"]
    assert sorted((t["amount"], t["currency"], t["exchange_rate"]) for t in booked) == [(-220, "usd", 1.1),
                                                                                           (1100, "usd", 1.1)]

    lines = gateway.settlements(datetime.now(timezone.utc).date())

    assert sorted((line.kind, str(line.amount)) for line in lines) == [("capture", "10.00 EUR"), ("refund", "2.00 EUR")]


def test_another_integrations_payment_in_a_currency_settleflow_does_not_use_is_left_out_of_the_listing(
        gateway: StripeGateway, base_url: str):
    # A payment on the same account without settleflow's metadata, in MXN (settleflow knows no MXN):
    # it is not settleflow's, and it must not keep settleflow's own lines of the day from being read.
    theirs = post(base_url, "/v1/payment_intents", {**VISA_FORM, "currency": "mxn", "metadata[order_id]": "theirs"},
                  key=_key())
    assert theirs.status_code == 200
    ours = paid(gateway)

    lines = gateway.settlements(datetime.now(timezone.utc).date())

    assert [(line.kind, line.reference) for line in lines] == [("capture", ours)]


def test_another_day_lists_nothing(gateway: StripeGateway):
    paid(gateway)

    assert gateway.settlements(date(2031, 2, 3)) == []


# -- knobs ---------------------------------------------------------------------------------

def test_the_error_rate_knob_injects_503s_before_anything_runs(gateway: StripeGateway, base_url: str):
    configure(base_url, error_rate=0.5, seed=7)
    requests = [capture_of() for _ in range(10)]
    failures = 0
    for request in requests:
        while True:  # retry with the same key, as Temporal would
            try:
                gateway.capture(request)
                break
            except GatewayUnavailable:
                failures += 1

    assert failures > 0  # seeded: never flaky
    assert len(read_ledger(base_url)["captures"]) == len(requests)


def test_the_latency_knob_delays_answers(gateway: StripeGateway, base_url: str):
    assert configure(base_url, latency_ms=200)["latency_ms"] == 200
    started = time.monotonic()
    gateway.capture(capture_of())

    assert time.monotonic() - started >= 0.2


def test_the_config_never_shows_the_api_key(base_url: str):
    shown = httpx.get(f"{base_url}/_sim/config").json()

    assert "api_key" not in shown and SIMULATOR_API_KEY not in str(shown)


def test_an_unreachable_gateway_is_unavailable():
    nowhere = StripeGateway(SIMULATOR_API_KEY, f"http://127.0.0.1:{free_port()}", timeout_seconds=0.5)
    try:
        with pytest.raises(GatewayUnavailable):
            nowhere.capture(capture_of())
    finally:
        nowhere.close()


def test_a_business_id_longer_than_stripes_key_limit_still_moves_money_once_and_is_found(
        gateway: StripeGateway, base_url: str):
    request = capture_of(key="attempt/" + "x" * 990)  # settleflow's derived ids may have 1000 characters
    too_long = post(base_url, "/v1/payment_intents", VISA_FORM, key=request.idempotency_key)
    assert too_long.status_code == 400  # as Stripe: at most 255 characters

    first, again = gateway.capture(request), gateway.capture(request)

    assert first == again == gateway.find_capture(request)
    [line] = gateway.settlements(datetime.now(timezone.utc).date())
    assert line.business_id == stripe_business_id(request.idempotency_key) != request.idempotency_key
    assert len(read_ledger(base_url)["captures"]) == 1


def test_a_rate_limit_is_unavailable_and_retried_later_not_refused(gateway: StripeGateway, base_url: str):
    answer = post(base_url, "/v1/payment_intents", {**VISA_FORM, "payment_method": "tok_rate_limited"}, key=_key())
    assert (answer.status_code, answer.json()["error"]["code"]) == (429, "rate_limit")

    with pytest.raises(GatewayUnavailable, match="RateLimitError"):
        gateway.capture(capture_of("tok_rate_limited"))

    assert read_ledger(base_url)["captures"] == []


def test_with_no_hang_a_lost_answer_is_an_immediate_503_and_the_refund_still_moved(
        gateway: StripeGateway, base_url: str):
    configure(base_url, hang_seconds=0)
    payment = paid(gateway, "tok_refund_answer_lost")
    request = refund_of(payment, "20.00")
    started = time.monotonic()

    with pytest.raises(GatewayUnavailable, match="503"):
        gateway.refund(request)

    assert time.monotonic() - started < HANG_SECONDS
    assert gateway.find_refund(request) == Accepted(read_ledger(base_url)["refunds"][0]["id"])


def test_a_frozen_clock_puts_new_payments_on_the_day_a_test_settles(gateway: StripeGateway, base_url: str):
    day = date(2031, 2, 3)
    configure(base_url, frozen_time=int(datetime(2031, 2, 3, 23, 59, 59, tzinfo=timezone.utc).timestamp()))
    try:
        payment = paid(gateway)
    finally:
        configure(base_url, frozen_time=None)

    assert [line.reference for line in gateway.settlements(day)] == [payment]
    assert gateway.settlements(date(2031, 2, 4)) == []


@pytest.mark.parametrize("arguments", [[], ["--port", "x"], ["--port", "1", "--error-rate", "2"],
                                       ["--port", "1", "--hang-seconds", "-1"], ["--port", "1", "--api-key", ""]])
def test_bad_simulator_arguments_are_one_line_and_exit_2(arguments: list[str]):
    done = subprocess.run([sys.executable, "-m", "simulators.stripe_sim", *arguments],
                          capture_output=True, text=True, timeout=30)

    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("python -m simulators.stripe_sim: error: ")
