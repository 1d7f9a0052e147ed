"""RefundWorkflow — a customer, support or a policy asks for money back.

Read top to bottom:
  RequestRefund → billing → RefundApproved | RefundRejected (+ ShipmentInterceptRequested)
  RefundRejected → NotifyCustomer. Done.
  ShipmentInterceptRequested → InterceptShipment → shipping
  RefundApproved → ScreenRefund → fraud → RefundCleared | FraudReviewOpened
  FraudReviewOpened → wait for a person (Update `resolve_review`): 24 h reminder,
      72 h ExpireFraudReview → ReviewApproved | ReviewRejected
  ReviewRejected → compensation: CancelRefund → billing, WithdrawRefund → fraud, NotifyCustomer. Done.
  SendRefundToGateway → payments → GatewayRefundSettled | GatewayRefundDeclined
  Settled → CompleteRefund → billing → NotifyCustomer. Done.
  Declined or out of retries → compensation: FailRefund → billing, WithdrawRefund → fraud,
      NotifyCustomer, NotifyTeam(support). Done.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from domain.contracts import (
        CancelRefund,
        CompleteRefund,
        ExpireFraudReview,
        FailRefund,
        FraudReviewOpened,
        GatewayRefundDeclined,
        GatewayRefundSettled,
        InterceptShipment,
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
        WithdrawRefund,
    )
    from workflows.messages import RefundRequest, RefundStatus, ReviewResolution
    from workflows.process import INVALID_REQUEST, CUSTOMER_ID, REFUSALS, Process, Refused, Step, retry_until_done
    from workflows.process import refuse_role

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
REVIEW_REMINDER_AFTER = timedelta(hours=24)
REVIEW_EXPIRES_AFTER = timedelta(hours=72)

# Flows recorded before fraud heard of refunds that are not paid replay without telling it.
FRAUD_HEARS_UNPAID = "fraud-hears-unpaid-refunds"


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
        refuse_role(resolution.reviewer, ResolveFraudReview, "decide a fraud review")

    # -- money out ---------------------------------------------------------------------
    async def pay_out(self, approved: RefundApproved) -> RefundStatus:
        self.set_status("sending")
        try:
            sent = await self.send(
                self.command(
                    SendRefundToGateway,
                    "send-to-gateway",
                    order_id=approved.order_id,
                    refund_id=approved.refund_id,
                    amount=approved.amount,
                ),
                GATEWAY,
            )
        except Refused as refused:
            self.note(f"no answer from payments: {refused}")
            return await self.fail(approved, f"refused:{refused.kind}")
        except ActivityError as gave_up:
            self.note(f"no answer from payments: {gave_up.cause or gave_up}")
            return await self.fail(approved, "gateway_unavailable")
        if declined := sent.first(GatewayRefundDeclined):
            return await self.fail(approved, f"declined:{declined.decline_code}")
        settled = sent.first(GatewayRefundSettled)
        assert settled is not None, "payments answers with a settlement or a decline"

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
        await self.withdraw_from_fraud(approved, reason)
        await self.notify_customer(approved.customer_id, "refund_cancelled", **self.facts(approved))
        return await self.end("cancelled", reason=reason)

    async def fail(self, approved: RefundApproved, reason: str) -> RefundStatus:
        await self.send(
            self.command(FailRefund, "fail", order_id=approved.order_id, refund_id=approved.refund_id, reason=reason),
            DECIDE,
        )
        await self.withdraw_from_fraud(approved, reason)
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

    async def withdraw_from_fraud(self, approved: RefundApproved, reason: str) -> None:
        """Fraud's "third refund within seven days" counts only refunds that are paid:
        tell it this one is not (fraud decides what that changes)."""
        if not workflow.patched(FRAUD_HEARS_UNPAID):
            return
        try:
            await self.send(
                self.command(
                    WithdrawRefund, "withdraw-from-fraud", refund_id=approved.refund_id, reason=reason or "not paid"
                ),
                DECIDE,
            )
        except Refused as refused:  # fraud's history is not worth stopping a compensation for
            self.note(f"fraud was not told: {refused.message}")

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
