"""Payment: one per order. Owns captures, capture attempts and gateway refunds."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel

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
from domain.payments.gateway import Accepted, CaptureRequest, Declined, GatewayAnswer, RefundRequest
from domain.shared.aggregate import AggregateRoot
from domain.shared.actor import Role
from domain.shared.errors import InvalidCommand, NotAuthorized
from domain.shared.money import Money, total


class AttemptStatus(StrEnum):
    SENT = "sent"  # asked, answer not yet recorded
    CAPTURED = "captured"
    DECLINED = "declined"


class CaptureAttempt(BaseModel):
    attempt_id: str
    amount: Money
    card_token: str
    status: AttemptStatus = AttemptStatus.SENT
    decline_code: str = ""
    gateway_reference: str = ""


class GatewayRefundStatus(StrEnum):
    SENT = "sent"
    SETTLED = "settled"
    DECLINED = "declined"


class GatewayRefund(BaseModel):
    refund_id: str
    amount: Money
    status: GatewayRefundStatus = GatewayRefundStatus.SENT
    decline_code: str = ""
    gateway_reference: str = ""


CaptureCommand = CapturePayment | RetryPaymentCapture


class Payment(AggregateRoot):
    MAX_ATTEMPTS: ClassVar[int] = 4
    # Declines that no retry will ever turn into a payment.
    HARD_DECLINES: ClassVar[frozenset[str]] = frozenset({"card_stolen", "card_lost", "fraudulent"})

    customer_id: str
    amount: Money
    card_token: str = ""
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
        self.card_token = command.card_token
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

    def begin_capture(self, command: CaptureCommand) -> CaptureRequest:
        """Decide what the gateway is asked. Asking again for the same attempt
        (an activity retry) asks the same thing with the same key."""
        attempt = self._attempt(command.command_id)
        if attempt is None:
            self._must_be_recoverable()
            if isinstance(command, CapturePayment) and command.amount != self.amount:
                raise InvalidCommand("amount_mismatch", f"order {self.id} is for {self.amount}, not {command.amount}")
            if any(a.status is AttemptStatus.SENT for a in self.attempts):
                # The earlier attempt's answer is unknown (it may have charged): it must be
                # settled with its own key before anyone tries again.
                raise InvalidCommand("attempt_in_flight", f"order {self.id} has a capture attempt awaiting its answer")
            if len(self.attempts) >= self.MAX_ATTEMPTS:
                raise InvalidCommand("no_attempts_left", f"order {self.id} had its {self.MAX_ATTEMPTS} attempts")
            attempt = CaptureAttempt(attempt_id=command.command_id, amount=self.amount, card_token=self.card_token)
            self.attempts.append(attempt)
            self.record(command, CaptureAttempted(order_id=self.id, attempt_id=attempt.attempt_id, amount=attempt.amount))
        return CaptureRequest(
            idempotency_key=attempt.attempt_id, amount=attempt.amount, card_token=attempt.card_token, reference=self.id
        )

    def record_capture_answer(self, command: CaptureCommand, answer: GatewayAnswer) -> None:
        """Decide what the gateway's answer means."""
        attempt = self._attempt(command.command_id)
        if attempt is None or attempt.status is not AttemptStatus.SENT:
            raise InvalidCommand("no_open_attempt", f"attempt {command.command_id} is not waiting for an answer")
        if isinstance(answer, Accepted):
            attempt.status, attempt.gateway_reference = AttemptStatus.CAPTURED, answer.reference
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
        else:
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

    def _attempt(self, attempt_id: str) -> CaptureAttempt | None:
        return next((a for a in self.attempts if a.attempt_id == attempt_id), None)

    # -- refunds through the gateway -----------------------------------------------
    @property
    def refunded(self) -> Money:
        """Settled at the gateway, plus what is on its way there."""
        return total(
            [r.amount for r in self.refunds.values() if r.status is not GatewayRefundStatus.DECLINED],
            self.amount.currency,
        )

    def begin_refund(self, command: SendRefundToGateway) -> RefundRequest:
        refund = self.refunds.get(command.refund_id)
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
            refund = GatewayRefund(refund_id=command.refund_id, amount=command.amount)
            self.refunds[refund.refund_id] = refund
            self.record(command, GatewayRefundRequested(order_id=self.id, refund_id=refund.refund_id, amount=refund.amount))
        elif refund.status is not GatewayRefundStatus.SENT:
            raise InvalidCommand("refund_already_answered", f"refund {command.refund_id} is already {refund.status.value}")
        return RefundRequest(
            idempotency_key=refund.refund_id,
            charge=self.capture.gateway_reference,
            amount=refund.amount,
            reference=refund.refund_id,
        )

    def record_refund_answer(self, command: SendRefundToGateway, answer: GatewayAnswer) -> None:
        refund = self.refunds.get(command.refund_id)
        if refund is None or refund.status is not GatewayRefundStatus.SENT:
            raise InvalidCommand("no_open_refund", f"refund {command.refund_id} is not waiting for an answer")
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
