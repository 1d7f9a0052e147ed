"""The payments port (activities/ports.py `PaymentGateway`) on Stripe, through the official SDK.

    capture       a PaymentIntent created and confirmed for the order's amount (automatic capture,
                  off_session: nobody is there to authenticate); the answer carries the currency
                  Stripe charged in, which payments keeps. The card is saved first: a Customer
                  for the attempt, then (a card token, tok_..., is good for one use) a
                  PaymentMethod from the token, saved on it; the answer names that PaymentMethod
                  (`saved_card`), and payments charges it in later attempts, with the Customer it
                  is on (GET /v1/payment_methods/{id} tells).
    refund        a Refund against that PaymentIntent, refused before any call when it is not
                  in that currency (one request; the PaymentIntent is read first only for a
                  capture recorded before payments kept its currency)
    find_capture  the PaymentIntent whose metadata attempt_id is the business id (one waiting
                  for 3-D Secure is cancelled first, as for capture; search; none found: the
                  card the attempt saved on the way, on its Customer, if any;
                  Stripe's search can lag an hour in an outage, so "not found" counts only for
                  an attempt older than that: `NotFound.settles_after`)
    find_refund   the PaymentIntent's refund whose metadata refund_id is the business id (list)
    account       whose account the key speaks for (GET /v1/account, once): payments keeps it with
                  each request, and a look-up for a request sent to another account is refused
    settlements   the day's balance transactions of type charge, refund and refund_failure, each
                  with the amount its Charge or Refund moved, in the payment's currency

Every call that moves money sends settleflow's business id as the `Idempotency-Key`
(the capture attempt id, the refund id; the steps that save a card send "<attempt id>/customer",
"/card" and "/save") and the ids as metadata (order_id and
attempt_id on a PaymentIntent, order_id and refund_id on a Refund); an id longer than
Stripe's 255-character key is sent as its digest (`stripe_business_id`). Look-ups are
GETs: they never move money (the one POST a look-up may send, the cancel of a PaymentIntent
waiting for 3-D Secure, moves none either: it makes the decline final).

One call is one HTTP request: the SDK's own network retries are OFF
(`max_network_retries=0`). Temporal already retries the activity with the same
idempotency key, with the backoff and the 24 h window in the workflow's table; SDK
retries inside an attempt would only stretch one attempt past its timeout. The card-saving
steps of a capture are the exception (`_step`: asked again at once, twice at most, and not
sent again by a later try on this process once they succeeded).

Stripe's answers in payments' terms:
    succeeded                                   Accepted(id)
    card_error (402) / a refund that failed     Declined(decline_code or code / failure_reason)
    card_error authentication_required (an      Declined("authentication_required")
    off-session card that wants 3-D Secure)
    PaymentIntent requires_action (3-D Secure;  cancelled first (nobody is there to authenticate,
    one sent before captures were off-session)  and until cancelled it could still charge), then
                                                Declined("authentication_required")
    rate limit, connection trouble, timeouts,
    5xx, 409, "pending" after a fresh read      GatewayUnavailable (retried with the same key)
    authentication, permission, invalid
    request, idempotency error                  GatewayRefusedRequest (clear, never retried)

Money: amounts cross as Stripe's integer minor units in the charge's currency (JPY and
KRW have none, BHD/JOD/KWD three; ISK is zero-decimal but Stripe wants it written with
two). An amount with more decimals than Stripe's unit is refused, never rounded; a
currency Stripe refuses comes back as GatewayRefusedRequest with Stripe's message.

The client talks to `base_url` (the simulator, `python -m simulators.stripe_sim`) or,
with no override, to Stripe itself; switching is configuration only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar

import hashlib
import threading
import time as clock

import stripe

from domain.payments.gateway import (
    Accepted,
    CaptureRequest,
    Declined,
    GatewayAnswer,
    GatewayRefusedRequest,
    GatewayUnavailable,
    LookupAnswer,
    NotFound,
    RefundRequest,
    SettlementLine,
    may_be_the_same_account,
)
from adapters.settings import SIMULATOR_API_KEY
from domain.shared.errors import DomainError
from domain.shared.money import Money

T = TypeVar("T")

STRIPE_API = "https://api.stripe.com"
# "Under normal operating conditions, data is searchable in less than 1 minute. Occasionally,
# propagation of new or updated data can be up to an hour behind during outages" (Stripe's
# search documentation): a capture Stripe's search does not find counts as never made only
# for an attempt older than this. Refunds are found by a list, which is current.
STRIPE_SEARCH_LAG = timedelta(hours=1)

# Stripe's minor units (https://docs.stripe.com/currencies): two decimals unless listed.
ZERO_DECIMAL = frozenset("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split())
THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())
WHOLE_UNITS_IN_TWO_DECIMALS = frozenset({"ISK"})  # zero-decimal, written as two: 100 ISK -> 10000

# Stripe's limits: an Idempotency-Key has at most 255 characters, a metadata value 500.
KEY_MAX = 255

# Metadata keys on Stripe's objects; search and list match on them.
ORDER_ID, ATTEMPT_ID, REFUND_ID = "order_id", "attempt_id", "refund_id"
# Requests one capture try sends one after another, the PaymentIntent last (a Customer, a
# PaymentMethod from the token, the attach, the PaymentIntent): a try whose flow stopped
# waiting may send its PaymentIntent this many requests' time on the wire after it began.
CAPTURE_REQUESTS_PER_TRY = 4
# Stripe's test PaymentMethods (pm_card_visa, ...): shortcuts, not objects one reads; saving one
# makes a new PaymentMethod.
STRIPE_TEST_METHODS = "pm_card_"
# The card-saving steps this process saw succeed, kept by idempotency key for a try of the same
# attempt to skip (at most this many, and no longer than an attempt may be sent again).
SAVED_STEPS_KEPT = 10_000
SAVED_STEPS_KEPT_FOR = timedelta(hours=23)
# A card-saving step Stripe could not answer (a 5xx, a dropped connection) is asked again at once,
# twice at most, under its own key: each is idempotent and moves no money, and a try that failed
# there would cost the whole capture its next (doubling) back-off. The PaymentIntent itself is
# never retried here: Temporal retries the try.
SAVING_STEP_TRIES = 3
SAVING_STEP_PAUSE_SECONDS = 0.2

CAPTURE_TYPES = frozenset({"charge", "payment"})  # balance transaction types of a captured card payment
REFUND_TYPES = frozenset({"refund", "payment_refund"})
# A refund paid out and then failed (the card's bank sent it back): its money is the merchant's again.
REFUND_FAILURE_TYPES = frozenset({"refund_failure"})


def stripe_business_id(business_id: str) -> str:
    """The business id as Stripe holds it (Idempotency-Key, metadata): itself, or for ids
    longer than Stripe's 255-character key, "sha256:" and its digest. Deterministic, so a
    retry sends the same key and a look-up finds the same object; settlement lines carry
    this form."""
    if len(business_id) <= KEY_MAX:
        return business_id
    return "sha256:" + hashlib.sha256(business_id.encode("utf-8")).hexdigest()


def stripe_exponent(currency: str) -> int:
    return 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2


def to_stripe_amount(money: Money) -> int:
    """Money in Stripe's integer minor units; more decimals than Stripe's unit is refused."""
    units = money.amount.scaleb(stripe_exponent(money.currency))
    if units != units.to_integral_value() or (money.currency in WHOLE_UNITS_IN_TWO_DECIMALS and units % 100):
        raise GatewayRefusedRequest(f"{money} cannot be written in Stripe's minor units of {money.currency}")
    return int(units)


def from_stripe_amount(amount: int, currency: str) -> Money:
    code = currency.upper()
    return Money.of(Decimal(abs(amount)).scaleb(-stripe_exponent(code)), code)


class _HttpxClient(stripe.HTTPXClient):
    """The SDK's httpx transport, sending the form body as `content` (httpx deprecates
    `data=<str>`); everything else is the SDK's own (stripe==16.1.0)."""

    def _get_request_args_kwargs(self, method: str, url: str, headers: Any, post_data: Any) -> Any:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        body = kwargs.pop("data", None)
        if body:
            kwargs["content"] = body
        return args, kwargs


class StripeGateway:
    """Thread-safe (one StripeClient over one httpx connection pool); calls are synchronous
    because the payments activities run in a thread pool."""

    def __init__(
        self, api_key: str, base_url: str | None = None, timeout_seconds: float = 10.0,
        search_lag: timedelta | None = None, account_id: str | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a Stripe secret key is required (STRIPE_API_KEY)")
        self._http = _HttpxClient(timeout=timeout_seconds, allow_sync_methods=True)
        api_base = (base_url or "").rstrip("/") or STRIPE_API
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            max_network_retries=0,
            http_client=self._http,
        )
        self.api_base = api_base
        # Stripe's search lags (STRIPE_SEARCH_LAG), wherever it is reached from (a proxy, another
        # base address); only the simulator — known by its own key, which Stripe never accepts —
        # searches its own records, current as soon as a request is answered.
        self.search_lag = search_lag if search_lag is not None else (
            timedelta(0) if api_key == SIMULATOR_API_KEY else STRIPE_SEARCH_LAG)
        # The longest one request of this client can be on the wire: httpx times connecting,
        # writing, reading and waiting for a connection each (and the SDK retries nothing). A
        # request whose flow stopped waiting may arrive this long after: "not found" waits for it.
        self.on_the_wire = timedelta(seconds=4 * timeout_seconds)
        self._mode = "live" if api_key.startswith(("sk_live_", "rk_live_")) else "test"
        self._declared = account_id or None  # SETTLEFLOW_STRIPE_ACCOUNT: needed by a key that may not read it
        self._account: str | None = None  # read on first use, then kept (a key speaks for one account)
        # Stripe would replay these steps' answers under their keys; each replay is one more
        # request that can fail and cost the whole try a back-off, so a retry here skips them.
        self._steps_done: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._steps_lock = threading.Lock()

    # -- whose account ----------------------------------------------------------------

    def account(self) -> str:
        """The account this key speaks for, "<mode>:<id>" (`GET /v1/account`, once; the mode
        comes from the key: test and live keep separate records under one account id). A
        restricted key that may not read its account uses the declared one
        (SETTLEFLOW_STRIPE_ACCOUNT); a declared account the key does not speak for, or none for
        such a key, is refused (GatewayRefusedRequest): settleflow never guesses where a request
        went. Unreachable: GatewayUnavailable, and it is read again next time."""
        if self._account is None:
            try:
                account_id = _ask(lambda: self._client.v1.accounts.retrieve_current()).id
            except GatewayRefusedRequest as refused:
                if not isinstance(refused.__cause__, stripe.PermissionError):
                    raise
                if self._declared is None:
                    raise GatewayRefusedRequest(
                        "this Stripe key may not read its account: declare it in SETTLEFLOW_STRIPE_ACCOUNT") from refused
                account_id = self._declared
            if self._declared is not None and account_id != self._declared:
                raise GatewayRefusedRequest(
                    f"this Stripe key speaks for {account_id}, not {self._declared} (SETTLEFLOW_STRIPE_ACCOUNT)")
            self._account = f"{self._mode}:{account_id}"
        return self._account

    def _must_see(self, what: str, sent_to: str) -> None:
        """A look-up is asked only of the account the request went to: another account (a key
        swapped, test and live mixed up) would find nothing, and "not found" there is no answer."""
        if not may_be_the_same_account(sent_to, self.account()):
            raise GatewayRefusedRequest(
                f"{what} went to Stripe account {sent_to}; this key is {self.account()}'s, which cannot see it")

    # -- money-moving calls ----------------------------------------------------------

    def capture(self, request: CaptureRequest) -> GatewayAnswer:
        key = stripe_business_id(request.idempotency_key)
        amount = to_stripe_amount(request.amount)  # refused before anything is sent
        saved = self._saved_card(request)
        if isinstance(saved, Declined):
            return saved
        customer, method = saved
        params: dict[str, Any] = {
            "amount": amount,
            "currency": request.amount.currency.lower(),
            "confirm": True,
            # Merchant-initiated: the capture runs in a flow, with nobody there to authenticate,
            # so a card that asks for 3-D Secure is declined at once (authentication_required).
            "off_session": True,
            "customer": customer,
            "payment_method": method,
            "payment_method_types": ["card"],
            "description": f"settleflow order {request.reference}",
            "metadata": {ORDER_ID: request.reference, ATTEMPT_ID: key},
        }
        try:
            intent = _ask(lambda: self._client.v1.payment_intents.create(params, {"idempotency_key": key}))
        except stripe.CardError as declined:
            return Declined(_decline_code(declined), saved_card=method)
        if intent.status == "processing":
            intent = _ask(lambda: self._client.v1.payment_intents.retrieve(intent.id))
        return _capture_answer(self._not_waiting_for_authentication(_plain(intent)), key)

    def _saved_card(self, request: CaptureRequest) -> tuple[str, str] | Declined:
        """The attempt's card as a PaymentMethod saved on a Customer, (customer id, payment
        method id): what Stripe charges again later without the customer. The card an earlier
        attempt saved (`card_saved`) is charged with the Customer it is on (read from the
        PaymentMethod). Otherwise a Customer is made first, carrying the order's and the
        attempt's ids in its metadata (a key that may not make one, or a Stripe outage, then
        leaves the customer's token unused); then a card token (`tok_...`, good for one use)
        becomes a PaymentMethod, and the PaymentMethod is saved on that Customer. A look-up
        that finds no PaymentIntent for the attempt finds the card through its Customer
        (`find_capture`). Each POST has its own key derived from the attempt's, so a retry of
        the attempt replays these steps (or, on this process, skips those it saw succeed: `_step`)
        and sends the PaymentIntent with the same parameters.

        Stripe checks a card as it saves it: one it declines there is a decline of the attempt
        (no PaymentIntent is made, nothing moves), and names the PaymentMethod made from the
        token, unsaved, which a later attempt may try to save and charge again."""
        card, key = request.card_token, request.idempotency_key
        if request.card_saved or (card.startswith("pm_") and not card.startswith(STRIPE_TEST_METHODS)):
            # A saved card, or a PaymentMethod the customer gave that may be saved on a Customer
            # already (a wallet's): charged with that Customer, as it cannot be saved on another.
            method = _plain(_ask(lambda: self._client.v1.payment_methods.retrieve(card)))
            if method.get("customer"):
                return _id(method["customer"]), method["id"]
        metadata = {ORDER_ID: request.reference, ATTEMPT_ID: stripe_business_id(key)}
        customer = self._step(f"{key}/customer", lambda k: self._client.v1.customers.create(
            {"description": f"settleflow order {request.reference}", "metadata": metadata}, {"idempotency_key": k}))
        if card.startswith("pm_"):
            method = {"id": card}  # Stripe's test PaymentMethods (pm_card_visa) are saved as new ones
        else:
            try:
                method = self._step(f"{key}/card", lambda k: self._client.v1.payment_methods.create(
                    {"type": "card", "card": {"token": card}}, {"idempotency_key": k}))
            except stripe.CardError as declined:
                return Declined(_decline_code(declined))
        try:
            saved = self._step(f"{key}/save", lambda k: self._client.v1.payment_methods.attach(
                method["id"], {"customer": customer["id"]}, {"idempotency_key": k}))
        except stripe.CardError as declined:
            return Declined(_decline_code(declined), saved_card=method["id"])
        return customer["id"], saved["id"]

    def _step(self, name: str, call: Callable[[str], Any]) -> dict[str, Any]:
        """One card-saving step under its idempotency key (derived from the attempt's): a step
        this process saw succeed for the attempt is not sent again (Stripe would replay the same
        answer); a decline is not kept, and is asked again (Stripe replays that too); no answer
        is asked again at once (`SAVING_STEP_TRIES`)."""
        key, now = stripe_business_id(name), clock.monotonic()
        with self._steps_lock:
            kept = self._steps_done.get(key)
            if kept is not None and now - kept[0] < SAVED_STEPS_KEPT_FOR.total_seconds():
                return kept[1]
        for tries_left in range(SAVING_STEP_TRIES - 1, -1, -1):
            try:
                answer = _plain(_ask(lambda: call(key)))
                break
            except GatewayUnavailable:
                if not tries_left:
                    raise
                clock.sleep(SAVING_STEP_PAUSE_SECONDS)
        with self._steps_lock:
            self._steps_done[key] = (now, answer)
            while len(self._steps_done) > SAVED_STEPS_KEPT:
                self._steps_done.popitem(last=False)
        return answer

    def _not_waiting_for_authentication(self, intent: dict[str, Any]) -> dict[str, Any]:
        """A PaymentIntent waiting for 3-D Secure (`requires_action`) is not a decline yet: its
        customer could still authenticate it and be charged, after the flow took "declined" and
        perhaps charged a new card. Nobody is there to authenticate a merchant-initiated capture,
        so it is cancelled (moving no money), and only Stripe's `canceled` answers it. A cancel
        refused because it succeeded meanwhile is read again: it is then a capture."""
        if intent["status"] != "requires_action":
            return intent
        intent_id = intent["id"]
        try:
            return _plain(_ask(lambda: self._client.v1.payment_intents.cancel(
                intent_id, {"cancellation_reason": "abandoned"})))
        except GatewayRefusedRequest:
            now = _plain(_ask(lambda: self._client.v1.payment_intents.retrieve(intent_id)))
            if now["status"] == "requires_action":
                raise  # not "it moved on meanwhile" (a key that may not cancel): said, not retried for ever
            return now

    def refund(self, request: RefundRequest) -> GatewayAnswer:
        # A refund crosses in the payment's currency, so a request in another currency would
        # move a wrong amount: it is refused before anything moves. The payment's currency is
        # the one Stripe confirmed at capture (payments keeps it); for a capture recorded
        # before payments kept it, the PaymentIntent is read first (the read moves nothing).
        key = stripe_business_id(request.idempotency_key)
        currency, order_id = request.charge_currency, request.order_id
        if not currency:
            intent = _plain(_ask(lambda: self._client.v1.payment_intents.retrieve(request.charge)))
            currency, order_id = intent["currency"].upper(), (intent.get("metadata") or {}).get(ORDER_ID, "")
        if currency != request.amount.currency:
            raise GatewayRefusedRequest(
                f"refund {request.idempotency_key} is in {request.amount.currency}, "
                f"payment {request.charge} in {currency}")
        params = {
            "payment_intent": request.charge,
            "amount": to_stripe_amount(request.amount),
            "reason": "requested_by_customer",
            "metadata": {REFUND_ID: key, ORDER_ID: order_id},
        }
        try:
            refund = _ask(lambda: self._client.v1.refunds.create(params, {"idempotency_key": key}))
        except stripe.CardError as declined:
            return Declined(_decline_code(declined))
        if refund.status in ("pending", "requires_action"):
            refund = _ask(lambda: self._client.v1.refunds.retrieve(refund.id))
        return _refund_answer(_plain(refund), key)

    # -- look-ups (never move money) -------------------------------------------------

    def find_capture(self, request: CaptureRequest) -> LookupAnswer:
        """The PaymentIntent made under this attempt id (only `idempotency_key` is used).
        On Stripe, search is eventually consistent (usually under a minute, up to an hour in
        an outage): "not found" says so (`settles_after`), and payments decides on it only
        for an attempt older than that."""
        key = stripe_business_id(request.idempotency_key)
        self._must_see(f"capture {key}", request.sent_to)
        query = f"metadata['{ATTEMPT_ID}']:'{_quoted(key)}'"
        found = _ask(lambda: list(self._client.v1.payment_intents.search({"query": query, "limit": 100})
                                  .auto_paging_iter()))
        intents = [_plain(i) for i in found]
        if not intents:
            # A try sends its PaymentIntent last, after the steps that save the card: "not found"
            # waits for the whole try to have left, and names a card it saved on the way.
            return NotFound(settles_after=CAPTURE_REQUESTS_PER_TRY * self.on_the_wire + self.search_lag,
                            saved_card=self._card_saved_for(query))
        intents = [self._not_waiting_for_authentication(i) for i in intents]
        succeeded = [i for i in intents if i["status"] in ("succeeded", "requires_capture")]
        if succeeded:
            return _captured(succeeded[0])
        if any(i["status"] == "processing" for i in intents):
            raise GatewayUnavailable(f"capture {key} is still processing at Stripe")
        return _capture_answer(intents[0], key)

    def _card_saved_for(self, query: str) -> str:
        """The card an attempt saved before it stopped short of its PaymentIntent ("": none):
        the PaymentMethod on the attempt's Customer. Customers are searched like PaymentIntents
        (and lag like them): "not found" waits as long."""
        customers = _ask(lambda: list(self._client.v1.customers.search({"query": query, "limit": 100})
                                      .auto_paging_iter()))
        for customer in customers:
            customer_id = customer.id
            methods = _ask(lambda: list(self._client.v1.customers.payment_methods.list(
                customer_id, {"limit": 100}).auto_paging_iter()))
            if methods:
                return str(methods[0].id)
        return ""

    def find_refund(self, request: RefundRequest) -> LookupAnswer:
        """The refund made under this refund id (`idempotency_key`), among the refunds of
        its PaymentIntent (`charge`). A PaymentIntent the account does not know (another
        account's key, a test key against live records) is no answer: refused, not "not found",
        since "not found" would free money that may have gone out from the right account. For
        the same reason a refund sent to another account than this key's is not looked up."""
        self._must_see(f"refund {request.idempotency_key}", request.sent_to)
        refunds = _ask(lambda: list(self._client.v1.refunds.list({"payment_intent": request.charge, "limit": 100})
                                    .auto_paging_iter()))
        key = stripe_business_id(request.idempotency_key)
        mine = [r for r in map(_plain, refunds) if (r.get("metadata") or {}).get(REFUND_ID) == key]
        if not mine:
            # A list is current: only a send still on its way. A refund of a capture recorded
            # before its currency was kept reads the PaymentIntent first: two requests' time.
            return NotFound(settles_after=2 * self.on_the_wire)
        succeeded = [r for r in mine if r["status"] == "succeeded"]
        if succeeded:
            return Accepted(succeeded[0]["id"])
        if unsettled := [r for r in mine if r["status"] not in ("failed", "canceled")]:
            # Declined only when every refund under the id is: one still pending may yet pay out.
            return _refund_answer(unsettled[0], key)
        return _refund_answer(mine[0], key)

    def settlements(self, day: date) -> list[SettlementLine]:
        """Every capture and refund settleflow made that Stripe booked on `day` (UTC), and every
        failure of such a refund (`refund_failure`: the money came back), oldest first. Balance
        transactions without settleflow's metadata (other payments on the same account) and other
        types (fees, payouts) are not listed."""
        start = datetime.combine(day, time(0), tzinfo=timezone.utc)
        bounds = {"gte": int(start.timestamp()), "lt": int((start + timedelta(days=1)).timestamp())}
        transactions = _ask(lambda: [_plain(t) for t in self._client.v1.balance_transactions.list(
            {"created": bounds, "limit": 100, "expand": ["data.source"]}).auto_paging_iter()])
        intents: dict[str, dict[str, Any]] = {}
        lines = []
        for txn in reversed(transactions):  # Stripe lists newest first
            line = self._settlement_line(txn, intents)
            if line is not None:
                lines.append(line)
        return lines

    def _settlement_line(self, txn: dict[str, Any], intents: dict[str, dict[str, Any]]) -> SettlementLine | None:
        """One balance transaction as a settlement line, or None when it is not settleflow's.
        Whose it is comes first (settleflow's metadata), so no other integration's payment on
        the account — in a currency settleflow does not use — can hold up a day's comparison.
        The amount is the source's (the Charge's, the Refund's), in the payment's currency: the
        transaction's own amount is in the account's settlement currency, after exchange."""
        source = txn.get("source")
        if not isinstance(source, dict) or txn["type"] not in CAPTURE_TYPES | REFUND_TYPES | REFUND_FAILURE_TYPES:
            return None
        settled_at = datetime.fromtimestamp(txn["created"], tz=timezone.utc)
        if txn["type"] in REFUND_TYPES | REFUND_FAILURE_TYPES:  # the source is the Refund
            metadata = source.get("metadata") or {}
            if not metadata.get(REFUND_ID):
                return None
            kind, business_id, reference = (
                "refund" if txn["type"] in REFUND_TYPES else "refund_reversal", metadata[REFUND_ID], source["id"])
        else:
            intent_id = source.get("payment_intent")
            if not intent_id:
                return None
            if intent_id not in intents:
                intents[intent_id] = _plain(_ask(lambda: self._client.v1.payment_intents.retrieve(intent_id)))
            metadata = intents[intent_id].get("metadata") or {}
            if not metadata.get(ATTEMPT_ID):
                return None
            kind, business_id, reference = "capture", metadata[ATTEMPT_ID], intent_id
        amount = _moved(source)
        if amount is None:
            # settleflow's metadata on an amount it cannot read: left out, so payments' record
            # of it stands alone and the comparison flags it (missing_at_gateway) for support.
            return None
        return SettlementLine(kind=kind, business_id=business_id, order_id=metadata.get(ORDER_ID, ""),
                              reference=reference, amount=amount, settled_at=settled_at)

    def close(self) -> None:
        self._http.close()


# -- Stripe's answers in payments' terms --------------------------------------------------

def _ask(call: Callable[[], T]) -> T:
    """Run one SDK call; transport trouble and refusals become payments' two exceptions.
    Card errors pass through: the caller turns them into Declined."""
    try:
        return call()
    except stripe.CardError:
        raise
    except (stripe.APIConnectionError, stripe.RateLimitError) as trouble:
        raise GatewayUnavailable(f"Stripe unreachable: {type(trouble).__name__}: {_message(trouble)}") from trouble
    except (stripe.AuthenticationError, stripe.PermissionError) as wrong:
        raise GatewayRefusedRequest(f"Stripe refused the API key: {_message(wrong)}") from wrong
    except (stripe.InvalidRequestError, stripe.IdempotencyError) as wrong:
        raise GatewayRefusedRequest(f"Stripe refused the request: {_describe(wrong)}") from wrong
    except stripe.StripeError as trouble:  # APIError: 5xx, 409 and anything unexpected
        raise GatewayUnavailable(f"Stripe answered {trouble.http_status}: {_message(trouble)}") from trouble


def _moved(source: dict[str, Any]) -> Money | None:
    """What a Charge or Refund moved, in its own currency (a Charge's captured amount)."""
    minor = source.get("amount_captured") or source.get("amount")
    if not isinstance(minor, int) or not isinstance(source.get("currency"), str):
        return None
    try:
        return from_stripe_amount(minor, source["currency"])
    except (ValueError, DomainError):  # a currency settleflow does not know
        return None


def _captured(intent: dict[str, Any]) -> Accepted:
    """A capture Stripe made: the PaymentIntent, and the currency it charged in."""
    return Accepted(intent["id"], currency=intent["currency"].upper(), saved_card=_saved(intent))


def _saved(intent: dict[str, Any]) -> str:
    """The PaymentIntent's card, if it is saved on a Customer (a later attempt may charge it)."""
    method = intent.get("payment_method")
    return _id(method) if method and intent.get("customer") else ""


def _id(obj: Any) -> str:
    """An object's id, whether Stripe sent the id or the expanded object."""
    return obj if isinstance(obj, str) else str(obj["id"])


def _capture_answer(intent: dict[str, Any], key: str) -> GatewayAnswer:
    status = intent["status"]
    if status in ("succeeded", "requires_capture"):
        return _captured(intent)
    if status == "requires_payment_method":
        error = intent.get("last_payment_error") or {}
        return Declined(error.get("decline_code") or error.get("code") or "card_declined", saved_card=_saved(intent))
    if status == "canceled":
        # Ours, cancelled while it waited for 3-D Secure nobody would give; else cancelled as such.
        return Declined("authentication_required" if intent.get("cancellation_reason") == "abandoned" else "canceled",
                        saved_card=_saved(intent))
    raise GatewayUnavailable(f"capture {key}: PaymentIntent {intent['id']} is {status}")


def _refund_answer(refund: dict[str, Any], key: str) -> GatewayAnswer:
    status = refund["status"]
    if status == "succeeded":
        return Accepted(refund["id"])
    if status in ("failed", "canceled"):
        return Declined(refund.get("failure_reason") or f"refund_{status}")
    raise GatewayUnavailable(f"refund {key}: {refund['id']} is still {status}")


def _decline_code(declined: stripe.CardError) -> str:
    error = (declined.json_body or {}).get("error") or {}
    return str(error.get("decline_code") or error.get("code") or declined.code or "card_declined")


def _plain(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def _message(error: stripe.StripeError) -> str:
    return str(error.user_message or "")


def _describe(error: stripe.StripeError) -> str:
    body = (error.json_body or {}).get("error") or {}
    parts: Iterable[str] = (str(error.http_status or "?"), body.get("type") or "", body.get("code") or "",
                            f"param {body['param']}" if body.get("param") else "", _message(error))
    return " ".join(p for p in parts if p)


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
