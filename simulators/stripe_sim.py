"""A Stripe simulator: the part of Stripe's REST API that settleflow's payments adapter uses.

    python -m simulators.stripe_sim --port 8099 [--host 127.0.0.1] [--latency-ms 0]
        [--error-rate 0.0] [--seed S] [--hang-seconds 3.0] [--api-key sk_test_simulator]

Stripe's API (form-encoded bodies, `Authorization: Bearer <key>`, Stripe's JSON objects):
    POST /v1/payment_intents              create and confirm (confirm=true) a card payment: a
                                          payment_method (with its `customer` if saved on one) or
                                          payment_method_data[card][token]; off_session=true
    POST /v1/payment_methods              type=card, card[token]: a PaymentMethod from a token
    GET  /v1/payment_methods/{id}
    POST /v1/payment_methods/{id}/attach  customer: save the card on a Customer (Stripe's declining test
                                          cards decline here already, 402; chargeCustomerFail saves)
    POST /v1/customers                    description, metadata
    GET  /v1/payment_intents/{id}
    POST /v1/payment_intents/{id}/cancel  cancellation_reason; only before it succeeded (else 400
                                          payment_intent_unexpected_state)
    GET  /v1/payment_intents/search       query=metadata['<key>']:'<value>'
    GET  /v1/customers/search             query=metadata['<key>']:'<value>'
    GET  /v1/customers/{id}/payment_methods  the cards saved on it
    POST /v1/refunds                      payment_intent, amount, metadata
    GET  /v1/refunds/{id}
    GET  /v1/refunds                      payment_intent, limit, starting_after
    GET  /v1/charges/{id}
    GET  /v1/balance_transactions         created[gte|gt|lte|lt], type, limit, starting_after,
                                          expand[]=data.source
Test control (no key needed; not Stripe's): GET /health, GET|POST /_sim/config,
POST /_sim/reset, GET /_sim/ledger (every capture and refund that moved money, in order),
GET /_sim/calls (the last 10,000 API requests served, "METHOD /v1/path", oldest first),
POST /_sim/tokens {"card": "tok_visa"} (a one-time token behaving as that test card, as
Stripe.js makes them: `tok_<random>`), POST /_sim/fail_next {"request": "attach", "times": 1}
(the next POSTs of that kind — payment_intents, refunds, payment_methods, customers, attach —
answer 503 before anything runs: a fault at one chosen step).

Cards as Stripe keeps them: a one-time token is good for one use (a PaymentMethod made from
it, or one payment): used again, 400 token_already_used. Stripe's named test tokens (tok_visa,
tok_chargeDeclined...) and settleflow's scenario tokens below may be used any number of times,
as on Stripe's test mode. A PaymentMethod used in a payment without a Customer can never be
used again; one saved on a Customer (attach) is charged only with that `customer`.

Errors are Stripe's bodies, {"error": {"type", "code", "decline_code", "message", "param"}}:
402 card_error (declines), 400 invalid_request_error (bad parameters, idempotency_error for a
key reused with other parameters), 401 (no or wrong API key), 404 (no such object),
429 (tok_rate_limited), 503 api_error (injected faults). No 409: a request runs and is
stored under its key before any hang, so a concurrent retry replays it (Stripe answers
409 while a request with the key is still in flight; the adapter retries that later).

Idempotency as Stripe's: a POST's `Idempotency-Key` is bound to its path and parameters.
The same key with the same parameters replays the stored answer (header
`Idempotent-Replayed: true`); with other parameters it is refused (400 idempotency_error).
Answers are stored once the request ran (201/200, 402, business 400s); requests refused
before running (bad parameters, injected 503s, hangs of requests that never ran) are not
stored, so the same key can be retried.

Behaviour by card (the PaymentIntent's `payment_method` — a PaymentMethod made here behaves
as the token or test PaymentMethod it was made from —, or the token in
`payment_method_data[card][token]`; a refund behaves by the card of its PaymentIntent):
    pm_card_visa, tok_visa, any other card        succeeds
    pm_card_chargeDeclined / tok_chargeDeclined   402 card_declined, decline_code generic_decline
                                                  (these decline when saved on a Customer too)
    pm_card_chargeCustomerFail / tok_...          saved on a Customer, then each charge declines
                                                  card_declined, generic_decline
    ..InsufficientFunds, ..Fraudulent, ..StolenCard, ..LostCard, ..ExpiredCard,
    ..IncorrectCvc, ..ProcessingError             402 with Stripe's decline code (insufficient_funds,
                                                  fraudulent, stolen_card, lost_card, expired_card,
                                                  incorrect_cvc, processing_error)
  settleflow's scenario tokens (documented aliases):
    tok_capture_declined      capture declines: insufficient_funds
    tok_card_stolen / tok_card_lost / tok_fraudulent
                              capture declines: card_stolen / card_lost / fraudulent
    tok_refund_declined       capture succeeds; each refund is created `failed`
                              (failure_reason expired_or_canceled_card): no money moves
    pm_card_threeDSecure2Required / tok_threeDSecure2Required
                              (Stripe's) the PaymentIntent waits `requires_action` (3-D
                              Secure, next_action use_stripe_sdk): nothing is charged until
                              its customer authenticates it, which nobody here does;
                              off_session=true: 402 authentication_required at once
    pm_card_refundFail / tok_refundFail
                              (Stripe's) capture succeeds; each refund succeeds (money moves),
                              then a second later fails: a `refund_failure` balance
                              transaction gives the money back (the ledger marks it reversed)
    tok_declined_once         the first charge of each card made from it declines
                              (insufficient_funds); later charges of that card succeed
    tok_flaky                 503 for the first two attempts of each key, then as tok_visa
    tok_timeout               runs and is stored at once, but the first answer of each key
                              comes only after `hang_seconds`; a retry gets the stored answer
    tok_unavailable           every capture 503 (nothing runs)
    tok_rate_limited          every capture and refund 429 rate_limit (nothing runs)
    tok_refunds_unavailable   capture succeeds, every refund 503 (nothing runs)
    tok_capture_answer_lost   the capture runs (money moves) but every answer, replays
                              included, hangs `hang_seconds` and then is a 503
    tok_capture_never_arrives the capture never runs; every answer hangs, then 503
    tok_capture_refused       400 invalid_request_error; nothing moves
    tok_refund_answer_lost    capture succeeds; each refund runs (money moves) but every
                              answer hangs `hang_seconds` and then is a 503
    tok_refund_never_arrives  capture succeeds; refunds never run; every answer hangs, then 503
    tok_refund_refused        capture succeeds; each refund 400 invalid_request_error
A look-up (GET, search, list) always tells the truth at once: after an "answer lost" it
finds the payment or refund, after "never arrives" or "refused" it finds nothing.

Knobs (also at runtime through /_sim/config): `latency_ms` delays every /v1 answer,
`error_rate` answers 503 to that share of POSTs before they touch anything (seeded RNG),
`hang_seconds` is the delay of the hanging tokens (at 0 they answer at once),
`frozen_time` (epoch seconds, or null for the clock) is the `created` time of every new
object, so tests on a time-skipping server can settle on the day they ask about;
`settlement_currency` ("" by default: each payment settles in its own) books a payment in
another currency, as Stripe does, in that one at `EXCHANGE_RATE` (its Charge or Refund keeps
the payment's own amount and currency). Reads and control endpoints never
fail on purpose, so tests can always observe the truth.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, NoReturn
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DEFAULT_API_KEY = "sk_test_simulator"
DEFAULT_ACCOUNT_ID = "acct_simulator"
CALLS_KEPT = 10_000  # API requests /_sim/calls remembers
# One unit of a payment's currency in the settlement currency's (`settlement_currency`): a fixed
# rate, so tests know what the balance transaction holds.
EXCHANGE_RATE = Decimal("1.1")

# Stripe's currency rules for amounts in minor units (https://docs.stripe.com/currencies).
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())  # amounts must end in 0
HUNDREDS_ONLY = frozenset({"isk"})  # zero-decimal, sent as two-decimal: divisible by 100
SUPPORTED_CURRENCIES = frozenset(
    "eur usd gbp chf sek nok dkk pln czk cad aud nzd sgd hkd huf ron bgn mxn brl inr".split()
) | ZERO_DECIMAL | THREE_DECIMAL | HUNDREDS_ONLY

STRIPE_DECLINES = {
    "chargeDeclined": ("card_declined", "generic_decline"),
    "chargeDeclinedInsufficientFunds": ("card_declined", "insufficient_funds"),
    "chargeDeclinedFraudulent": ("card_declined", "fraudulent"),
    "chargeDeclinedStolenCard": ("card_declined", "stolen_card"),
    "chargeDeclinedLostCard": ("card_declined", "lost_card"),
    "chargeDeclinedExpiredCard": ("expired_card", "expired_card"),
    "chargeDeclinedIncorrectCvc": ("incorrect_cvc", "incorrect_cvc"),
    "chargeDeclinedProcessingError": ("processing_error", "processing_error"),
    "chargeCustomerFail": ("card_declined", "generic_decline"),
}
# Stripe checks a card when it is saved on a Customer: its declining test cards decline there
# already (402, nothing saved), except chargeCustomerFail, which saves and then declines charges.
SAVE_DECLINES = {card: answer for card, answer in (
    *((f"tok_{name}", answer) for name, answer in STRIPE_DECLINES.items()),
    *((f"pm_card_{name}", answer) for name, answer in STRIPE_DECLINES.items()),
) if "chargeCustomerFail" not in card}
CAPTURE_DECLINES = {
    **{f"tok_{name}": answer for name, answer in STRIPE_DECLINES.items()},
    **{f"pm_card_{name}": answer for name, answer in STRIPE_DECLINES.items()},
    "tok_capture_declined": ("card_declined", "insufficient_funds"),
    "tok_card_stolen": ("card_declined", "card_stolen"),
    "tok_card_lost": ("card_declined", "card_lost"),
    "tok_fraudulent": ("card_declined", "fraudulent"),
}
REFUND_DECLINED_TOKEN, REFUND_FAILURE_REASON = "tok_refund_declined", "expired_or_canceled_card"
# Stripe's test card whose refunds succeed, then fail "some time later" (a `refund_failure`
# balance transaction gives the money back to the merchant); here a second after.
REFUND_REVERSED_TOKENS, REVERSED_AFTER_SECONDS = frozenset({"pm_card_refundFail", "tok_refundFail"}), 1
# Stripe's test cards that always ask for 3-D Secure: the PaymentIntent waits `requires_action`
# (nothing is charged) until its customer authenticates it, or it is cancelled.
AUTHENTICATION_TOKENS = frozenset({"pm_card_threeDSecure2Required", "tok_threeDSecure2Required"})
# The first charge of each card made from it declines (insufficient_funds); later charges of that
# card succeed: the funds arrived, as a failed-payment retry days later hopes.
DECLINED_ONCE_TOKEN = "tok_declined_once"
# The states Stripe lets a PaymentIntent be cancelled from.
CANCELLABLE = frozenset({"requires_payment_method", "requires_capture", "requires_confirmation", "requires_action",
                         "processing"})
FLAKY_TOKEN, FLAKY_FAILURES = "tok_flaky", 2
TIMEOUT_TOKEN = "tok_timeout"
RATE_LIMITED_TOKEN = "tok_rate_limited"
UNAVAILABLE = {"payment_intents": {"tok_unavailable"}, "refunds": {"tok_refunds_unavailable"}}
ANSWER_LOST = {"payment_intents": "tok_capture_answer_lost", "refunds": "tok_refund_answer_lost"}
NEVER_ARRIVES = {"payment_intents": "tok_capture_never_arrives", "refunds": "tok_refund_never_arrives"}
REFUSED = {"payment_intents": "tok_capture_refused", "refunds": "tok_refund_refused"}

KNOBS = ("latency_ms", "error_rate", "hang_seconds")
POST_KINDS = frozenset({"payment_intents", "refunds", "payment_methods", "customers", "attach"})
_SEARCH = re.compile(r"""\s*metadata\[(['"])([^'"]+)\1\]\s*:\s*(['"])([^'"]*)\3\s*""")

Answer = tuple[int, dict[str, Any]]


@dataclass
class SimConfig:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    hang_seconds: float = 3.0
    seed: int | None = None
    frozen_time: int | None = None  # epoch seconds every new object is created at; None: the clock
    api_key: str = field(default=DEFAULT_API_KEY, repr=False)
    account_id: str = DEFAULT_ACCOUNT_ID  # whose account the key speaks for (GET /v1/account)
    restricted_key: bool = False  # the key may not read its account: GET /v1/account is 403, as on Stripe
    # The account's settlement currency ("": each payment settles in its own). A payment in another
    # currency is booked, as on Stripe, in this one at EXCHANGE_RATE, with `exchange_rate` set.
    settlement_currency: str = ""

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.hang_seconds < 0:
            raise ValueError("latency_ms and hang_seconds must be >= 0")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        if not self.api_key:
            raise ValueError("the API key must not be empty")
        if not self.account_id.startswith("acct_"):
            raise ValueError("an account id starts with acct_")
        if self.settlement_currency and self.settlement_currency not in SUPPORTED_CURRENCIES:
            raise ValueError(f"unknown settlement currency {self.settlement_currency!r} (lower case, as Stripe's)")

    def public(self) -> dict[str, Any]:
        shown = asdict(self)
        del shown["api_key"]
        return shown


def _error(status: int, type_: str, code: str | None, message: str, **extra: Any) -> Answer:
    body = {"type": type_, "message": message, **extra}
    if code:
        body["code"] = code
    return status, {"error": body}


def _unavailable(why: str) -> Answer:
    return _error(503, "api_error", None, why)


class _Invalid(Exception):
    """Refused before running: 400 invalid_request_error, not stored under the key."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        extra = {"param": param} if param else {}
        self.answer = _error(400, "invalid_request_error", code, message, **extra)


# -- Stripe's form encoding ------------------------------------------------------------

def decode_form(text: str) -> dict[str, Any]:
    """`a[b][0]=x&c=y` -> {"a": {"b": ["x"]}, "c": "y"}, as Stripe's SDKs encode nested params."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        head, _, rest = key.partition("[")
        parts = [head] + ([p for p in rest.rstrip("]").split("][")] if rest else [])
        node = root
        for name in parts[:-1]:
            node = node.setdefault(name or str(len(node)), {})
            if not isinstance(node, dict):
                raise _Invalid("parameter_invalid", f"{key} mixes a value and nested parameters", key)
        last = parts[-1] or str(len(node))
        node[last] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _lists(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def _integer(params: dict[str, Any], name: str, required: bool = True) -> int | None:
    value = params.get(name)
    if value is None:
        if required:
            raise _Invalid("parameter_missing", f"Missing required param: {name}.", name)
        return None
    if not isinstance(value, str) or not value.isdigit():
        raise _Invalid("parameter_invalid_integer", f"Invalid integer: {value!r}", name)
    return int(value)


def _amount(params: dict[str, Any], currency: str, required: bool = True) -> int | None:
    amount = _integer(params, "amount", required)
    if amount is None:
        return None
    if amount <= 0:
        raise _Invalid("amount_too_small", "Amount must be at least 1 minor unit.", "amount")
    if currency in THREE_DECIMAL and amount % 10:
        raise _Invalid("invalid_amount", f"Amounts in {currency} must be divisible by 10 (got {amount}).", "amount")
    if currency in HUNDREDS_ONLY and amount % 100:
        raise _Invalid("invalid_amount", f"Amounts in {currency} must be divisible by 100 (got {amount}).", "amount")
    return amount


def _currency(params: dict[str, Any]) -> str:
    value = params.get("currency")
    if not isinstance(value, str) or not value:
        raise _Invalid("parameter_missing", "Missing required param: currency.", "currency")
    if value != value.lower() or value not in SUPPORTED_CURRENCIES:
        raise _Invalid("parameter_invalid", f"Invalid currency: {value}.", "currency")
    return value


def _metadata(params: dict[str, Any]) -> dict[str, str]:
    metadata = params.get("metadata", {})
    if metadata == "":
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _Invalid("parameter_invalid", "metadata must be a hash of strings", "metadata")
    for name, value in metadata.items():
        if len(name) > 40 or len(value) > 500:
            raise _Invalid("parameter_invalid", "Metadata keys have at most 40 characters, values at most 500.",
                           f"metadata[{name[:40]}]")
    return dict(metadata)


def exponent(currency: str) -> int:
    """Digits of `amount` after the decimal point, as Stripe counts minor units."""
    return 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2


def decimal_text(amount: int, currency: str) -> str:
    return format(Decimal(amount).scaleb(-exponent(currency)), "f")


# -- the simulated account -------------------------------------------------------------

@dataclass
class _KeyRecord:
    path: str
    params: dict[str, Any]
    attempts: int = 0
    answer: Answer | None = None


@dataclass(frozen=True)
class _Outcome:
    status: int
    body: dict[str, Any]
    hang: float = 0.0  # seconds to wait before answering
    replayed: bool = False


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class Simulator:
    """The in-memory account. All state sits behind one lock; no critical section awaits."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._rng = random.Random(self.config.seed)  # reseeded: runs stay reproducible
            self._intents: dict[str, dict[str, Any]] = {}
            self._card_of: dict[str, str] = {}  # payment intent id -> the card token it was paid with
            # Cards: PaymentMethods made here (id -> object; its `customer` once saved on one), the
            # test card each behaves as, one-time tokens issued (/_sim/tokens: token -> test card)
            # and those used, PaymentMethods used unsaved (never usable again), charges per card.
            self._methods: dict[str, dict[str, Any]] = {}
            self._behaves_as: dict[str, str] = {}
            self._one_time: dict[str, str] = {}
            self._used_tokens: set[str] = set()
            self._used_unsaved: set[str] = set()
            self._charges_of_card: dict[str, int] = {}
            self._customers: dict[str, dict[str, Any]] = {}
            self._failing: dict[str, int] = {}  # POST kind -> how many of the next ones answer 503 (/_sim/fail_next)
            self._charges: dict[str, dict[str, Any]] = {}
            self._refunds: dict[str, dict[str, Any]] = {}
            self._transactions: dict[str, dict[str, Any]] = {}  # balance transactions, in creation order
            self._reversals: dict[str, int] = {}  # refund id -> when it fails (REFUND_REVERSED_TOKENS)
            self._keys: dict[str, _KeyRecord] = {}
            self._last_created = 0
            self.calls: deque[str] = deque(maxlen=CALLS_KEPT)  # "METHOD /v1/path" of each API request

    def configure(self, changes: dict[str, Any]) -> None:
        with self._lock:
            self.config = replace(self.config, **changes)  # __post_init__ validates
            if "seed" in changes:
                self._rng = random.Random(self.config.seed)

    def roll_error(self) -> bool:
        with self._lock:
            return self._rng.random() < self.config.error_rate

    def fail_next(self, kind: str, times: int) -> None:
        """The next `times` POSTs of this kind answer 503 before anything runs (a test's fault at
        one chosen step)."""
        with self._lock:
            self._failing[kind] = times

    def take_failure(self, kind: str) -> bool:
        with self._lock:
            if self._failing.get(kind, 0) <= 0:
                return False
            self._failing[kind] -= 1
            return True

    def _now(self) -> int:
        # Never earlier than the last object's: "newest first" lists keep creation order.
        if self.config.frozen_time is not None:
            return self.config.frozen_time
        self._last_created = max(int(time.time()), self._last_created)
        return self._last_created

    # -- money ---------------------------------------------------------------------

    def submit(self, resource: str, key: str, params: dict[str, Any]) -> _Outcome:
        """One attempt under an idempotency key: replay, refuse, fail, hang, or run."""
        hang = self.config.hang_seconds
        with self._lock:
            self._reverse_due_refunds()  # a refund reversed by now has given its amount back
            bound = {k: v for k, v in params.items() if k != "expand"}
            record = self._keys.get(key)
            if record is None:
                record = self._keys[key] = _KeyRecord(resource, bound)
            elif (record.path, record.params) != (resource, bound):
                return _Outcome(*_error(
                    400, "idempotency_error", None,
                    f"Keys for idempotent requests can only be used with the same parameters they were "
                    f"first used with. Try using a key other than {key!r} if you meant to execute a "
                    f"different request.",
                ))
            token = self._card_for(resource, record.params)
            if record.answer is not None:
                if token is not None and token == ANSWER_LOST.get(resource):
                    return _Outcome(*_unavailable("the answer was lost"), hang=hang)
                return _Outcome(*record.answer, replayed=True)
            record.attempts += 1
            if token == RATE_LIMITED_TOKEN:
                return _Outcome(*_error(429, "invalid_request_error", "rate_limit", "Too many requests hit the API too "
                                        "quickly. We recommend an exponential backoff of your requests."))
            if token is not None and token in UNAVAILABLE.get(resource, ()):
                return _Outcome(*_unavailable("the processor for this card is down"))
            if token == FLAKY_TOKEN and record.attempts <= FLAKY_FAILURES:
                return _Outcome(*_unavailable(f"transient failure (attempt {record.attempts})"))
            if token is not None and token == NEVER_ARRIVES.get(resource):
                return _Outcome(*_unavailable("the request never arrived"), hang=hang)
            try:
                run = {"payment_intents": self._create_intent, "refunds": self._create_refund,
                       "payment_methods": self._create_method, "customers": self._create_customer,
                       "attach": self._attach_method}[resource]
                record.answer = run(record.params, token)
            except _Invalid as invalid:
                del self._keys[key]  # refused before running: the key stays free
                return _Outcome(*invalid.answer)
            # Stored before any hang: the money moved even if the caller stops waiting.
            if token is not None and token == ANSWER_LOST.get(resource):
                return _Outcome(*_unavailable("the answer was lost"), hang=hang)
            return _Outcome(*record.answer, hang=hang if token == TIMEOUT_TOKEN and record.attempts == 1 else 0.0)

    def _card_for(self, resource: str, params: dict[str, Any]) -> str | None:
        """The test card a payment request behaves as (None for the requests that save a card)."""
        if resource == "payment_intents":
            card = _card_token(params)
            return self._behaves_as.get(card, self._one_time.get(card, card)) if card else None
        if resource == "refunds":
            intent_id = params.get("payment_intent")
            return self._card_of.get(intent_id) if isinstance(intent_id, str) else None
        return None

    # -- cards -------------------------------------------------------------------------

    def issue_token(self, card: str) -> str:
        """A one-time card token behaving as the test card `card` (as Stripe.js makes them)."""
        with self._lock:
            token = _new_id("tok")
            self._one_time[token] = card
            return token

    def _use_token(self, token: str, param: str) -> str:
        """Use a card token; the test card it behaves as. A one-time token is good once (Stripe's
        named test tokens, tok_visa and the like, may be used again, as on Stripe's test mode)."""
        if token in self._used_tokens:
            raise _Invalid("token_already_used", f"You cannot use a Stripe token more than once: {token}.", param)
        if token in self._one_time:
            self._used_tokens.add(token)
        return self._one_time.get(token, token)

    def _new_method(self, card: str) -> dict[str, Any]:
        method_id = _new_id("pm")
        method = {"id": method_id, "object": "payment_method", "type": "card", "customer": None,
                  "card": {"brand": "visa", "last4": "4242"}, "created": self._now(), "livemode": False}
        self._methods[method_id] = method
        self._behaves_as[method_id] = card
        return method

    def _create_method(self, p: dict[str, Any], _card: str | None) -> Answer:
        """POST /v1/payment_methods: a card PaymentMethod from a card token (card[token])."""
        card = p.get("card")
        token = card.get("token") if isinstance(card, dict) else None
        if p.get("type") != "card" or not isinstance(token, str) or not token:
            raise _Invalid("parameter_missing", "This simulator makes card PaymentMethods from a token: "
                           "type=card and card[token].", "card[token]")
        return 200, dict(self._new_method(self._use_token(token, "card[token]")))

    def _create_customer(self, p: dict[str, Any], _card: str | None) -> Answer:
        customer_id = _new_id("cus")
        customer = {"id": customer_id, "object": "customer", "created": self._now(),
                    "description": p.get("description"), "livemode": False, "metadata": _metadata(p)}
        self._customers[customer_id] = customer
        return 200, dict(customer)

    def _attach_method(self, p: dict[str, Any], _card: str | None) -> Answer:
        """POST /v1/payment_methods/{id}/attach: save the card on a Customer. A test PaymentMethod
        (pm_card_visa and the like) becomes a new PaymentMethod, saved; one used in a payment
        without a Customer can never be saved (nor used) again, as on Stripe."""
        method_id, customer = p["payment_method"], p.get("customer")
        if not isinstance(customer, str) or customer not in self._customers:
            raise _Invalid("resource_missing", f"No such customer: '{customer}'", "customer")
        method = self._methods.get(method_id)
        if method is None:
            if not method_id.startswith("pm_card_"):
                raise _Invalid("resource_missing", f"No such PaymentMethod: '{method_id}'", "payment_method")
            method = self._new_method(method_id)
        if self._behaves_as[method["id"]] in SAVE_DECLINES:
            code, decline_code = SAVE_DECLINES[self._behaves_as[method["id"]]]
            return 402, {"error": {"type": "card_error", "code": code, "decline_code": decline_code,
                                   "message": f"Your card was declined ({decline_code}).", "param": "",
                                   "payment_method": dict(method)}}
        if method_id in self._used_unsaved:
            raise _Invalid("payment_method_unexpected_state", "The provided PaymentMethod was previously used "
                           "with a PaymentIntent without Customer attachment. It may not be used again.")
        if method["customer"] not in (None, customer):
            raise _Invalid("payment_method_unexpected_state",
                           "The payment method you provided has already been attached to a customer.")
        method["customer"] = customer
        return 200, dict(method)

    def methods_of(self, customer_id: str) -> list[dict[str, Any]] | None:
        """The PaymentMethods saved on a Customer, newest first (None: no such Customer)."""
        with self._lock:
            if customer_id not in self._customers:
                return None
            return [dict(m) for m in reversed(self._methods.values()) if m["customer"] == customer_id]

    def get_method(self, method_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._methods.get(method_id)
            if found is not None:
                return dict(found)
        if method_id.startswith("pm_card_"):  # Stripe's test PaymentMethods, never saved
            return {"id": method_id, "object": "payment_method", "type": "card", "customer": None, "livemode": False}
        return None

    def _payment_method_of(self, p: dict[str, Any]) -> str:
        """The card an intent charges, as Stripe checks it: a PaymentMethod saved on a Customer
        only with that Customer; one used unsaved never again; a token once (if one-time)."""
        customer = p.get("customer")
        if customer is not None and customer not in self._customers:
            raise _Invalid("resource_missing", f"No such customer: '{customer}'", "customer")
        method_id = p.get("payment_method")
        if isinstance(method_id, str) and method_id:
            method = self._methods.get(method_id)
            if method is None:
                return method_id  # Stripe's test PaymentMethods (pm_card_visa): any number of times
            if method["customer"] is not None and method["customer"] != customer:
                raise _Invalid("payment_method_invalid_parameter", "The provided PaymentMethod is saved on a "
                               "Customer: pass that customer to use it.", "customer")
            if method["customer"] is None:
                if method_id in self._used_unsaved:
                    raise _Invalid("payment_method_unexpected_state", "The provided PaymentMethod was previously "
                                   "used with a PaymentIntent without Customer attachment. It may not be used again.")
                self._used_unsaved.add(method_id)
            return method_id
        token = _card_token(p)
        if token is None:
            raise _Invalid("parameter_missing", "Missing a payment method: payment_method or "
                           "payment_method_data[card][token].", "payment_method")
        self._use_token(token, "payment_method_data[card][token]")
        return "pm_" + secrets.token_hex(12)

    def _create_intent(self, p: dict[str, Any], token: str | None) -> Answer:
        currency = _currency(p)
        amount = _amount(p, currency)
        metadata = _metadata(p)
        if p.get("confirm") != "true":
            raise _Invalid("parameter_invalid", "This simulator only creates confirmed payments (confirm=true).",
                           "confirm")
        if token == REFUSED["payment_intents"]:
            raise _Invalid("payment_method_invalid_parameter", "The payment method was refused as invalid.",
                           "payment_method")
        method = self._payment_method_of(p)
        assert token is not None
        intent_id = _new_id("pi")
        intent: dict[str, Any] = {
            "id": intent_id, "object": "payment_intent", "amount": amount, "amount_received": 0,
            "capture_method": "automatic", "confirmation_method": "automatic", "currency": currency,
            "created": self._now(), "description": p.get("description"), "last_payment_error": None,
            "latest_charge": None, "livemode": False, "metadata": metadata, "customer": p.get("customer"),
            "payment_method": method, "payment_method_types": ["card"], "status": "requires_payment_method",
        }
        self._intents[intent_id] = intent
        self._card_of[intent_id] = token
        self._charges_of_card[method] = charges = self._charges_of_card.get(method, 0) + 1
        decline = CAPTURE_DECLINES.get(token)
        if token == DECLINED_ONCE_TOKEN and charges == 1:
            decline = ("card_declined", "insufficient_funds")
        if token in AUTHENTICATION_TOKENS and p.get("off_session") == "true":
            # Off-session, nobody can authenticate: Stripe declines at once instead of waiting.
            decline = ("authentication_required", "authentication_required")
        if decline:
            code, decline_code = decline
            error = {"type": "card_error", "code": code, "decline_code": decline_code,
                     "message": f"Your card was declined ({decline_code}).", "payment_intent": None}
            intent["last_payment_error"] = {k: v for k, v in error.items() if k != "payment_intent"}
            error["payment_intent"] = dict(intent)
            return 402, {"error": error}
        if token in AUTHENTICATION_TOKENS:
            intent.update(status="requires_action", next_action={"type": "use_stripe_sdk"})
            return 200, dict(intent)
        charge_id, txn_id = _new_id("ch"), _new_id("txn")
        self._charges[charge_id] = {
            "id": charge_id, "object": "charge", "amount": amount, "amount_refunded": 0,
            "balance_transaction": txn_id, "captured": True, "created": intent["created"],
            "currency": currency, "livemode": False, "metadata": metadata, "paid": True,
            "payment_intent": intent_id, "refunded": False, "status": "succeeded",
        }
        self._transaction(txn_id, "charge", amount, currency, charge_id, intent["created"])
        intent.update(status="succeeded", amount_received=amount, latest_charge=charge_id)
        return 200, dict(intent)

    def _create_refund(self, p: dict[str, Any], token: str | None) -> Answer:
        intent_id = p.get("payment_intent")
        if not isinstance(intent_id, str) or not intent_id:
            raise _Invalid("parameter_missing", "Missing required param: payment_intent.", "payment_intent")
        intent = self._intents.get(intent_id)
        if intent is None:
            raise _Invalid("resource_missing", f"No such payment_intent: '{intent_id}'", "payment_intent")
        if intent["status"] != "succeeded":
            raise _Invalid("charge_not_refundable", f"PaymentIntent {intent_id} has no successful charge to refund.",
                           "payment_intent")
        charge = self._charges[intent["latest_charge"]]
        currency = intent["currency"]
        remaining = charge["amount"] - charge["amount_refunded"]
        amount = _amount(p, currency, required=False)
        amount = remaining if amount is None else amount
        metadata = _metadata(p)
        if token == REFUSED["refunds"]:
            raise _Invalid("parameter_invalid", "The refund was refused as invalid.", "payment_intent")
        if amount > remaining:
            raise _Invalid("amount_too_large",
                           f"Refund amount ({decimal_text(amount, currency)} {currency}) is greater than the "
                           f"unrefunded amount on the charge ({decimal_text(remaining, currency)} {currency}).",
                           "amount")
        refund_id = _new_id("re")
        refund: dict[str, Any] = {
            "id": refund_id, "object": "refund", "amount": amount, "balance_transaction": None,
            "charge": charge["id"], "created": self._now(), "currency": currency, "failure_balance_transaction": None,
            "failure_reason": None,
            "metadata": metadata, "payment_intent": intent_id, "reason": p.get("reason"), "status": "succeeded",
        }
        self._refunds[refund_id] = refund
        if token == REFUND_DECLINED_TOKEN:
            refund.update(status="failed", failure_reason=REFUND_FAILURE_REASON)
            return 200, dict(refund)
        txn_id = _new_id("txn")
        refund["balance_transaction"] = txn_id
        self._transaction(txn_id, "refund", -amount, currency, refund_id, refund["created"])
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        if token in REFUND_REVERSED_TOKENS:
            frozen = self.config.frozen_time is not None
            self._reversals[refund_id] = refund["created"] + (0 if frozen else REVERSED_AFTER_SECONDS)
        return 200, dict(refund)

    def cancel_intent(self, intent_id: str, reason: str | None) -> Answer:
        """POST /v1/payment_intents/{id}/cancel: as on Stripe, only before it succeeded."""
        with self._lock:
            intent = self._intents.get(intent_id)
            if intent is None:
                return _error(404, "invalid_request_error", "resource_missing", f"No such payment_intent: '{intent_id}'",
                              param="id")
            if intent["status"] not in CANCELLABLE:
                return _error(400, "invalid_request_error", "payment_intent_unexpected_state",
                              f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}.")
            intent.update(status="canceled", cancellation_reason=reason or None, canceled_at=self._now(),
                          next_action=None)
            return 200, dict(intent)

    def _reverse_due_refunds(self) -> None:
        """Refunds of REFUND_REVERSED_TOKENS whose time has come fail, as on Stripe: status
        `failed`, and a `refund_failure` balance transaction gives the money back (the lock held)."""
        now = self._now()
        for refund_id, at in list(self._reversals.items()):
            if at > now:
                continue
            del self._reversals[refund_id]
            refund = self._refunds[refund_id]
            txn_id = _new_id("txn")
            refund.update(status="failed", failure_reason=REFUND_FAILURE_REASON, failure_balance_transaction=txn_id)
            self._transaction(txn_id, "refund_failure", refund["amount"], refund["currency"], refund_id, at)
            charge = self._charges[refund["charge"]]
            charge["amount_refunded"] -= refund["amount"]
            charge["refunded"] = charge["amount_refunded"] == charge["amount"]

    def _transaction(self, txn_id: str, type_: str, amount: int, currency: str, source: str, created: int) -> None:
        """A balance transaction, booked in the account's settlement currency (as on Stripe: the
        payment's own amount and currency stay on its Charge or Refund)."""
        settles_in, rate = self.config.settlement_currency or currency, None
        if settles_in != currency:
            rate = EXCHANGE_RATE
            major = Decimal(amount).scaleb(-exponent(currency)) * rate
            amount = int(major.scaleb(exponent(settles_in)).to_integral_value(ROUND_HALF_EVEN))
        self._transactions[txn_id] = {
            "id": txn_id, "object": "balance_transaction", "amount": amount, "available_on": created,
            "created": created, "currency": settles_in, "exchange_rate": float(rate) if rate else None, "fee": 0,
            "net": amount, "reporting_category": type_, "source": source, "status": "pending", "type": type_,
        }

    # -- reads ---------------------------------------------------------------------

    def get(self, kind: str, object_id: str) -> dict[str, Any] | None:
        with self._lock:
            self._reverse_due_refunds()
            table = {"payment_intents": self._intents, "refunds": self._refunds, "charges": self._charges}[kind]
            found = table.get(object_id)
            return dict(found) if found else None

    def search(self, kind: str, query: str) -> list[dict[str, Any]]:
        """PaymentIntents or Customers whose metadata matches `query`, newest first."""
        match = _SEARCH.fullmatch(query)
        if not match:
            raise _Invalid("parameter_invalid", "This simulator searches only metadata['key']:'value'.", "query")
        key, value = match.group(2), match.group(4)
        with self._lock:
            table = self._intents if kind == "payment_intents" else self._customers
            found = [dict(i) for i in table.values() if i["metadata"].get(key) == value]
        return found[::-1]

    def refunds_of(self, intent_id: str | None) -> list[dict[str, Any]]:
        with self._lock:
            self._reverse_due_refunds()
            return [dict(r) for r in reversed(self._refunds.values())
                    if intent_id is None or r["payment_intent"] == intent_id]

    def transactions(self, created: dict[str, int], type_: str | None, expand_source: bool) -> list[dict[str, Any]]:
        tests = {"gte": int.__ge__, "gt": int.__gt__, "lte": int.__le__, "lt": int.__lt__}
        with self._lock:
            self._reverse_due_refunds()
            chosen = []
            # Newest first by when each was booked (a reversal is booked when it happens, which
            # may be before transactions stored after it).
            by_booking = sorted(enumerate(self._transactions.values()), key=lambda n_txn: (n_txn[1]["created"], n_txn[0]))
            for _, txn in reversed(by_booking):
                if type_ and txn["type"] != type_:
                    continue
                if not all(tests[op](txn["created"], bound) for op, bound in created.items()):
                    continue
                shown = dict(txn)
                if expand_source:
                    source = self._charges.get(txn["source"]) or self._refunds.get(txn["source"])
                    shown["source"] = dict(source) if source else txn["source"]
                chosen.append(shown)
            return chosen

    def ledger(self) -> dict[str, list[dict[str, Any]]]:
        """Every capture and refund that moved money, oldest first, amounts as decimal strings
        (a refund reversed since says so: `reversed`)."""
        with self._lock:
            self._reverse_due_refunds()
            captures, refunds = [], []
            for txn in self._transactions.values():
                if txn["type"] == "refund_failure":
                    continue  # its refund is listed, as reversed
                if txn["type"] == "charge":
                    charge = self._charges[txn["source"]]
                    intent = self._intents[charge["payment_intent"]]
                    captures.append({
                        "id": intent["id"], "charge": charge["id"], "amount": decimal_text(charge["amount"], charge["currency"]),
                        "minor": charge["amount"], "currency": charge["currency"].upper(),
                        "card_token": self._card_of[intent["id"]], "reference": intent["metadata"].get("order_id", ""),
                        "metadata": dict(intent["metadata"]), "created": charge["created"],
                    })
                else:
                    refund = self._refunds[txn["source"]]
                    refunds.append({
                        "id": refund["id"], "charge": refund["payment_intent"],
                        "amount": decimal_text(refund["amount"], refund["currency"]), "minor": refund["amount"],
                        "currency": refund["currency"].upper(), "reference": refund["metadata"].get("refund_id", ""),
                        "metadata": dict(refund["metadata"]), "created": refund["created"],
                        "reversed": refund["status"] == "failed",
                    })
            return {"captures": captures, "refunds": refunds}


def _card_token(params: dict[str, Any]) -> str | None:
    method = params.get("payment_method")
    if isinstance(method, str) and method:
        return method
    data = params.get("payment_method_data")
    card = data.get("card") if isinstance(data, dict) else None
    token = card.get("token") if isinstance(card, dict) else None
    return token if isinstance(token, str) and token else None


def _page(objects: list[dict[str, Any]], params: dict[str, str], url: str) -> dict[str, Any]:
    limit = int(params["limit"]) if params.get("limit", "").isdigit() else 10
    limit = min(max(limit, 1), 100)
    after = params.get("starting_after")
    if after:
        ids = [o["id"] for o in objects]
        objects = objects[ids.index(after) + 1:] if after in ids else []
    return {"object": "list", "data": objects[:limit], "has_more": len(objects) > limit, "url": url}


def create_app(config: SimConfig) -> Starlette:
    """A fresh simulator with its own account (the config is copied, not shared)."""
    sim = Simulator(replace(config))

    def answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(body, status, headers=headers)

    async def stripe_call(request: Request) -> JSONResponse | None:
        """Latency, then the API key: None when the call may go on, else the 401."""
        sim.calls.append(f"{request.method} {request.url.path}")
        if sim.config.latency_ms > 0:
            await asyncio.sleep(sim.config.latency_ms / 1000)
        if request.headers.get("Authorization", "") != f"Bearer {sim.config.api_key}":
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            shown = f"{given[:8]}{'*' * 4}" if given else "none"
            return answer(*_error(401, "invalid_request_error", None, f"Invalid API Key provided: {shown}"))
        return None

    async def money(request: Request, resource: str, **from_path: str) -> JSONResponse:
        refused = await stripe_call(request)
        if refused:
            return refused
        if sim.roll_error():
            return answer(*_unavailable("injected failure (error_rate)"))
        if sim.take_failure(resource):
            return answer(*_unavailable(f"injected failure (fail_next {resource})"))
        key = request.headers.get("Idempotency-Key", "")
        try:
            if not key:
                raise _Invalid("idempotency_key_missing", "Send an Idempotency-Key header with every payment request.")
            if len(key) > 255:
                raise _Invalid("idempotency_key_too_long", "Idempotency keys have at most 255 characters.")
            params = {**decode_form((await request.body()).decode("utf-8")), **from_path}
        except (_Invalid, UnicodeDecodeError) as invalid:
            bad = invalid if isinstance(invalid, _Invalid) else _Invalid("invalid_body", "the body must be UTF-8")
            return answer(*bad.answer)
        outcome = sim.submit(resource, key, params)
        if outcome.hang:
            await asyncio.sleep(outcome.hang)
        return answer(outcome.status, outcome.body, {"Idempotent-Replayed": "true"} if outcome.replayed else None)

    async def create_intent(request: Request) -> JSONResponse:
        return await money(request, "payment_intents")

    async def create_refund(request: Request) -> JSONResponse:
        return await money(request, "refunds")

    async def create_method(request: Request) -> JSONResponse:
        return await money(request, "payment_methods")

    async def attach_method(request: Request) -> JSONResponse:
        return await money(request, "attach", payment_method=request.path_params["id"])

    async def create_customer(request: Request) -> JSONResponse:
        return await money(request, "customers")

    def found(body: dict[str, Any] | None, noun: str, object_id: str, param: str) -> JSONResponse:
        if body is None:
            return answer(*_error(404, "invalid_request_error", "resource_missing", f"No such {noun}: '{object_id}'",
                                  param=param))
        return answer(200, body)

    async def get_method(request: Request) -> JSONResponse:
        method_id = request.path_params["id"]
        return await stripe_call(request) or found(sim.get_method(method_id), "PaymentMethod", method_id, "id")

    def customer_methods(customer_id: str, params: dict[str, Any]) -> JSONResponse:
        methods = sim.methods_of(customer_id)
        listed = None if methods is None else _page(methods, params, f"/v1/customers/{customer_id}/payment_methods")
        return found(listed, "customer", customer_id, "customer")

    async def list_customer_methods(request: Request) -> JSONResponse:
        return await stripe_call(request) or customer_methods(request.path_params["id"], query(request))

    async def fail_next(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            kind, times = body["request"], int(body.get("times", 1))
        except (ValueError, KeyError, TypeError, AttributeError):
            kind, times = None, 0
        if kind not in POST_KINDS or times < 0:
            return answer(*_error(400, "invalid_request_error", "invalid_fault",
                                  f'give {{"request": one of {sorted(POST_KINDS)}, "times": N}}'))
        sim.fail_next(kind, times)
        return answer(200, {"request": kind, "times": times})

    async def issue_token(request: Request) -> JSONResponse:
        try:
            card = (await request.json()).get("card", "tok_visa")
        except (ValueError, AttributeError):
            card = None
        if not isinstance(card, str) or not card.startswith(("tok_", "pm_card_")):
            return answer(*_error(400, "invalid_request_error", "invalid_card",
                                  'give {"card": "<a test card, tok_... or pm_card_...>"}'))
        return answer(200, {"id": sim.issue_token(card), "object": "token", "used": False, "behaves_as": card})

    async def cancel_intent(request: Request) -> JSONResponse:
        refused = await stripe_call(request)
        if refused:
            return refused
        reason = decode_form((await request.body()).decode()).get("cancellation_reason")
        return answer(*sim.cancel_intent(request.path_params["id"], reason if isinstance(reason, str) else None))

    def getter(kind: str, noun: str):
        async def get_one(request: Request) -> JSONResponse:
            refused = await stripe_call(request)
            if refused:
                return refused
            found = sim.get(kind, request.path_params["id"])
            if found is None:
                return answer(*_error(404, "invalid_request_error", "resource_missing",
                                      f"No such {noun}: '{request.path_params['id']}'", param="id"))
            return answer(200, found)
        return get_one

    def query(request: Request) -> dict[str, Any]:
        return decode_form(request.url.query)

    def searcher(kind: str):
        async def search(request: Request) -> JSONResponse:
            refused = await stripe_call(request)
            if refused:
                return refused
            try:
                found = sim.search(kind, str(query(request).get("query", "")))
            except _Invalid as invalid:
                return answer(*invalid.answer)
            return answer(200, {"object": "search_result", "data": found[:100], "has_more": len(found) > 100,
                                "next_page": None, "url": f"/v1/{kind}/search"})
        return search

    async def list_refunds(request: Request) -> JSONResponse:
        refused = await stripe_call(request)
        if refused:
            return refused
        params = query(request)
        intent = params.get("payment_intent")
        if isinstance(intent, str) and sim.get("payment_intents", intent) is None:
            # As Stripe: a filter naming an object the account does not have is refused.
            return answer(*_error(404, "invalid_request_error", "resource_missing",
                                  f"No such payment_intent: '{intent}'", param="payment_intent"))
        return answer(200, _page(sim.refunds_of(intent if isinstance(intent, str) else None), params, "/v1/refunds"))

    async def list_transactions(request: Request) -> JSONResponse:
        refused = await stripe_call(request)
        if refused:
            return refused
        params = query(request)
        created = params.get("created", {})
        try:
            if not isinstance(created, dict) or not set(created) <= {"gte", "gt", "lte", "lt"} \
                    or not all(isinstance(v, str) and v.isdigit() for v in created.values()):
                raise _Invalid("parameter_invalid", "created must be a hash of gte/gt/lte/lt timestamps", "created")
            expand = params.get("expand", [])
            expand = [expand] if isinstance(expand, str) else expand
            if not set(expand) <= {"data.source"}:
                raise _Invalid("parameter_invalid", f"This simulator expands only data.source, not {expand}", "expand")
        except _Invalid as invalid:
            return answer(*invalid.answer)
        found = sim.transactions({k: int(v) for k, v in created.items()}, params.get("type"), bool(expand))
        return answer(200, _page(found, params, "/v1/balance_transactions"))

    async def ledger(request: Request) -> JSONResponse:
        return answer(200, sim.ledger())

    async def calls(request: Request) -> JSONResponse:
        return answer(200, {"calls": list(sim.calls)})

    async def account(request: Request) -> JSONResponse:
        refused = await stripe_call(request)
        if refused:
            return refused
        if sim.config.restricted_key:
            return answer(*_error(403, "invalid_request_error", "secret_key_required",
                                  "The provided key does not have the required permissions for this endpoint."))
        return answer(200, {"id": sim.config.account_id, "object": "account", "type": "standard",
                            "charges_enabled": True, "payouts_enabled": True})

    async def health(request: Request) -> JSONResponse:
        return answer(200, {"status": "ok"})

    async def get_config(request: Request) -> JSONResponse:
        return answer(200, sim.config.public())

    async def set_config(request: Request) -> JSONResponse:
        try:
            changes = await request.json()
        except ValueError:
            changes = None
        problem = _config_problem(changes)
        if problem is None:
            try:
                sim.configure(changes)
            except ValueError as exc:
                problem = str(exc)
        if problem:
            return answer(*_error(400, "invalid_request_error", "invalid_config", problem))
        return answer(200, sim.config.public())

    async def reset(request: Request) -> JSONResponse:
        sim.reset()
        return answer(200, {"reset": True})

    app = Starlette(routes=[
        Route("/v1/account", account, methods=["GET"]),
        Route("/v1/payment_intents", create_intent, methods=["POST"]),
        Route("/v1/payment_intents/search", searcher("payment_intents"), methods=["GET"]),
        Route("/v1/customers/search", searcher("customers"), methods=["GET"]),
        Route("/v1/payment_intents/{id}", getter("payment_intents", "payment_intent"), methods=["GET"]),
        Route("/v1/payment_intents/{id}/cancel", cancel_intent, methods=["POST"]),
        Route("/v1/refunds", create_refund, methods=["POST"]),
        Route("/v1/payment_methods", create_method, methods=["POST"]),
        Route("/v1/payment_methods/{id}", get_method, methods=["GET"]),
        Route("/v1/payment_methods/{id}/attach", attach_method, methods=["POST"]),
        Route("/v1/customers", create_customer, methods=["POST"]),
        Route("/v1/customers/{id}/payment_methods", list_customer_methods, methods=["GET"]),
        Route("/v1/refunds", list_refunds, methods=["GET"]),
        Route("/v1/refunds/{id}", getter("refunds", "refund"), methods=["GET"]),
        Route("/v1/charges/{id}", getter("charges", "charge"), methods=["GET"]),
        Route("/v1/balance_transactions", list_transactions, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/_sim/ledger", ledger, methods=["GET"]),
        Route("/_sim/calls", calls, methods=["GET"]),
        Route("/_sim/config", get_config, methods=["GET"]),
        Route("/_sim/config", set_config, methods=["POST"]),
        Route("/_sim/reset", reset, methods=["POST"]),
        Route("/_sim/tokens", issue_token, methods=["POST"]),
        Route("/_sim/fail_next", fail_next, methods=["POST"]),
    ])
    app.state.simulator = sim  # for in-process tests
    return app


def _config_problem(changes: Any) -> str | None:
    """Why a /_sim/config body is unacceptable, or None. `seed` (int or null) reseeds the RNG."""
    if not isinstance(changes, dict):
        return "the body must be a JSON object"
    unknown = sorted(set(changes) - {*KNOBS, "seed", "frozen_time", "settlement_currency"})
    if unknown:
        return f"unknown setting(s): {', '.join(unknown)}"
    for name in KNOBS:
        value = changes.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number"
    for name in ("seed", "frozen_time"):
        value = changes.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{name} must be an integer or null"
    settles_in = changes.get("settlement_currency", "")
    if not isinstance(settles_in, str) or (settles_in and settles_in not in SUPPORTED_CURRENCIES):
        return "settlement_currency must be a currency Stripe supports, in lower case, or \"\""
    return None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line, exit 2, nothing started
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog="python -m simulators.stripe_sim", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--hang-seconds", type=float, default=3.0)
    parser.add_argument("--api-key", default=os.environ.get("STRIPE_API_KEY") or DEFAULT_API_KEY,
                        help="the secret key callers must send as Bearer (default: $STRIPE_API_KEY, else "
                        f"{DEFAULT_API_KEY})")
    parser.add_argument("--account-id", default=DEFAULT_ACCOUNT_ID,
                        help=f"the account the key speaks for, GET /v1/account (default {DEFAULT_ACCOUNT_ID})")
    parser.add_argument("--restricted-key", action="store_true",
                        help="play a restricted key that may not read its account (GET /v1/account is 403)")
    args = parser.parse_args(argv)
    try:
        config = SimConfig(latency_ms=args.latency_ms, error_rate=args.error_rate, hang_seconds=args.hang_seconds,
                           seed=args.seed, api_key=args.api_key, account_id=args.account_id,
                           restricted_key=args.restricted_key)
    except ValueError as exc:
        parser.error(str(exc))
    # A short graceful shutdown: hanging answers must not hold up a terminate.
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
