"""RefundWorkflow — a customer, support or a policy asks for money back.

Read top to bottom:
  RequestRefund (issued at the workflow's start) → billing → RefundApproved | RefundRejected
      (+ ShipmentInterceptRequested when all of a parcel in transit is being refunded)
  RefundRejected → NotifyCustomer. Done.
  RefundApproved → ScreenRefund → fraud → RefundCleared | FraudReviewOpened
      (money owed by a cancellation is always cleared)
  FraudReviewOpened → wait for a person (Update `resolve_review`): 24 h reminder
      (NotifyTeam(fraud), going out beside the wait: a mailbox outage holds nothing up),
      72 h after opening ExpireFraudReview → ReviewApproved | ReviewRejected; a decision the owner
      refuses is answered as refused and the review keeps waiting
  ReviewRejected → compensation: CancelRefund → billing, WithdrawRefund → fraud, NotifyCustomer
      (+ RefundOwed → NotifyTeam(support)). Done.
  Cleared or approved, with ShipmentInterceptRequested → InterceptShipment → shipping
      → ShipmentIntercepted | ShipmentInterceptFailed → RecordInterceptOutcome → billing
      → ParcelReturned | ParcelStillInTransit (+ ReturnedParcelDelivered, RefundOwed →
      NotifyTeam(support), going out beside the payout: a mailbox outage holds up no money)
  SendRefundToGateway → payments → GatewayRefundSettled | GatewayRefundDeclined
  No usable answer (retries ran out, a timeout, a refused request — payments sends nothing
      again under its key 23 h after it first left —, an operator's Cancel)
      → MarkRefundUnknown → payments → GatewayRefundOutcomeUnknown: wait (status
      `awaiting_reconciliation`) for reconciliation's signal `gateway_answer`, which names the
      payments command that found the answer; RecordedAnswer → payments gives what that command
      recorded, taken only if it answers this refund → GatewayRefundSettled
      | GatewayRefundDeclined | GatewayRefundNotFound (a signal that names no such answer,
      forged or mistaken, is noted and the flow waits on).
      (Never asked the gateway → GatewayRefundNotSent.)
  Settled → CompleteRefund → billing, CreditInvoice → invoicing (a credit note against the
      order's invoice; refused → NotifyTeam(support), beside the flow) → NotifyCustomer. Done.
  Declined, NotFound or NotSent (payments confirms no money went out) → compensation:
      FailRefund (citing that fact) → billing, WithdrawRefund → fraud, NotifyCustomer,
      NotifyTeam(support) (+ RefundOwed → NotifyTeam(support)). Done.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from domain.contracts import (
        INVOICE_NOT_CREDITED_NOTICE,
        CancelRefund,
        CompleteRefund,
        CreditInvoice,
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
        RefundCompleted,
        RefundRejected,
        RequestRefund,
        ResolveFraudReview,
        ReviewRejected,
        ScreenRefund,
        SendRefundToGateway,
        ShipmentInterceptRequested,
        RefundOwed,
        WithdrawRefund,
    )
    from workflows.intercept import StopsTheParcel
    from workflows.messages import RefundRequest, RefundStatus, ReviewResolution
    from workflows.process import INVALID_REQUEST, CUSTOMER_ID, REFUSALS, Process, Refused, Step, retry_until_done
    from workflows.process import AwaitsReconciliation, REMINDER_BESIDE_REVIEW, addressed_here, from_outside, refuse_outsider
    from workflows.process import CREDITS_THE_INVOICE, REMINDER_FAILURE_IS_NOTED, TELLS_SUPPORT_BESIDE_THE_PAYOUT
    from workflows.process import TELLS_SUPPORT_WHAT_A_RETURN_OWES

# -- Process concerns, all in one place ------------------------------------------
DECIDE = Step(start_to_close=timedelta(seconds=30), retry=retry_until_done(), local=True)
NOTIFY = Step(start_to_close=timedelta(seconds=30), retry=retry_until_done(), local=True)
# The fraud team's reminder, beside the review: a day of tries at most, so that a mailbox down
# for longer holds a finished refund open no longer than that (it is noted, not retried on).
REMIND = Step(
    start_to_close=timedelta(seconds=30), retry=retry_until_done(), schedule_to_close=timedelta(hours=24), local=True
)
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

# Patch ids: flows started before these changes replay along their old path.
INTERCEPT_AFTER_FRAUD = "intercept-after-fraud"  # the parcel is stopped only once fraud let the money go
# Flows recorded before fraud heard of refunds that are not paid replay without telling it.
FRAUD_HEARS_UNPAID = "fraud-hears-unpaid-refunds"


@workflow.defn(failure_exception_types=INVALID_REQUEST)
class RefundWorkflow(StopsTheParcel, AwaitsReconciliation, Process):
    flow_name = "refund"

    def __init__(self) -> None:
        super().__init__()
        self.request: RefundRequest | None = None
        self.amount: Money | None = None
        self.reason = ""
        self.resolution: ReviewResolution | None = None
        self.intercepts_after_fraud = False
        self.fraud_hears_unpaid = False
        self.unknown_awaits_reconciliation = False
        self.resolution_at: datetime | None = None  # when the Update carrying it was accepted
        self.review_refusal: tuple[ReviewResolution, str] | None = None  # fraud refused it: the Update's answer
        self.refused_decisions = 0
        self.review_closed = False  # expiry started or a decision taken
        self.reminding: asyncio.Task[Outcome] | None = None  # the review's reminder, going out beside it

    @workflow.run
    async def run(self, request: RefundRequest) -> RefundStatus:
        try:
            await self.refund(request)
        finally:
            try:
                await self.reminder_gone_out()
            finally:
                await self.asides_gone_out()
        return self.current()  # with what the reminder's end added to the trail

    async def refund(self, request: RefundRequest) -> RefundStatus:
        from_outside(request.requested_by)
        self.request = request
        # Which changes this flow runs with, asked once before the first command.
        self.begin()
        self.runs_as(f"refund-{request.refund_id}")
        self.started_by_its_payment(request)
        self.intercepts_after_fraud = self.runs_with(INTERCEPT_AFTER_FRAUD)
        self.fraud_hears_unpaid = self.runs_with(FRAUD_HEARS_UNPAID)
        self.unknown_awaits_reconciliation = self.runs_with(UNKNOWN_AWAITS_RECONCILIATION)
        self.set_status("requested")
        try:
            decided = await self.send(
                self.command(
                    RequestRefund,
                    "request",
                    actor=request.requested_by,
                    credential=request.token,
                    order_id=request.order_id,
                    refund_id=request.refund_id,
                    amount=request.amount,
                    reason=request.reason,
                    issued_at=self.started_at(),
                ),
                DECIDE,
            )
        except Refused as refused:
            # Billing refused the command itself (not your order, bad amount ...).
            return await self.end("rejected", reason=str(refused))

        if rejected := decided.first(RefundRejected):
            self.show_in_search(CUSTOMER_ID, rejected.customer_id)
            await self.notify_customer(rejected.customer_id, "refund_rejected", detail=rejected.detail)
            return await self.end("rejected", reason=rejected.reason_code)

        approved = decided.first(RefundApproved)
        assert approved is not None, "billing answers a refund request with an approval or a rejection"
        self.amount = approved.amount
        self.show_in_search(CUSTOMER_ID, approved.customer_id)

        intercept = decided.first(ShipmentInterceptRequested)
        # Old flows stopped the parcel before fraud had looked; new ones only once the
        # money is sure to go back.
        after_fraud = intercept is not None and self.intercepts_after_fraud
        if intercept is not None and not after_fraud:
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
                owed=approved.owed,
                requested_by=approved.requested_by,
            ),
            DECIDE,
        )
        if screened.has(FraudReviewOpened):
            reviewed = await self.wait_for_review(approved)
            if rejection := reviewed.first(ReviewRejected):
                return await self.cancel(approved, rejection.reason)

        if intercept is not None and after_fraud:
            # Support hears of what the stop found beside the payout: the money goes first.
            beside = self.folded_in(TELLS_SUPPORT_BESIDE_THE_PAYOUT)
            stopped = await self.intercept(intercept, DECIDE, tell_beside=beside)
            if self.folded_in(TELLS_SUPPORT_WHAT_A_RETURN_OWES):  # a run begun before has none
                # The goods are back, and another refund of the order said no meanwhile: what
                # no refund takes is owed, and support decides how it goes back.
                await self.tell_support_if_owed(
                    stopped, approved, "the parcel came back", "tell-support-owed-on-return", beside=beside)
        return await self.pay_out(approved)

    # -- people: the fraud review ---------------------------------------------------
    async def wait_for_review(self, approved: RefundApproved) -> Outcome:
        self.set_status("under_review")
        self.note("waiting for a fraud analyst (reminder after 24 h, expiry after 72 h)")
        decided = lambda: self.resolution is not None  # noqa: E731
        remind_at, expires_at = workflow.now() + REVIEW_REMINDER_AFTER, workflow.now() + REVIEW_EXPIRES_AFTER
        reminded = False
        while True:  # once, unless fraud refuses a decision: then wait for the next one
            expiry_wait = expires_at - workflow.now()
            if not reminded and not await self.wait_for(decided, remind_at - workflow.now(), "fraud review reminder"):
                reminded = True
                beside = self.takes(REMINDER_BESIDE_REVIEW)
                remind = self.send(
                    self.command(
                        NotifyTeam,
                        "remind-fraud-team",
                        team="fraud",
                        kind="fraud_review_reminder",
                        subject=approved.refund_id,
                        facts=self.facts(approved),
                    ),
                    REMIND if beside else NOTIFY,
                    causes_next=not beside,  # beside the review, it causes none of the review's steps
                )
                if beside:
                    # The reminder goes out beside the review: a mailbox outage holds up neither a
                    # reviewer's decision nor the expiry. The flow ends only once it has gone out.
                    self.reminding = asyncio.create_task(remind)
                else:
                    await remind
                # The expiry stays 72 h after the review opened, however late the reminder went
                # out (a mailbox or worker outage); a timer of a second at least, as before.
                expiry_wait = max(expires_at - workflow.now(), timedelta(seconds=1))
            if not decided() and not await self.wait_for(decided, expiry_wait, "fraud review expiry"):
                self.review_closed = True
                return await self.send(
                    self.command(ExpireFraudReview, "expire-review", refund_id=approved.refund_id), DECIDE
                )
            self.review_closed = True
            resolution = self.resolution
            assert resolution is not None
            try:
                return await self.send(
                    self.command(
                        ResolveFraudReview,
                        "resolve-review" if not self.refused_decisions else f"resolve-review-{self.refused_decisions}",
                        actor=resolution.reviewer,
                        credential=resolution.token,
                        issued_at=self.resolution_at,
                        refund_id=approved.refund_id,
                        decision=resolution.decision,
                        note=resolution.note,
                    ),
                    DECIDE,
                )
            except Refused as refused:
                # Fraud refused this decision (e.g. the reviewer asked for the refund):
                # the person is told, the flow goes on, and the review waits for another.
                self.refused_decisions += 1
                self.review_refusal = (resolution, f"refused: {refused.message}")
                self.note(f"decision refused by fraud: {refused.message}")
                self.resolution, self.resolution_at, self.review_closed = None, None, False

    @workflow.update
    async def resolve_review(self, resolution: ReviewResolution) -> str:
        """Answers with the refund's status once the decision is taken, or with fraud's refusal."""
        self.resolution, self.resolution_at = resolution, workflow.now()
        refused = lambda: self.review_refusal is not None and self.review_refusal[0] is resolution  # noqa: E731
        await workflow.wait_condition(lambda: refused() or self.status != "under_review")
        if refused():
            assert self.review_refusal is not None
            raise ApplicationError(self.review_refusal[1], type="DecisionRefused", non_retryable=True)
        return self.status

    @resolve_review.validator
    def check_resolution(self, resolution: ReviewResolution) -> None:
        addressed_here(resolution)
        if self.resolution is not None:
            raise ValueError("this review has already been decided")
        if self.status != "under_review" or self.review_closed:
            raise ValueError(f"refund is {self.status}; no review is waiting for a decision")
        refuse_outsider(resolution.reviewer, resolution.token, ResolveFraudReview, "decide a fraud review")

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
            if not self.unknown_awaits_reconciliation:
                return await self.fail(approved, f"refused:{refused.kind}")
            sent = await self.when_unknown(approved, send, f"refused:{refused.kind}")
        except ActivityError as gave_up:
            self.note(f"no answer from payments: {gave_up.cause or gave_up}")
            if not self.unknown_awaits_reconciliation:
                return await self.fail(approved, "gateway_unavailable")
            reason = "cancelled_while_sending" if is_cancelled_exception(gave_up) else "gateway_unavailable"
            sent = await self.when_unknown(approved, send, reason)
        except asyncio.CancelledError:
            # An operator's Cancel while the request may be at the gateway: that cannot be
            # undone by stopping here, so it becomes unknown like any other missing answer.
            if not self.unknown_awaits_reconciliation:
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
        return await self.reconciliation_answer("refund", approved.order_id, approved.refund_id, DECIDE)

    async def answered(self, approved: RefundApproved, sent: Outcome) -> RefundStatus:
        confirmation: Event | None
        for confirmation in (sent.first(GatewayRefundNotFound), sent.first(GatewayRefundNotSent)):
            if confirmation is not None:
                return await self.fail(approved, f"not_paid:{confirmation.name()}", confirmation)
        if declined := sent.first(GatewayRefundDeclined):
            return await self.fail(approved, f"declined:{declined.decline_code}", declined)
        settled = sent.first(GatewayRefundSettled)
        assert settled is not None, "payments answers with a settlement, a decline or a confirmed not-paid"

        completed = await self.send(
            self.command(
                CompleteRefund,
                "complete",
                order_id=approved.order_id,
                refund_id=approved.refund_id,
                gateway_reference=settled.gateway_reference,
            ),
            DECIDE,
        )
        paid = completed.first(RefundCompleted)
        if paid is not None and self.folded_in(CREDITS_THE_INVOICE):  # a run begun before issues no credit note
            await self.credit_the_invoice(approved, paid.amount)
        await self.notify_customer(approved.customer_id, "refund_completed", **self.facts(approved))
        return await self.end("completed")

    async def credit_the_invoice(self, approved: RefundApproved, paid: Money) -> None:
        """The money went back (billing's record of what was paid): invoicing issues a credit note
        against the order's invoice. A refusal (an order left without an invoice, a credit beyond
        it) is noted and told to support, who issue the note by hand; the refund, paid, stands."""
        try:
            await self.send(
                self.command(
                    CreditInvoice, "credit-invoice", order_id=approved.order_id, refund_id=approved.refund_id,
                    amount=paid,
                ),
                DECIDE,
                causes_next=False,  # the customer's notice is the refund's, not the note's
            )
        except Refused as refused:
            self.note(f"no credit note: {refused.message}")
            self.send_beside(self.command(
                NotifyTeam, "tell-support-not-credited", team="support", kind=INVOICE_NOT_CREDITED_NOTICE,
                subject=approved.refund_id, facts={**self.facts(approved), "reason": refused.message},
            ), NOTIFY, "support's notice of the missing credit note")

    # -- compensation --------------------------------------------------------------------
    async def cancel(self, approved: RefundApproved, reason: str) -> RefundStatus:
        cancelled = await self.send(
            self.command(
                CancelRefund, "cancel", order_id=approved.order_id, refund_id=approved.refund_id, reason=reason
            ),
            DECIDE,
        )
        await self.withdraw_from_fraud(approved, reason)
        await self.notify_customer(approved.customer_id, "refund_cancelled", **self.facts(approved))
        await self.tell_support_if_owed(cancelled, approved, reason)
        return await self.end("cancelled", reason=reason)

    async def tell_support_if_owed(
        self, settled: Outcome, approved: RefundApproved, reason: str, step: str = "tell-support-owed",
        beside: bool = False,
    ) -> None:
        """Billing says money is owed back (a cancelled order's, a returned parcel's) that no refund
        takes: support decides how it goes back. `beside`: the notice goes out beside the flow."""
        if owed := settled.first(RefundOwed):
            notice = self.command(
                NotifyTeam,
                step,
                team="support",
                kind="refund_owed_support",
                subject=approved.refund_id,
                facts={**self.facts(approved), "owed": str(owed.amount), "reason": reason},
            )
            if beside:
                self.send_beside(notice, NOTIFY, "support's notice of what is owed")
            else:
                await self.send(notice, NOTIFY)

    async def fail(self, approved: RefundApproved, reason: str, confirmation: Event | None = None) -> RefundStatus:
        """Compensation on payments' confirmation that no money went out (billing refuses
        a FailRefund without one; histories recorded before the unknown state replay
        through here without it)."""
        failed = await self.send(
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
        await self.withdraw_from_fraud(approved, reason)
        await self.notify_customer(approved.customer_id, "refund_failed", **self.facts(approved))
        await self.tell_support_if_owed(failed, approved, reason)
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
        if not self.fraud_hears_unpaid:
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

    async def reminder_gone_out(self) -> None:
        """A review's reminder still on its way goes out (or runs out of its day of tries) before
        the flow ends, however it ends. An operator's Cancel that comes meanwhile does not stop
        it: the refund's outcome is decided by then and stands. One that cannot go out is noted."""
        if self.reminding is None:
            return
        while not self.reminding.done():
            try:
                await asyncio.shield(self.reminding)
            except asyncio.CancelledError:
                if self.reminding.cancelled():
                    break
                self.note("cancel asked while the fraud team's reminder was still going out: it goes out first")
            except (Refused, ActivityError):
                if not self.folded_in(REMINDER_FAILURE_IS_NOTED):  # a run begun before fails here
                    raise
                break  # noted below
        try:
            self.reminding.result()
        except (Refused, ActivityError, asyncio.CancelledError) as failed:
            self.note(f"the fraud team's reminder did not go out: {failed or type(failed).__name__}")

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
