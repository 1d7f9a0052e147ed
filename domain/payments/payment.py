"""Payment: one per order. Owns captures, capture attempts and gateway refunds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel

from domain.payments.answers import FoundByReconciliation
from domain.payments.commands import (
    CapturePayment,
    MarkCaptureUnknown,
    MarkRefundUnknown,
    ReconcileCapture,
    ReconcileGatewayRefund,
    RetryPaymentCapture,
    SendRefundToGateway,
    UpdatePaymentMethod,
)
from domain.payments.events import (
    CaptureAttempted,
    CaptureOutcomeUnknown,
    GatewayRefundDeclined,
    GatewayRefundNotFound,
    GatewayRefundNotSent,
    GatewayRefundOutcomeUnknown,
    GatewayRefundRequested,
    GatewayRefundSettled,
    PaymentAbandoned,
    PaymentCaptured,
    PaymentDeclined,
    PaymentMethodUpdated,
)
from domain.payments.gateway import (
    Accepted,
    CaptureRequest,
    Declined,
    GatewayAnswer,
    LookupAnswer,
    NotFound,
    RefundRequest,
    may_be_the_same_account,
)
from domain.shared.aggregate import AggregateRoot
from domain.shared.actor import Role
from domain.shared.errors import InvalidCommand, NotAuthorized
from domain.shared.money import Money, total


class AttemptStatus(StrEnum):
    SENT = "sent"  # asked, answer not yet recorded
    UNKNOWN = "unknown"  # the flow got no usable answer: reconciliation must ask the gateway
    CAPTURED = "captured"
    DECLINED = "declined"  # declined, or the gateway confirmed it never charged


OPEN = frozenset({AttemptStatus.SENT, AttemptStatus.UNKNOWN})


class CaptureAttempt(BaseModel):
    attempt_id: str
    amount: Money
    card_token: str  # the card this attempt charges: the customer's token, or the gateway's saved card
    card_saved: bool = False  # True: `card_token` is the gateway's saved card
    status: AttemptStatus = AttemptStatus.SENT
    decline_code: str = ""
    gateway_reference: str = ""
    gateway_currency: str = ""  # the currency the gateway confirmed it charged in ("": not kept then)
    sent_at: datetime | None = None  # when payments decided to ask (None: recorded before this was kept)
    first_asked_at: datetime | None = None  # when it first left for the gateway (None: before this was kept)
    sent_to: str = ""  # the gateway account it went to, "<mode>:<id>" ("": before this was kept)
    unknown_since: datetime | None = None  # when its flow gave up waiting: no send of it starts later
    answered_by: str = ""  # the reconciliation command that found the answer ("": the flow's own, or none yet)
    saved_card: str = ""  # the card as the gateway saved it when it answered ("": not saved)


class GatewayRefundStatus(StrEnum):
    SENT = "sent"
    UNKNOWN = "unknown"  # the flow got no usable answer: reconciliation must ask the gateway
    SETTLED = "settled"
    DECLINED = "declined"
    NOT_FOUND = "not_found"  # the gateway confirmed it holds no such refund: nothing went out
    # Closed before payments ever asked: its flow was told "not sent" and failed the refund, so
    # it is never sent afterwards (a send still on its way would pay a refund billing released).
    NOT_SENT = "not_sent"


REFUND_OPEN = frozenset({GatewayRefundStatus.SENT, GatewayRefundStatus.UNKNOWN})
NOTHING_PAID = frozenset({GatewayRefundStatus.DECLINED, GatewayRefundStatus.NOT_FOUND, GatewayRefundStatus.NOT_SENT})


class GatewayRefund(BaseModel):
    refund_id: str
    amount: Money
    status: GatewayRefundStatus = GatewayRefundStatus.SENT
    decline_code: str = ""
    gateway_reference: str = ""
    sent_at: datetime | None = None
    first_asked_at: datetime | None = None  # when it first left for the gateway (None: before this was kept)
    sent_to: str = ""  # the gateway account it went to, "<mode>:<id>" ("": before this was kept)
    unknown_since: datetime | None = None  # when its flow gave up waiting: no send of it starts later
    answered_by: str = ""  # the reconciliation command that found the answer ("": the flow's own, or none yet)


CaptureCommand = CapturePayment | RetryPaymentCapture
PaymentsCommandLike = (
    CapturePayment | RetryPaymentCapture | SendRefundToGateway | ReconcileCapture | ReconcileGatewayRefund
)
# Requests recorded before payments kept `sent_at` count as sent at this time: long ago.
LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)


class Payment(AggregateRoot):
    MAX_ATTEMPTS: ClassVar[int] = 4
    # Declines that no retry will ever turn into a payment.
    # Declines no new attempt may follow: Stripe's decline codes (`stolen_card`, `lost_card`,
    # `pickup_card`: the bank asks to keep the card; `fraudulent`), and the older simulator
    # tokens' spellings (`card_stolen`, `card_lost`).
    HARD_DECLINES: ClassVar[frozenset[str]] = frozenset(
        {"stolen_card", "lost_card", "pickup_card", "fraudulent", "card_stolen", "card_lost"}
    )
    # Stripe forgets an idempotency key 24 h after its first use; sent again under it later, a
    # request could move money a second time. No request is sent again once this long has passed
    # since it first left (an hour's margin for clocks and the send itself): its answer is then
    # unknown, and reconciliation asks the gateway.
    KEY_KEPT_FOR: ClassVar[timedelta] = timedelta(hours=23)
    # A request still `sent` this long after it first left can no longer be sent (KEY_KEPT_FOR)
    # nor be waited for by its flow's step (a day): its flow is gone or stuck, and reconciliation
    # may ask the gateway about it.
    SENT_TOO_LONG: ClassVar[timedelta] = timedelta(hours=25)
    # For requests recorded before payments kept `first_asked_at`: a flow's step kept retrying
    # one for 24 h after it was issued, so a look-up's "not found" is measured from then.
    RETRIED_FOR: ClassVar[timedelta] = timedelta(hours=24)
    # What a capture the gateway confirms it never made counts as, for the customer: a
    # failed attempt (they may give another card), like a decline.
    NOT_CHARGED: ClassVar[str] = "not_charged"

    customer_id: str
    amount: Money
    card_token: str = ""  # the card the customer gave (a gateway token)
    # The same card as the gateway saved it for later charges ("": not yet saved). A card token
    # is good for one charge at most (Stripe's are), so a retry days later charges this instead.
    saved_card: str = ""
    abandoned: bool = False
    attempts: list[CaptureAttempt] = []
    refunds: dict[str, GatewayRefund] = {}

    @classmethod
    def for_order(cls, command: CapturePayment) -> Payment:
        return cls(
            id=command.order_id, customer_id=command.customer_id, amount=command.amount, card_token=command.card_token
        )

    # -- recovery ------------------------------------------------------------------
    def update_payment_method(self, command: UpdatePaymentMethod) -> None:
        if command.actor.role is Role.CUSTOMER and command.actor.id != self.customer_id:
            raise NotAuthorized("not_your_order", f"order {self.id} belongs to another customer")
        self._must_be_recoverable()
        # A new card is not saved yet; the same card given again stays saved (its token is spent).
        if command.card_token != self.card_token:
            self.card_token, self.saved_card = command.card_token, ""
        self.record(command, PaymentMethodUpdated(order_id=self.id, card_token=command.card_token))

    def _must_be_recoverable(self) -> None:
        if self.capture is not None:
            raise InvalidCommand("already_captured", f"the payment of order {self.id} is already captured")
        if self.abandoned:
            raise InvalidCommand("payment_abandoned", f"payments gave up on order {self.id}")

    # -- capture -----------------------------------------------------------------
    @property
    def capture(self) -> CaptureAttempt | None:
        return next((a for a in self.attempts if a.status is AttemptStatus.CAPTURED), None)

    @property
    def captured(self) -> Money:
        return self.capture.amount if self.capture else Money.zero(self.amount.currency)

    def begin_capture(
        self, command: CaptureCommand, asked_at: datetime | None = None, asked_of: str = ""
    ) -> CaptureRequest | FoundByReconciliation:
        """Decide what the gateway is asked, at `asked_at` (when the request leaves: the
        activity attempt's start; by default the command's time), of the gateway account
        `asked_of`. Asking again for the same attempt (an activity retry) asks the same thing
        with the same key, while the gateway still keeps that key and of the same account;
        asking again for one whose answer reconciliation found (a resumed
        flow) gets that answer instead; for one whose answer is unknown, or first sent longer
        ago than the gateway keeps keys, a refusal (`attempt_unknown`): reconciliation asks."""
        asked_at = asked_at or command.issued_at
        attempt = self._attempt(command.command_id)
        if attempt is not None and attempt.answered_by:
            return FoundByReconciliation(command_id=attempt.answered_by)
        if attempt is not None and attempt.status is AttemptStatus.UNKNOWN:
            # Its flow gave up on it (a Reset flow asks again): the gateway may hold it, and may
            # have forgotten its key by now (Stripe keeps one 24 h), so a second request could
            # charge again. Reconciliation asks the gateway instead.
            raise InvalidCommand(
                "attempt_unknown", f"attempt {attempt.attempt_id}'s answer is unknown: reconciliation asks the gateway"
            )
        if attempt is not None:
            self._key_still_kept(attempt, asked_at, "attempt_unknown", f"attempt {attempt.attempt_id}")
            self._same_account(attempt.sent_to, asked_of, "attempt_unknown", f"attempt {attempt.attempt_id}")
            attempt.sent_to = attempt.sent_to or asked_of  # recorded before accounts were kept: it goes there now
        if attempt is None:
            self._must_be_recoverable()
            if isinstance(command, CapturePayment) and command.amount != self.amount:
                raise InvalidCommand("amount_mismatch", f"order {self.id} is for {self.amount}, not {command.amount}")
            if any(a.status in OPEN for a in self.attempts):
                # The earlier attempt's answer is unknown (it may have charged): it must be
                # settled with its own key (or by reconciliation) before anyone tries again.
                raise InvalidCommand("attempt_in_flight", f"order {self.id} has a capture attempt awaiting its answer")
            if len(self.attempts) >= self.MAX_ATTEMPTS:
                raise InvalidCommand("no_attempts_left", f"order {self.id} had its {self.MAX_ATTEMPTS} attempts")
            attempt = CaptureAttempt(
                attempt_id=command.command_id, amount=self.amount, card_token=self.card_to_charge,
                card_saved=bool(self.saved_card),
                sent_at=command.issued_at, first_asked_at=asked_at, sent_to=asked_of,
            )
            self.attempts.append(attempt)
            self.record(command, CaptureAttempted(order_id=self.id, attempt_id=attempt.attempt_id, amount=attempt.amount))
        return self._capture_request(attempt)

    @property
    def card_to_charge(self) -> str:
        """What a new attempt charges: the customer's card as the gateway saved it, once it has."""
        return self.saved_card or self.card_token

    def _keep_saved_card(self, attempt: CaptureAttempt, saved_card: str) -> None:
        """The gateway saved the attempt's card for later charges. Later attempts charge it,
        unless the customer has given another card since (that one is charged instead)."""
        if not saved_card:
            return
        attempt.saved_card = saved_card
        if attempt.card_token in (self.card_token, self.saved_card):
            self.saved_card = saved_card

    def _capture_request(self, attempt: CaptureAttempt) -> CaptureRequest:
        return CaptureRequest(
            idempotency_key=attempt.attempt_id, amount=attempt.amount, card_token=attempt.card_token, reference=self.id,
            sent_to=attempt.sent_to, card_saved=attempt.card_saved,
        )

    def record_capture_answer(self, command: CaptureCommand, answer: GatewayAnswer) -> FoundByReconciliation | None:
        """Decide what the gateway's answer means. Reconciliation may have answered while this
        request was out (sent so long ago that its flow seemed gone): its answer stands and is
        this command's too. Were the two to disagree (a capture after a confirmed "not
        charged"), the daily settlement comparison shows it to support."""
        attempt = self._attempt(command.command_id)
        if attempt is not None and attempt.answered_by:
            return FoundByReconciliation(command_id=attempt.answered_by)
        if attempt is None or attempt.status is not AttemptStatus.SENT:
            raise InvalidCommand("no_open_attempt", f"attempt {command.command_id} is not waiting for an answer")
        self._capture_answered(command, attempt, answer)
        return None

    def mark_capture_unknown(self, command: MarkCaptureUnknown) -> None:
        """The flow has no usable answer. An attempt still waiting becomes unknown (a fact:
        the card may have been charged); one already answered is refused, so the flow
        reads that answer instead."""
        attempt = self._attempt(command.attempt_id)
        if attempt is None:
            raise InvalidCommand("no_such_attempt", f"order {self.id} has no capture attempt {command.attempt_id}")
        if attempt.status is AttemptStatus.UNKNOWN:
            return  # already recorded: nothing happens twice
        if attempt.status is not AttemptStatus.SENT:
            raise InvalidCommand("attempt_already_answered", f"attempt {attempt.attempt_id} is {attempt.status.value}")
        attempt.status, attempt.unknown_since = AttemptStatus.UNKNOWN, command.issued_at
        self.record(
            command,
            CaptureOutcomeUnknown(
                order_id=self.id, attempt_id=attempt.attempt_id, amount=attempt.amount, reason=command.reason
            ),
        )

    def capture_lookup(self, command: ReconcileCapture) -> CaptureRequest:
        """What reconciliation may ask the gateway about: an unknown attempt, or one sent
        so long ago that its flow can no longer be waiting for it."""
        attempt = self._attempt(command.attempt_id)
        if attempt is None:
            raise InvalidCommand("no_such_attempt", f"order {self.id} has no capture attempt {command.attempt_id}")
        self._may_reconcile(attempt.status, self._first_asked(attempt), command, f"attempt {attempt.attempt_id}")
        return self._capture_request(attempt)

    def reconcile_capture(self, command: ReconcileCapture, answer: LookupAnswer) -> None:
        """What the gateway's look-up means: captured, declined, or — confirmed never
        charged — a failed attempt like a decline."""
        self.capture_lookup(command)
        attempt = self._attempt(command.attempt_id)
        assert attempt is not None
        if isinstance(answer, NotFound):
            self._not_found_must_have_settled(command, answer, self._last_sent(attempt))
            answer = Declined(code=self.NOT_CHARGED, saved_card=answer.saved_card)
        attempt.answered_by = command.command_id  # a flow gone meanwhile is told this on resume
        self._capture_answered(command, attempt, answer)

    def _capture_answered(self, command: PaymentsCommandLike, attempt: CaptureAttempt, answer: GatewayAnswer) -> None:
        self._keep_saved_card(attempt, answer.saved_card)
        if isinstance(answer, Accepted):
            attempt.status, attempt.gateway_reference = AttemptStatus.CAPTURED, answer.reference
            attempt.gateway_currency = answer.currency
            self.record(
                command,
                PaymentCaptured(
                    order_id=self.id,
                    customer_id=self.customer_id,
                    attempt_id=attempt.attempt_id,
                    amount=attempt.amount,
                    gateway_reference=answer.reference,
                ),
            )
            return
        attempt.status, attempt.decline_code = AttemptStatus.DECLINED, answer.code
        self.record(
            command,
            PaymentDeclined(
                order_id=self.id,
                customer_id=self.customer_id,
                attempt_id=attempt.attempt_id,
                amount=attempt.amount,
                decline_code=answer.code,
            ),
        )
        if answer.code in self.HARD_DECLINES or len(self.attempts) >= self.MAX_ATTEMPTS:
            self.abandoned = True
            reason = f"hard_decline:{answer.code}" if answer.code in self.HARD_DECLINES else "attempts_exhausted"
            self.record(
                command,
                PaymentAbandoned(
                    order_id=self.id, customer_id=self.customer_id, reason=reason, attempts=len(self.attempts)
                ),
            )

    def _may_reconcile(
        self, status: StrEnum, first_asked: datetime | None, command: PaymentsCommandLike, what: str
    ) -> None:
        if status in (AttemptStatus.UNKNOWN, GatewayRefundStatus.UNKNOWN):
            return
        if status in (AttemptStatus.SENT, GatewayRefundStatus.SENT):
            if first_asked is None or command.issued_at - first_asked >= self.SENT_TOO_LONG:
                return
            raise InvalidCommand("still_in_flight", f"{what} was sent at {first_asked}; its flow may still be asking")
        raise InvalidCommand("already_answered", f"{what} is already {status.value}")

    def _key_still_kept(self, request: CaptureAttempt | GatewayRefund, asked_at: datetime, code: str, what: str) -> None:
        """A request is sent again under its key only while the gateway still keeps that key."""
        first = self._first_asked(request)
        if first is not None and asked_at - first >= self.KEY_KEPT_FOR:
            raise InvalidCommand(
                code,
                f"{what} first left for the gateway at {first:%Y-%m-%d %H:%M:%S} UTC; its key may be forgotten "
                "by now, so it is not sent again: reconciliation asks the gateway",
            )

    @staticmethod
    def _same_account(sent_to: str, asked_of: str, code: str, what: str) -> None:
        """A request is sent again only to the account it went to: under another account's key
        (a key swapped, test and live mixed up) the key means nothing there, and only the first
        account can say what became of it."""
        if not may_be_the_same_account(sent_to, asked_of):
            raise InvalidCommand(
                code,
                f"{what} went to gateway account {sent_to}; this worker's key is {asked_of}'s, "
                "so it is not sent again: reconciliation asks that account",
            )

    @staticmethod
    def _first_asked(request: CaptureAttempt | GatewayRefund) -> datetime | None:
        """When the request first left for the gateway; for one recorded before that was kept,
        when it was issued (no later)."""
        return request.first_asked_at or request.sent_at

    def _last_sent(self, request: CaptureAttempt | GatewayRefund) -> datetime | None:
        """The latest moment the request can have been sent: when its flow gave up on it
        (unknown), or the last moment it may be sent again under its key (still `sent`). A send
        under way then may still be on the wire: the look-up's `settles_after` covers that."""
        if request.unknown_since is not None:
            return request.unknown_since
        if request.first_asked_at is not None:
            return request.first_asked_at + self.KEY_KEPT_FOR
        return request.sent_at + self.RETRIED_FOR if request.sent_at is not None else None

    @staticmethod
    def _not_found_must_have_settled(command: PaymentsCommandLike, answer: NotFound, asked_at: datetime | None) -> None:
        """"Not found" frees money only once the look-up is sure to show the request: asked
        too soon (a search that lags), it is no answer, and the question stays open."""
        if asked_at is not None and command.issued_at - asked_at < answer.settles_after:
            raise InvalidCommand(
                "not_found_too_soon",
                f"the gateway's look-up may not show a request of {asked_at:%Y-%m-%d %H:%M:%S} UTC "
                f"before {asked_at + answer.settles_after:%H:%M:%S}: asked again later",
            )

    def awaiting_reconciliation(self, as_of: datetime) -> list[tuple[str, str, str, Money]]:
        """(kind, business id, status, amount) of every request reconciliation may ask the
        gateway about at `as_of`: unknown ones, and ones first sent longer ago than SENT_TOO_LONG."""

        def due(request: CaptureAttempt | GatewayRefund) -> bool:
            first_asked = self._first_asked(request)
            unknown = request.status in (AttemptStatus.UNKNOWN, GatewayRefundStatus.UNKNOWN)
            return unknown or first_asked is None or as_of - first_asked >= self.SENT_TOO_LONG

        return [("capture", a.attempt_id, a.status.value, a.amount) for a in self.attempts if a.status in OPEN and due(a)] + [
            ("refund", r.refund_id, r.status.value, r.amount)
            for r in self.refunds.values()
            if r.status in REFUND_OPEN and due(r)
        ]

    @property
    def open_since(self) -> datetime | None:
        """When the oldest request still waiting for (or missing) its answer was sent;
        None when every request has its answer. Reconciliation searches by it."""
        waiting = [a.sent_at for a in self.attempts if a.status in OPEN] + [
            r.sent_at for r in self.refunds.values() if r.status in REFUND_OPEN
        ]
        if not waiting:
            return None
        known = [t for t in waiting if t is not None]
        return min(known) if len(known) == len(waiting) else LONG_AGO

    def answers_found_by_reconciliation(self, refund_id: str | None = None) -> list[str]:
        """The reconciliation command that found the answer a flow waits for: the refund's
        (`refund_id`), or else the order's latest capture attempt's — the one its payment
        flow waits on. Empty when reconciliation found none (or the flow's own answer came)."""
        if refund_id is not None:
            refund = self.refunds.get(refund_id)
            return [refund.answered_by] if refund is not None and refund.answered_by else []
        latest = self.attempts[-1] if self.attempts else None
        return [latest.answered_by] if latest is not None and latest.answered_by else []

    def _attempt(self, attempt_id: str) -> CaptureAttempt | None:
        return next((a for a in self.attempts if a.attempt_id == attempt_id), None)

    # -- refunds through the gateway -----------------------------------------------
    @property
    def refunded(self) -> Money:
        """Settled at the gateway, plus what is on its way there."""
        return total(
            # An unknown refund counts: its money may have gone out.
            [r.amount for r in self.refunds.values() if r.status not in NOTHING_PAID],
            self.amount.currency,
        )

    def begin_refund(
        self, command: SendRefundToGateway, asked_at: datetime | None = None, asked_of: str = ""
    ) -> RefundRequest | FoundByReconciliation:
        """What the gateway is asked for this refund, at `asked_at` of account `asked_of` (as for
        captures): the same again for a refund still waiting for its answer, while the gateway
        keeps its key and of the same account; for one
        whose answer reconciliation found (a resumed flow), that answer."""
        asked_at = asked_at or command.issued_at
        refund = self.refunds.get(command.refund_id)
        if refund is not None and refund.answered_by:
            return FoundByReconciliation(command_id=refund.answered_by)
        if refund is None:
            if self.capture is None:
                raise InvalidCommand("not_captured", f"order {self.id} has no captured payment to refund")
            if command.amount.currency != self.amount.currency or not command.amount.is_positive:
                raise InvalidCommand("invalid_amount", f"cannot refund {command.amount} of a {self.amount.currency} payment")
            if self.refunded + command.amount > self.captured:
                # Billing should never ask for this; payments still refuses to send more than it took.
                raise InvalidCommand(
                    "exceeds_captured", f"{command.amount} would refund more than the {self.captured} captured"
                )
            if not may_be_the_same_account(self.capture.sent_to, asked_of):
                # A refund goes back through the account that took the money: another account's
                # key knows nothing of that payment. Nothing is sent; its flow is told so.
                raise InvalidCommand(
                    "wrong_gateway_account",
                    f"the payment of order {self.id} was taken through gateway account {self.capture.sent_to}; "
                    f"this worker's key is {asked_of}'s",
                )
            refund = GatewayRefund(
                refund_id=command.refund_id, amount=command.amount, sent_at=command.issued_at, first_asked_at=asked_at,
                sent_to=asked_of,
            )
            self.refunds[refund.refund_id] = refund
            self.record(command, GatewayRefundRequested(order_id=self.id, refund_id=refund.refund_id, amount=refund.amount))
        elif refund.status is GatewayRefundStatus.NOT_SENT:
            raise InvalidCommand(
                "refund_never_sent", f"refund {command.refund_id} was closed unsent: its flow failed it, billing released it"
            )
        elif refund.status is not GatewayRefundStatus.SENT:
            raise InvalidCommand("refund_already_answered", f"refund {command.refund_id} is already {refund.status.value}")
        else:
            self._key_still_kept(refund, asked_at, "refund_key_expired", f"refund {refund.refund_id}")
            self._same_account(self.refund_account(refund), asked_of, "refund_key_expired", f"refund {refund.refund_id}")
            refund.sent_to = self.refund_account(refund) or asked_of  # recorded before accounts were kept
        return self._refund_request(refund)

    def refund_account(self, refund: GatewayRefund) -> str:
        """The account a refund went to. One recorded before accounts were kept went through
        the account that took the payment, when payments knows it: a refund of a charge goes
        nowhere else (so a worker with another account's key neither sends it again nor ties
        it to its own account). "" when neither is known."""
        return refund.sent_to or (self.capture.sent_to if self.capture is not None else "")

    def _refund_request(self, refund: GatewayRefund) -> RefundRequest:
        assert self.capture is not None
        return RefundRequest(
            idempotency_key=refund.refund_id,
            charge=self.capture.gateway_reference,
            amount=refund.amount,
            reference=refund.refund_id,
            order_id=self.id,
            charge_currency=self.capture.gateway_currency,
            sent_to=self.refund_account(refund),
        )

    def record_refund_answer(self, command: SendRefundToGateway, answer: GatewayAnswer) -> FoundByReconciliation | None:
        """Decide what the gateway's answer means; reconciliation's answer, when it found one
        while this request was out, stands (as for captures)."""
        refund = self.refunds.get(command.refund_id)
        if refund is not None and refund.answered_by:
            return FoundByReconciliation(command_id=refund.answered_by)
        if refund is None or refund.status is not GatewayRefundStatus.SENT:
            raise InvalidCommand("no_open_refund", f"refund {command.refund_id} is not waiting for an answer")
        self._refund_answered(command, refund, answer)
        return None

    def mark_refund_unknown(self, command: MarkRefundUnknown) -> None:
        """The refund flow has no usable answer. Never sent: a confirmed "nothing went out",
        and the refund is closed so that nothing goes out later either.
        Sent and waiting: unknown (a fact; the money may have gone out). Already answered:
        refused, so the flow reads that answer instead."""
        refund = self.refunds.get(command.refund_id)
        if refund is None:
            # Closed for good: a send still on its way (an activity attempt the flow stopped
            # waiting for, a reset flow) is refused, since billing will release the money.
            refund = self.refunds[command.refund_id] = GatewayRefund(
                refund_id=command.refund_id, amount=Money.zero(self.amount.currency), status=GatewayRefundStatus.NOT_SENT
            )
        if refund.status is GatewayRefundStatus.NOT_SENT:
            self.record(command, GatewayRefundNotSent(order_id=self.id, refund_id=command.refund_id))
            return
        if refund.status is GatewayRefundStatus.UNKNOWN:
            return  # already recorded: nothing happens twice
        if refund.status is not GatewayRefundStatus.SENT:
            raise InvalidCommand("refund_already_answered", f"refund {refund.refund_id} is already {refund.status.value}")
        refund.status, refund.unknown_since = GatewayRefundStatus.UNKNOWN, command.issued_at
        self.record(
            command,
            GatewayRefundOutcomeUnknown(
                order_id=self.id, refund_id=refund.refund_id, amount=refund.amount, reason=command.reason
            ),
        )

    def refund_lookup(self, command: ReconcileGatewayRefund) -> RefundRequest:
        """What reconciliation may ask the gateway about: an unknown refund, or one sent so
        long ago that its flow can no longer be waiting for it."""
        refund = self.refunds.get(command.refund_id)
        if refund is None:
            raise InvalidCommand("no_such_refund", f"order {self.id} has no gateway refund {command.refund_id}")
        self._may_reconcile(refund.status, self._first_asked(refund), command, f"refund {refund.refund_id}")
        return self._refund_request(refund)

    def reconcile_refund(self, command: ReconcileGatewayRefund, answer: LookupAnswer) -> None:
        """What the gateway's look-up means: settled, declined, or confirmed never paid."""
        self.refund_lookup(command)
        refund = self.refunds[command.refund_id]
        if isinstance(answer, NotFound):
            self._not_found_must_have_settled(command, answer, self._last_sent(refund))
        refund.answered_by = command.command_id  # a flow gone meanwhile is told this on resume
        if isinstance(answer, NotFound):
            refund.status = GatewayRefundStatus.NOT_FOUND
            self.record(
                command, GatewayRefundNotFound(order_id=self.id, refund_id=refund.refund_id, amount=refund.amount)
            )
            return
        self._refund_answered(command, refund, answer)

    def _refund_answered(self, command: PaymentsCommandLike, refund: GatewayRefund, answer: GatewayAnswer) -> None:
        if isinstance(answer, Accepted):
            refund.status, refund.gateway_reference = GatewayRefundStatus.SETTLED, answer.reference
            self.record(
                command,
                GatewayRefundSettled(
                    order_id=self.id, refund_id=refund.refund_id, amount=refund.amount, gateway_reference=answer.reference
                ),
            )
        else:
            refund.status, refund.decline_code = GatewayRefundStatus.DECLINED, answer.code
            self.record(
                command,
                GatewayRefundDeclined(
                    order_id=self.id, refund_id=refund.refund_id, amount=refund.amount, decline_code=answer.code
                ),
            )


__all__ = ["Payment", "CaptureAttempt", "GatewayRefund", "Declined"]
