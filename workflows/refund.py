"""RefundWorkflow — a customer, support or a policy asks for money back.

Read top to bottom:
  RequestRefund → billing → RefundApproved | RefundRejected (+ ShipmentInterceptRequested)
  RefundRejected → NotifyCustomer. Done.
  ShipmentInterceptRequested → InterceptShipment → shipping
  RefundApproved → ScreenRefund → fraud → RefundCleared | FraudReviewOpened
  FraudReviewOpened → wait for a person (Update `resolve_review`): 24 h reminder,
      72 h ExpireFraudReview → ReviewApproved | ReviewRejected
  ReviewRejected → compensation: CancelRefund → billing, NotifyCustomer. Done.
  SendRefundToGateway → payments → GatewayRefundSettled | GatewayRefundDeclined
  No usable answer (retries ran out, a timeout, a refused request, an operator's Cancel)
      → MarkRefundUnknown → payments → GatewayRefundOutcomeUnknown: wait (status
      `awaiting_reconciliation`) for reconciliation's signal `gateway_answer`, which carries
      payments' answer → GatewayRefundSettled | GatewayRefundDeclined | GatewayRefundNotFound.
      (Never asked the gateway → GatewayRefundNotSent.)
  Settled → CompleteRefund → billing → NotifyCustomer. Done.
  Declined, NotFound or NotSent (payments confirms no money went out) → compensation:
      FailRefund (citing that fact) → billing, NotifyCustomer, NotifyTeam(support). Done.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from domain.contracts import (
        CancelRefund,
        CompleteRefund,
        ExpireFraudReview,
        FailRefund,
        Event,
        FraudReviewOpened,
        GatewayRefundDeclined,
        GatewayRefundNotFound,
        GatewayRefundNotSent,
        GatewayRefundSettled,
        InterceptShipment,
        MarkRefundUnknown,
        Money,
        NotifyCustomer,
        NotifyTeam,
        Outcome,
        RefundApproved,
        RefundRejected,
        RequestRefund,
        ResolveFraudReview,
        ReviewRejected,
        ScreenRefund,
        SendRefundToGateway,
        ShipmentInterceptRequested,
    )
    from workflows.messages import RefundRequest, RefundStatus, ReviewResolution
    from workflows.process import INVALID_REQUEST, CUSTOMER_ID, REFUSALS, Process, Refused, Step, retry_until_done

# -- Process concerns, all in one place ------------------------------------------
DECIDE = Step(start_to_close=timedelta(seconds=30), retry=retry_until_done(), local=True)
NOTIFY = Step(start_to_close=timedelta(seconds=30), retry=retry_until_done(), local=True)
GATEWAY = Step(
    # A slow or failing gateway is retried with backoff for up to a day; a decline
    # is an answer (an event), not an error, so it is never retried.
    start_to_close=timedelta(seconds=30),  # the gateway client gives up after 10 s
    schedule_to_close=timedelta(hours=24),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=5),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(hours=1),
        non_retryable_error_types=REFUSALS,
    ),
)
# After the gateway step gives no usable answer, the flow waits for reconciliation for as long
# as it takes (no timer): money is freed or paid only on the gateway's word.
UNKNOWN_AWAITS_RECONCILIATION = "gateway-unknown-awaits-reconciliation"  # patch id
REVIEW_REMINDER_AFTER = timedelta(hours=24)
REVIEW_EXPIRES_AFTER = timedelta(hours=72)


@workflow.defn(failure_exception_types=INVALID_REQUEST)
class RefundWorkflow(Process):
    flow_name = "refund"

    def __init__(self) -> None:
        super().__init__()
        self.request: RefundRequest | None = None
        self.amount: Money | None = None
        self.reason = ""
        self.resolution: ReviewResolution | None = None
        self.review_closed = False  # expiry started or a decision taken
        self.reconciled: Outcome | None = None  # payments' answer, brought by reconciliation

    @workflow.run
    async def run(self, request: RefundRequest) -> RefundStatus:
        self.request = request
        self.set_status("requested")
        try:
            decided = await self.send(
                self.command(
                    RequestRefund,
                    "request",
                    actor=request.requested_by,
                    order_id=request.order_id,
                    refund_id=request.refund_id,
                    amount=request.amount,
                    reason=request.reason,
                ),
                DECIDE,
            )
        except Refused as refused:
            # Billing refused the command itself (not your order, bad amount ...).
            return await self.end("rejected", reason=str(refused))

        if rejected := decided.first(RefundRejected):
            workflow.upsert_search_attributes([CUSTOMER_ID.value_set(rejected.customer_id)])
            await self.notify_customer(rejected.customer_id, "refund_rejected", detail=rejected.detail)
            return await self.end("rejected", reason=rejected.reason_code)

        approved = decided.first(RefundApproved)
        assert approved is not None, "billing answers a refund request with an approval or a rejection"
        self.amount = approved.amount
        workflow.upsert_search_attributes([CUSTOMER_ID.value_set(approved.customer_id)])

        if intercept := decided.first(ShipmentInterceptRequested):
            await self.send(
                self.command(InterceptShipment, "intercept", order_id=intercept.order_id, refund_id=request.refund_id),
                DECIDE,
            )

        screened = await self.send(
            self.command(
                ScreenRefund,
                "screen",
                refund_id=request.refund_id,
                order_id=request.order_id,
                customer_id=approved.customer_id,
                amount=approved.amount,
                approved_at=approved.occurred_at,
            ),
            DECIDE,
        )
        if screened.has(FraudReviewOpened):
            reviewed = await self.wait_for_review(approved)
            if rejection := reviewed.first(ReviewRejected):
                return await self.cancel(approved, rejection.reason)

        return await self.pay_out(approved)

    # -- people: the fraud review ---------------------------------------------------
    async def wait_for_review(self, approved: RefundApproved) -> Outcome:
        self.set_status("under_review")
        self.note("waiting for a fraud analyst (reminder after 24 h, expiry after 72 h)")
        decided = lambda: self.resolution is not None  # noqa: E731
        if not await self.wait_for(decided, REVIEW_REMINDER_AFTER, "fraud review reminder"):
            await self.send(
                self.command(
                    NotifyTeam,
                    "remind-fraud-team",
                    team="fraud",
                    kind="fraud_review_reminder",
                    subject=approved.refund_id,
                    facts=self.facts(approved),
                ),
                NOTIFY,
            )
            if not await self.wait_for(decided, REVIEW_EXPIRES_AFTER - REVIEW_REMINDER_AFTER, "fraud review expiry"):
                self.review_closed = True
                return await self.send(
                    self.command(ExpireFraudReview, "expire-review", refund_id=approved.refund_id), DECIDE
                )
        self.review_closed = True
        assert self.resolution is not None
        return await self.send(
            self.command(
                ResolveFraudReview,
                "resolve-review",
                actor=self.resolution.reviewer,
                refund_id=approved.refund_id,
                decision=self.resolution.decision,
                note=self.resolution.note,
            ),
            DECIDE,
        )

    @workflow.update
    async def resolve_review(self, resolution: ReviewResolution) -> str:
        self.resolution = resolution
        await workflow.wait_condition(lambda: self.status != "under_review")
        return self.status

    @resolve_review.validator
    def check_resolution(self, resolution: ReviewResolution) -> None:
        if self.resolution is not None:
            raise ValueError("this review has already been decided")
        if self.status != "under_review" or self.review_closed:
            raise ValueError(f"refund is {self.status}; no review is waiting for a decision")
        if resolution.reviewer.role not in ResolveFraudReview.issued_by:
            allowed = ", ".join(sorted(r.value for r in ResolveFraudReview.issued_by))
            raise ValueError(f"a {resolution.reviewer.role.value} cannot decide a fraud review (needs {allowed})")

    # -- money out ---------------------------------------------------------------------
    async def pay_out(self, approved: RefundApproved) -> RefundStatus:
        self.set_status("sending")
        send = self.command(
            SendRefundToGateway,
            "send-to-gateway",
            order_id=approved.order_id,
            refund_id=approved.refund_id,
            amount=approved.amount,
        )
        try:
            sent = await self.send(send, GATEWAY)
        except Refused as refused:
            self.note(f"no answer from payments: {refused}")
            if not workflow.patched(UNKNOWN_AWAITS_RECONCILIATION):
                return await self.fail(approved, f"refused:{refused.kind}")
            sent = await self.when_unknown(approved, send, f"refused:{refused.kind}")
        except ActivityError as gave_up:
            self.note(f"no answer from payments: {gave_up.cause or gave_up}")
            if not workflow.patched(UNKNOWN_AWAITS_RECONCILIATION):
                return await self.fail(approved, "gateway_unavailable")
            reason = "cancelled_while_sending" if is_cancelled_exception(gave_up) else "gateway_unavailable"
            sent = await self.when_unknown(approved, send, reason)
        except asyncio.CancelledError:
            # An operator's Cancel while the request may be at the gateway: that cannot be
            # undone by stopping here, so it becomes unknown like any other missing answer.
            if not workflow.patched(UNKNOWN_AWAITS_RECONCILIATION):
                raise
            self.note("cancelled while sending: the gateway's answer is unknown")
            sent = await self.when_unknown(approved, send, "cancelled_while_sending")
        return await self.answered(approved, sent)

    async def when_unknown(self, approved: RefundApproved, send: SendRefundToGateway, reason: str) -> Outcome:
        """No usable answer: payments records what it knows, and the flow waits for
        reconciliation instead of compensating on a guess. The customer is told nothing yet."""
        try:
            marked = await self.send(
                self.command(
                    MarkRefundUnknown,
                    "mark-unknown",
                    order_id=approved.order_id,
                    refund_id=approved.refund_id,
                    reason=reason,
                ),
                DECIDE,
            )
        except Refused:
            # Payments already has the answer (the last attempt recorded it after the step
            # gave up): the same command again returns that answer from payments' inbox.
            return await self.send(send, GATEWAY)
        if marked.has(GatewayRefundNotSent):
            return marked
        self.set_status("awaiting_reconciliation")
        self.note("waiting for reconciliation to ask the gateway what became of the refund")
        await self.until_reconciled()
        assert self.reconciled is not None
        self.note(f"reconciliation: payments answered {', '.join(self.reconciled.event_names)}")
        return self.reconciled

    @workflow.signal
    def gateway_answer(self, outcome: Outcome) -> None:
        """Reconciliation brings payments' answer for a refund whose outcome was unknown."""
        self.reconciled = outcome

    async def until_reconciled(self) -> None:
        """Wait for reconciliation's answer. An operator's Cancel meanwhile changes nothing:
        only the gateway's answer may end a money question (Terminate stops the flow, and
        reconciliation then records the discrepancy for support)."""
        while self.reconciled is None:
            try:
                await workflow.wait_condition(lambda: self.reconciled is not None)
            except asyncio.CancelledError:
                self.note("Cancel while waiting for reconciliation: the gateway's answer still decides")

    async def answered(self, approved: RefundApproved, sent: Outcome) -> RefundStatus:
        confirmation: Event | None
        for confirmation in (sent.first(GatewayRefundNotFound), sent.first(GatewayRefundNotSent)):
            if confirmation is not None:
                return await self.fail(approved, f"not_paid:{confirmation.name()}", confirmation)
        if declined := sent.first(GatewayRefundDeclined):
            return await self.fail(approved, f"declined:{declined.decline_code}", declined)
        settled = sent.first(GatewayRefundSettled)
        assert settled is not None, "payments answers with a settlement, a decline or a confirmed not-paid"

        await self.send(
            self.command(
                CompleteRefund,
                "complete",
                order_id=approved.order_id,
                refund_id=approved.refund_id,
                gateway_reference=settled.gateway_reference,
            ),
            DECIDE,
        )
        await self.notify_customer(approved.customer_id, "refund_completed", **self.facts(approved))
        return await self.end("completed")

    # -- compensation --------------------------------------------------------------------
    async def cancel(self, approved: RefundApproved, reason: str) -> RefundStatus:
        await self.send(
            self.command(
                CancelRefund, "cancel", order_id=approved.order_id, refund_id=approved.refund_id, reason=reason
            ),
            DECIDE,
        )
        await self.notify_customer(approved.customer_id, "refund_cancelled", **self.facts(approved))
        return await self.end("cancelled", reason=reason)

    async def fail(self, approved: RefundApproved, reason: str, confirmation: Event | None = None) -> RefundStatus:
        """Compensation on payments' confirmation that no money went out (billing refuses
        a FailRefund without one; histories recorded before the unknown state replay
        through here without it)."""
        await self.send(
            self.command(
                FailRefund,
                "fail",
                order_id=approved.order_id,
                refund_id=approved.refund_id,
                reason=reason,
                confirmed_by=confirmation.name() if confirmation else "",
                evidence=confirmation.event_id if confirmation else "",
            ),
            DECIDE,
        )
        await self.notify_customer(approved.customer_id, "refund_failed", **self.facts(approved))
        await self.send(
            self.command(
                NotifyTeam,
                "tell-support",
                team="support",
                kind="refund_failed_support",
                subject=approved.refund_id,
                facts={**self.facts(approved), "reason": reason},
            ),
            NOTIFY,
        )
        return await self.end("failed", reason=reason)

    # -- small helpers -------------------------------------------------------------------
    async def notify_customer(self, customer_id: str, kind: str, **facts: str) -> None:
        assert self.request is not None
        await self.send(
            self.command(
                NotifyCustomer,
                f"notify-{kind}",
                customer_id=customer_id,
                kind=kind,
                subject=self.request.refund_id,
                facts={"refund_id": self.request.refund_id, "order_id": self.request.order_id, **facts},
            ),
            NOTIFY,
        )

    @staticmethod
    def facts(approved: RefundApproved) -> dict[str, str]:
        return {"refund_id": approved.refund_id, "order_id": approved.order_id, "amount": str(approved.amount)}

    async def end(self, status: str, reason: str = "") -> RefundStatus:
        self.reason = reason
        self.set_status(status)
        await self.finish()
        return self.current()

    @workflow.query(name="status")
    def status_view(self) -> RefundStatus:
        return self.current()

    def current(self) -> RefundStatus:
        assert self.request is not None
        return RefundStatus(
            status=self.status,
            trail=self.trail,
            refund_id=self.request.refund_id,
            order_id=self.request.order_id,
            amount=self.amount or self.request.amount,
            reason=self.reason,
        )
