"""Payments' activities. Gateway calls happen between two short transactions:
payments decides what to ask (saved), the gateway is asked (no transaction
open), payments decides what the answer means (saved with the processed record)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.handling import decide, prepare
from activities.ports import PaymentGateway
from domain.payments.answers import FoundByReconciliation, GatewayQuestion
from domain.payments.gateway import GatewayRefusedRequest, GatewayUnavailable
from domain.contracts import Outcome
from domain.shared.messages import Command
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
from domain.payments.payment import Payment


def attempt_started() -> datetime | None:
    """When this activity attempt started, on Temporal's clock: the moment a request leaves for
    the gateway. Payments records it as a fact (the gateway keeps a request's key for a day from
    then); no business decision takes its time from it. Outside an activity (a script, a test
    calling the handler directly): None, and payments takes the command's time."""
    return activity.info().started_time if activity.in_activity() else None


class PaymentsActivities:
    def __init__(
        self, uow_factory: Callable[[], Any], gateway: PaymentGateway, asked_at: Callable[[], datetime | None] = attempt_started
    ) -> None:
        self.uow = uow_factory
        self.gateway = gateway
        self.asked_at = asked_at

    @activity.defn(name=CapturePayment.activity_name())
    def capture_payment(self, command: CapturePayment) -> Outcome:
        return self._capture(command, lambda uow: self._payment_for(uow, command))

    @activity.defn(name=RetryPaymentCapture.activity_name())
    def retry_payment_capture(self, command: RetryPaymentCapture) -> Outcome:
        return self._capture(command, lambda uow: uow.payments.get(command.order_id))

    @activity.defn(name=UpdatePaymentMethod.activity_name())
    def update_payment_method(self, command: UpdatePaymentMethod) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.payments.get(command.order_id).update_payment_method(command))

    def _capture(self, command: CapturePayment | RetryPaymentCapture, load: Callable[[Any], Payment]) -> Outcome:
        account = self._account()
        return self._around_the_gateway(
            command,
            lambda uow: load(uow).begin_capture(command, self.asked_at(), account),
            self.gateway.capture,
            lambda payment, answer: payment.record_capture_answer(command, answer),
        )

    @activity.defn(name=SendRefundToGateway.activity_name())
    def send_refund_to_gateway(self, command: SendRefundToGateway) -> Outcome:
        account = self._account()
        return self._around_the_gateway(
            command,
            lambda uow: uow.payments.get(command.order_id).begin_refund(command, self.asked_at(), account),
            self.gateway.refund,
            lambda payment, answer: payment.record_refund_answer(command, answer),
        )

    # -- unknown answers, and reconciliation's look-ups ------------------------------------
    @activity.defn(name=MarkRefundUnknown.activity_name())
    def mark_refund_unknown(self, command: MarkRefundUnknown) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.payments.get(command.order_id).mark_refund_unknown(command))

    @activity.defn(name=MarkCaptureUnknown.activity_name())
    def mark_capture_unknown(self, command: MarkCaptureUnknown) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.payments.get(command.order_id).mark_capture_unknown(command))

    @activity.defn(name=ReconcileGatewayRefund.activity_name())
    def reconcile_gateway_refund(self, command: ReconcileGatewayRefund) -> Outcome:
        """Payments says what may be asked, the gateway is looked up by the refund id (no
        transaction open; a look-up never moves money), payments decides what it means."""
        return self._around_the_gateway(
            command,
            lambda uow: uow.payments.get(command.order_id).refund_lookup(command),
            self.gateway.find_refund,
            lambda payment, answer: payment.reconcile_refund(command, answer),
        )

    @activity.defn(name=ReconcileCapture.activity_name())
    def reconcile_capture(self, command: ReconcileCapture) -> Outcome:
        return self._around_the_gateway(
            command,
            lambda uow: uow.payments.get(command.order_id).capture_lookup(command),
            self.gateway.find_capture,
            lambda payment, answer: payment.reconcile_capture(command, answer),
        )

    @activity.defn(name=GatewayQuestion.activity_name)
    def recorded_answer(self, question: GatewayQuestion) -> Outcome | None:
        """What payments' inbox holds for the command reconciliation named, if those facts
        answer the question (domain/payments/answers.py); None for anything else — a command
        payments never handled, or one about another refund or attempt. Reads, decides nothing."""
        recorded = self._recorded(question.command_id)
        return recorded if recorded is not None and question.is_answered_by(recorded.events) else None

    def _recorded(self, command_id: str) -> Outcome | None:
        """The outcome payments recorded for this command, if it handled it."""
        with self.uow() as uow:
            stored = uow.processed_result(command_id)
        return Outcome.model_validate(stored) if stored else None

    def _around_the_gateway(
        self,
        command: Command,
        what_to_ask: Callable[[Any], Any],
        ask: Callable[[Any], Any],
        what_it_means: Callable[[Payment, Any], None],
    ) -> Outcome:
        """Payments decides what to ask (saved), the gateway is asked with no transaction
        open, payments decides what the answer means (saved with the processed record).
        A command handled before returns its stored outcome without asking again."""
        request = prepare(self.uow, command, what_to_ask)
        if isinstance(request, Outcome):
            return request
        if isinstance(request, FoundByReconciliation):
            # A resumed flow asks again for what reconciliation answered while it was gone: the
            # answer is that command's record (written with `answered_by`), not a second request.
            found = self._recorded(request.command_id)
            assert found is not None, f"{request.command_id} recorded no outcome"
            return found
        answer = self._ask(lambda: ask(request))
        return decide(self.uow, command, lambda uow: what_it_means(uow.payments.get(command.order_id), answer))

    @staticmethod
    def _payment_for(uow: Any, command: CapturePayment) -> Payment:
        return uow.payments.find(command.order_id) or uow.payments.add(Payment.for_order(command))

    def _account(self) -> str:
        """Whose account this worker's key speaks for, read before the transaction (the first
        time it asks the gateway; the worker reads it at start-up). Not known: nothing is
        decided or sent, and Temporal asks again — a worker whose key cannot say refuses to start."""
        try:
            return self.gateway.account()
        except (GatewayUnavailable, GatewayRefusedRequest) as unknown:
            raise ApplicationError(f"cannot tell which gateway account this key speaks for: {unknown}",
                                   type="GatewayAccountUnknown") from unknown

    @staticmethod
    def _ask(call):
        try:
            return call()
        except GatewayUnavailable as trouble:
            # Retryable: Temporal asks again later with the same idempotency key.
            raise ApplicationError(f"gateway unavailable: {trouble}", type="GatewayUnavailable") from trouble
        except GatewayRefusedRequest as wrong:
            raise ApplicationError(f"gateway refused the request: {wrong}", type="GatewayRefusedRequest", non_retryable=True) from wrong
