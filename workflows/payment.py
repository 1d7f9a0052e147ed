"""PaymentWorkflow — an order's money is captured, invoiced, recovered when a
card fails, and given back when the order is cancelled.

Read top to bottom:
  PlaceOrder → billing → OrderPlaced (a cancellation accepted meanwhile goes first: CancelOrder
      → billing, nothing is charged)
  CapturePayment → payments → PaymentCaptured | PaymentDeclined (+ PaymentAbandoned)
  No usable answer for an attempt (a day of retries ran out, a refused request; payments
      sends nothing again under its key 23 h after it first left)
      → MarkCaptureUnknown → payments → CaptureOutcomeUnknown: wait (status
      `awaiting_reconciliation`) for reconciliation's signal `gateway_answer`, which names the
      payments command that found the answer; RecordedAnswer → payments gives what that command
      recorded, taken only if it answers this attempt → PaymentCaptured | PaymentDeclined
      (+ PaymentAbandoned); anything else is noted and the flow waits on. A capture the
      gateway confirms it never made is a declined attempt (`not_charged`), and recovery goes
      on as after any decline. An attempt that never reached payments (the step could not even
      begin it for a day) is sent again under the same id — unless a cancellation was accepted
      meanwhile: that goes first, and nothing is charged
  PaymentCaptured → MarkOrderPaid → billing, CreateInvoice → invoicing,
      NotifyCustomer (payment received, invoice number: going out beside the process, which
      rests as paid at once; it ends only once the receipt has gone out)
  PaymentDeclined → NotifyCustomer (the days counted from the decline), wait 1, 3, 7 days — or less when the Update
      `update_payment_method` brings a new card (UpdatePaymentMethod → payments) —
      then RetryPaymentCapture → payments, which decides whether another attempt
      is allowed (at most 4; hard declines stop at once); a cancellation accepted
      meanwhile, even while the new card was being recorded, goes first: nothing is charged
  PaymentAbandoned → compensation: CancelOrder (system, payment_failed) → billing,
      NotifyCustomer. Done.
  Update `cancel_order` (until delivery, however long that takes) → CancelOrder → billing
      → OrderCancelled (+ RefundOwed when it had been paid → RequestRefund by system, as a
      child RefundWorkflow: fraud clears owed money, and whatever stays owed reaches
      support; a child terminated, cancelled on its own or failed leaves its money reserved
      for reconciliation and support's `resume-flow`). Done.
  Signal `order_delivered` (from ConfirmDeliveryWorkflow) or `order_returned` (from a
      RefundWorkflow or ShipOrderWorkflow whose intercept brought the parcel back)
      → RecordedFulfilment → billing
      (a signal names no sender: billing's record decides) → delivered or returned: nothing
      left to cancel. Done (a cancellation accepted while billing's record was read is
      answered as refused). Billing records neither: noted, and the process stays open —
      unless the process was told again while it read, which may be the news that read
      missed: then billing's record is read again.
  Every Update is refused by its validator or answered, on every path; an owner's refusal
  (UpdatePaymentMethod, CancelOrder) is the Update's answer and the flow goes on. Commands
  caused by the start request carry the workflow's start time, those caused by an Update
  the time it was accepted.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from domain.contracts import (
        Actor,
        CancelOrder,
        CapturePayment,
        CreateInvoice,
        InvoiceCreated,
        MarkCaptureUnknown,
        MarkOrderPaid,
        NotifyCustomer,
        OrderLine,
        Outcome,
        PaymentAbandoned,
        PaymentCaptured,
        PaymentDeclined,
        PlaceOrder,
        RecordedFulfilment,
        RefundOwed,
        RetryPaymentCapture,
        UpdatePaymentMethod,
    )
    from workflows.messages import CancellationRequest, NewPaymentMethod, OrderRequest, PaymentStatus, RefundRequest
    from workflows.process import INVALID_REQUEST, AwaitsReconciliation, REFUSALS, Process, Refused, Step, addressed_here, from_outside, refuse_outsider, retry_until_done
    from workflows.process import CANCELLED_BEFORE_FIRST_CAPTURE, CANCELLED_BEFORE_RETRY, READ_AGAIN_WHEN_TOLD_AGAIN
    from workflows.process import CANCELLED_BEFORE_SENDING_AGAIN, RECEIPT_BESIDE_THE_PROCESS
    from workflows.process import RECOVERY_TIMED_FROM_THE_DECLINE
    from workflows.process import REFUNDS_BESIDE_THE_NOTICE, SENDS_A_CAPTURE_AGAIN_GUARDED, VERIFIED_FULFILMENT
    from workflows.refund import RefundWorkflow

# -- Process concerns, all in one place ------------------------------------------
DECIDE = Step(start_to_close=timedelta(seconds=30), retry=retry_until_done(), local=True)
NOTIFY = Step(start_to_close=timedelta(seconds=30), retry=retry_until_done(), local=True)
CAPTURE = Step(
    # Transient gateway trouble is retried with the same attempt id (the idempotency
    # key), so a retry can never capture twice, for up to a day. An attempt still without
    # an answer then is unknown (it may have charged the card): payments records it, and
    # reconciliation asks the gateway. A decline is an answer (an event), not an error.
    start_to_close=timedelta(seconds=30),  # the gateway client gives up after 10 s
    schedule_to_close=timedelta(hours=24),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=5),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(hours=1),
        non_retryable_error_types=REFUSALS,
    ),
)
UNKNOWN_CAPTURE_AWAITS_RECONCILIATION = "capture-unknown-awaits-reconciliation"  # patch id
# Waits between capture attempts after a decline; the last one repeats for as long
# as payments still allows attempts.
RECOVERY_SCHEDULE = (timedelta(days=1), timedelta(days=3), timedelta(days=7))
# How long a paid order's process stayed open for a cancellation when no delivery was
# ever confirmed, before OPEN_UNTIL_DELIVERED (flows started since stay open until the
# order is delivered or returned).
OPEN_FOR_CANCELLATION = timedelta(days=90)

# Patch ids: flows started before these changes replay along their old path.
OPEN_UNTIL_DELIVERED = "open-until-delivered"
# Payments' refusals of MarkCaptureUnknown that mean the attempt never reached it (no payment
# yet, or no such attempt): nothing was sent to the gateway.
NEVER_BEGUN = frozenset({"not_found", "no_such_attempt"})
# How long a try of the capture step may still be running after the step gave up: two of its
# start-to-close times (the gateway client itself gives up after 10 s).
ATTEMPT_SETTLES = CAPTURE.start_to_close * 2


@workflow.defn(failure_exception_types=INVALID_REQUEST)
class PaymentWorkflow(AwaitsReconciliation, Process):
    flow_name = "payment"

    def __init__(self) -> None:
        super().__init__()
        self.order: OrderRequest | None = None
        self.open_until_delivered = False
        self.returned = False  # the parcel was stopped and comes back (signal order_returned)
        self.unknown_capture_awaits_reconciliation = False
        self.sends_again_guarded = False  # an attempt that never reached payments is sent again as an attempt
        self.attempts = 0
        self.next_attempt_at: datetime | None = None
        self.decline_code = ""
        self.invoice_number = ""
        self.refund_workflow_id = ""
        self.reason = ""
        self.new_card: NewPaymentMethod | None = None
        self.new_card_at: datetime | None = None  # when the Update bringing it was accepted
        self.card_refusal: tuple[NewPaymentMethod, str] | None = None  # payments refused it
        self.cards_refused = 0
        self.cancellation: CancellationRequest | None = None
        self.cancellation_at: datetime | None = None
        self.cancellation_answer: str | None = None  # billing's refusal, for the Update
        self.cancels_before_retry = False  # a cancellation met after recording a new card stops the retry
        self.delivered = False
        self.reading_fulfilment = False  # billing's record of the parcel is being read
        self.told_while_reading = False  # a delivery or return was told again meanwhile
        self.closed = False  # the flow is ending: every Update still waiting is answered
        self.receipt: asyncio.Task[None] | None = None  # the customer's receipt, going out beside the process

    @workflow.run
    async def run(self, order: OrderRequest) -> PaymentStatus:
        try:
            return await self.pay(order)
        finally:
            # However the flow ends (an operator's Cancel included), a receipt still on its way
            # goes out first. A run begun before has none, and issues nothing here.
            await self.receipt_gone_out()

    async def pay(self, order: OrderRequest) -> PaymentStatus:
        from_outside(order.placed_by)
        self.order = order
        # Which changes this flow runs with, asked once before the first command.
        self.begin()
        self.runs_as(f"payment-{order.order_id}")
        self.open_until_delivered = self.runs_with(OPEN_UNTIL_DELIVERED)
        self.unknown_capture_awaits_reconciliation = self.runs_with(UNKNOWN_CAPTURE_AWAITS_RECONCILIATION)
        self.sends_again_guarded = self.folded_in(SENDS_A_CAPTURE_AGAIN_GUARDED)  # a run begun before has none
        self.set_status("capturing")
        await self.send(
            self.command(
                PlaceOrder,
                "place",
                actor=order.placed_by,
                credential=order.token,
                order_id=order.order_id,
                customer_id=order.customer_id,
                lines=[OrderLine(description=f"Order {order.order_id}", amount=order.amount)],
                placed_at=order.placed_at,
                issued_at=self.started_at(),
            ),
            DECIDE,
        )
        if self.cancellation is not None and self.folded_in(CANCELLED_BEFORE_FIRST_CAPTURE):
            # Accepted while the order was being placed: a cancelled order is not charged
            # (billing may still refuse; then the capture goes on). A run begun before has none.
            if await self.cancel():
                return await self.end("cancelled")
        outcome = await self.attempt(
            self.command(
                CapturePayment,
                "capture",
                order_id=order.order_id,
                customer_id=order.customer_id,
                amount=order.amount,
                card_token=order.card_token,
                issued_at=self.started_at(),
            )
        )
        if outcome is None:  # cancelled before the attempt ever reached payments
            return await self.end("cancelled")
        while (declined := outcome.first(PaymentDeclined)) and not outcome.has(PaymentAbandoned):
            outcome = await self.recover(declined)
            if outcome is None:  # cancelled while recovering (or before its retry reached payments)
                return await self.end("cancelled")

        if abandoned := outcome.first(PaymentAbandoned):
            return await self.give_up(abandoned)

        captured = outcome.first(PaymentCaptured)
        assert captured is not None, "payments answers with a capture, a decline or abandonment"
        await self.after_capture(captured)
        return await self.stay_open_for_cancellation()

    # -- capture and recovery ---------------------------------------------------------
    async def attempt(self, command: CapturePayment | RetryPaymentCapture) -> Outcome | None:
        """Payments' answer to the attempt; None when the order was cancelled before the attempt
        ever reached payments (`capture_unknown`)."""
        self.attempts += 1
        self.next_attempt_at = None
        return await self.send_capture(command)

    async def send_capture(self, command: CapturePayment | RetryPaymentCapture, resent: int = 0) -> Outcome | None:
        """Send the attempt; no usable answer makes it unknown (`capture_unknown`), never a failure."""
        try:
            return await self.send(command, CAPTURE)
        except Refused as refused:
            # Payments refusing the attempt itself fails the flow with its words; only the
            # gateway refusing the request leaves the outcome unknown — and an attempt payments
            # already holds as unknown (a flow Reset to before it asks again) stays unknown.
            if refused.code == "attempt_unknown" and self.unknown_capture_awaits_reconciliation:
                reason = "unknown_when_asked_again"
            elif refused.kind != "GatewayRefusedRequest" or not self.unknown_capture_awaits_reconciliation:
                raise
            else:
                reason = f"refused:{refused.kind}"
        except ActivityError as gave_up:
            if not self.unknown_capture_awaits_reconciliation:
                raise
            cause = gave_up.cause
            reason = f"refused:{cause.type}" if isinstance(cause, ApplicationError) and cause.type else "gateway_unavailable"
        except asyncio.CancelledError:
            # An operator's Cancel while the attempt may be at the gateway cannot undo it.
            if not self.unknown_capture_awaits_reconciliation:
                raise
            reason = "cancelled_while_capturing"
        return await self.capture_unknown(command, reason, resent)

    async def capture_unknown(
        self, command: CapturePayment | RetryPaymentCapture, reason: str, resent: int = 0, waited: bool = False
    ) -> Outcome | None:
        """No usable answer: payments records the attempt as unknown and the flow waits for
        reconciliation's answer; nobody is told the payment failed."""
        assert self.order is not None
        self.note(f"no answer for capture attempt {self.attempts}: {reason}")
        try:
            await self.send(
                self.command(
                    MarkCaptureUnknown,
                    f"mark-unknown-{self.attempts}" + (f"-after-sending-again-{resent}" if resent else "")
                    + ("-after-its-time" if waited else ""),
                    order_id=self.order.order_id,
                    attempt_id=command.command_id,
                    reason=reason,
                ),
                DECIDE,
            )
        except Refused as refused:
            if self.sends_again_guarded and refused.code in NEVER_BEGUN:
                # Payments holds no such attempt: the step never got to record it, so nothing
                # went to the gateway. It is sent now as the attempt it is — the same id, so it
                # can charge once at most —, and no usable answer again makes it unknown: the
                # flow never fails with the card perhaps charged.
                if self.cancellation is not None and self.folded_in(CANCELLED_BEFORE_SENDING_AGAIN):
                    if not waited:
                        # A try of the step still running when it gave up (an operator's Cancel
                        # leaves it running; the day may run out during one) could yet record and
                        # send the attempt: wait out a try's time, then ask payments again.
                        await workflow.sleep(ATTEMPT_SETTLES)
                        return await self.capture_unknown(command, reason, resent, waited=True)
                    # Still not there, and nothing left that could send it: a cancellation accepted
                    # meanwhile goes first, and nothing is charged (billing may refuse; then the
                    # attempt is sent again).
                    if await self.cancel():
                        return None
                self.note(f"capture attempt {self.attempts} never reached payments: sent again")
                return await self.send_capture(command, resent + 1)
            # Payments already has the answer (recorded after the step gave up): the same
            # command again returns it from payments' inbox.
            return await self.send(command, CAPTURE)
        self.set_status("awaiting_reconciliation")
        self.note("waiting for reconciliation to ask the gateway what became of the attempt")
        return await self.reconciliation_answer("capture", self.order.order_id, command.command_id, DECIDE)

    async def recover(self, declined: PaymentDeclined) -> Outcome | None:
        """The next attempt's answer; None when the order was cancelled instead."""
        assert self.order is not None
        self.decline_code = declined.decline_code
        wait = RECOVERY_SCHEDULE[min(self.attempts - 1, len(RECOVERY_SCHEDULE) - 1)]
        if self.folded_in(RECOVERY_TIMED_FROM_THE_DECLINE):
            # The days run from the decline: a mailbox outage holding up its notice pushes nothing back.
            self.next_attempt_at = workflow.now() + wait
            self.set_status("recovering")
            await self.notify("payment_declined", subject=declined.attempt_id, reason=declined.decline_code)
        else:  # a run begun before
            await self.notify("payment_declined", subject=declined.attempt_id, reason=declined.decline_code)
            self.next_attempt_at = workflow.now() + wait
            self.set_status("recovering")
        self.note(f"attempt {self.attempts} declined ({declined.decline_code}); next attempt in {wait.days} day(s)")
        while (remaining := self.next_attempt_at - workflow.now()) > timedelta(0):
            await self.wait_for(
                lambda: self.new_card is not None or self.cancellation is not None, remaining, "next capture attempt"
            )
            if self.cancellation is not None:
                if await self.cancel():
                    return None
                continue  # billing refused: keep waiting for the same attempt
            if self.new_card is not None and not await self.take_new_card():
                continue  # payments refused the card: keep waiting for the same attempt
            break
        if self.new_card is not None:  # arrived as the wait ran out
            await self.take_new_card()
        if self.cancellation is not None and self.cancels_before_retry:
            # Accepted while the new card was being recorded, or as the wait ran out: a
            # cancelled order is not charged (billing may still refuse; then the retry goes on).
            if await self.cancel():
                return None
        return await self.attempt(
            self.command(RetryPaymentCapture, f"retry-{self.attempts}", order_id=self.order.order_id)
        )

    async def take_new_card(self) -> bool:
        """Give payments the new card. False (and the Update answered) when payments refuses it."""
        assert self.order is not None and self.new_card is not None
        card = self.new_card
        step = f"update-payment-method-{self.attempts}" + (f"-{self.cards_refused}" if self.cards_refused else "")
        try:
            await self.send(
                self.command(
                    UpdatePaymentMethod,
                    step,
                    actor=card.given_by,
                    credential=card.token,
                    issued_at=self.new_card_at,
                    order_id=self.order.order_id,
                    card_token=card.card_token,
                ),
                DECIDE,
            )
        except Refused as refused:
            self.cards_refused += 1
            self.card_refusal = (card, f"refused: {refused.message}")
            self.note(f"new card refused by payments: {refused.message}")
            return False
        finally:
            self.new_card, self.new_card_at = None, None
        return True

    async def after_capture(self, captured: PaymentCaptured) -> None:
        assert self.order is not None
        await self.send(
            self.command(
                MarkOrderPaid,
                "mark-paid",
                order_id=captured.order_id,
                amount=captured.amount,
                payment_reference=captured.gateway_reference,
            ),
            DECIDE,
        )
        invoiced = await self.send(
            self.command(
                CreateInvoice,
                "invoice",
                order_id=captured.order_id,
                customer_id=captured.customer_id,
                lines=[OrderLine(description=f"Order {captured.order_id}", amount=captured.amount)],
                total=captured.amount,
                payment_reference=captured.gateway_reference,
            ),
            DECIDE,
        )
        invoice = invoiced.first(InvoiceCreated)
        self.invoice_number = invoice.invoice_number if invoice else ""
        beside = self.folded_in(RECEIPT_BESIDE_THE_PROCESS)
        receipt = self.notify(
            "payment_received", amount=str(captured.amount), invoice_number=self.invoice_number,
            causes_next=not beside,  # beside the process, it causes none of its steps
        )
        if beside:
            # The receipt goes out beside the process: a mailbox outage holds up the message, not
            # a cancellation accepted meanwhile. The flow ends only once it has gone out.
            self.receipt = asyncio.create_task(receipt)
        else:  # a run begun before tells first
            await receipt
        self.set_status("paid")

    async def receipt_gone_out(self) -> None:
        """The customer's receipt still on its way goes out before the flow ends (or before the
        cancellation's notice, so the two arrive in order). An operator's Cancel meanwhile does
        not stop it: the payment was made. One that cannot go out is noted."""
        if self.receipt is None:
            return
        receipt, self.receipt = self.receipt, None  # waited for once, noted once
        if not receipt.done():
            self.note("the customer's receipt is still going out: it goes out first")
        await self.gone_out(receipt, "the customer's receipt")
        try:
            receipt.result()
        except (Refused, ActivityError, asyncio.CancelledError) as failed:
            self.note(f"the customer's receipt could not go out: {failed}")

    # -- giving up and cancelling --------------------------------------------------------
    async def give_up(self, abandoned: PaymentAbandoned) -> PaymentStatus:
        """Compensation: payments gave up, so billing cancels the order."""
        assert self.order is not None
        self.reason = abandoned.reason
        await self.send(
            self.command(
                CancelOrder, "cancel-unpaid", order_id=self.order.order_id, reason="payment_failed"
            ),
            DECIDE,
        )
        # Captures go straight through the gateway: no separate authorization is held
        # that would need voiding.
        await self.notify("payment_abandoned", reason=abandoned.reason)
        return await self.end("abandoned")

    async def stay_open_for_cancellation(self) -> PaymentStatus:
        assert self.order is not None
        until_delivered = self.open_until_delivered
        while True:
            if until_delivered:
                # An order can be cancelled until it is delivered (or its parcel came back),
                # however long that takes: no timer closes this process.
                await workflow.wait_condition(lambda: self.cancellation is not None or self.delivered)
                arrived = True
            else:
                arrived = await self.wait_for(
                    lambda: self.cancellation is not None or self.delivered, OPEN_FOR_CANCELLATION,
                    "open for cancellation",
                )
            if self.cancellation is not None:
                if await self.cancel():
                    return await self.end(self.status)
                continue
            if arrived and self.delivered and self.takes(VERIFIED_FULFILMENT):
                self.reading_fulfilment, self.told_while_reading = True, False
                recorded: RecordedFulfilment = await self.look_up(
                    RecordedFulfilment.activity_name, self.order.order_id, RecordedFulfilment, DECIDE
                )
                self.reading_fulfilment = False
                if not recorded.ends_cancelling and self.told_while_reading:
                    self.note("told again while billing's record was read: reading it again")
                    continue
                if not recorded.ends_cancelling:
                    self.note(
                        f"told the order was delivered or returned, but billing records it {recorded.fulfilment}: "
                        "still open"
                    )
                    self.delivered = self.returned = False
                    continue
                self.returned = recorded.returned  # billing's word, not the signal's
            if not arrived or self.delivered:
                if self.cancellation is not None and self.delivered:  # accepted while billing's record was read
                    ended = "came back" if self.returned else "was delivered"
                    self.cancellation_answer = f"refused: order {self.order.order_id} {ended}; nothing left to cancel"
                # A parcel that came back was refunded in full by the refund that stopped it.
                return await self.end("returned" if self.returned else "paid")

    async def cancel(self) -> bool:
        """Ask billing to cancel. Returns False (and answers the Update) when billing refuses."""
        assert self.order is not None and self.cancellation is not None
        request = self.cancellation
        try:
            cancelled = await self.send(
                self.command(
                    CancelOrder,
                    f"cancel-{len(self.trail)}",
                    actor=request.requested_by,
                    credential=request.token,
                    issued_at=self.cancellation_at,
                    order_id=self.order.order_id,
                    reason=request.reason,
                ),
                DECIDE,
            )
        except Refused as refused:
            self.cancellation_answer = f"refused: {refused.message}"
            self.note(f"cancellation refused by billing: {self.cancellation_answer}")
            self.cancellation = None
            return False
        self.reason = request.reason
        self.set_status("cancelled")
        self.cancellation_answer = self.status  # the Update answers now; a refund may follow
        owed = cancelled.first(RefundOwed)
        if owed is not None and self.folded_in(REFUNDS_BESIDE_THE_NOTICE):
            # The money goes back beside the customer's notice: a mailbox outage holds up
            # the message, not the refund (a run begun before tells first). Whatever becomes of
            # the notice, the refund is awaited: it is never left running on its own.
            refunding = asyncio.create_task(self.refund(owed))
            try:
                await self.receipt_gone_out()  # the receipt first, then the cancellation's notice
                await self.notify("order_cancelled", reason=request.reason)
            finally:
                await refunding
            return True
        await self.receipt_gone_out()
        await self.notify("order_cancelled", reason=request.reason)
        if owed is not None:
            await self.refund(owed)
        return True

    async def refund(self, owed: RefundOwed) -> None:
        """Policy: a cancelled order that was paid gets its money back, as a refund of its own."""
        self.refund_workflow_id = f"refund-{owed.order_id}-cancellation"
        try:
            result = await workflow.execute_child_workflow(
                RefundWorkflow.run,
                RefundRequest(
                    refund_id=f"{owed.order_id}-cancellation",
                    order_id=owed.order_id,
                    amount=None,  # billing refunds everything still refundable
                    reason="order cancelled",
                    requested_by=Actor.system("cancellation-refund"),
                ),
                id=self.refund_workflow_id,
                static_summary=f"Refund of cancelled order {owed.order_id}",
            )
        except ChildWorkflowError as ended:
            if is_cancelled_exception(ended) and workflow.cancellation_reason() is not None:
                raise  # this flow's own Cancel reached its child: it ends cancelled, as before
            # Terminated, cancelled on its own, or failed on a bug: what the refund held stays
            # as it was (the money reserved at billing), reconciliation's daily pass flags it
            # (`flow_gone`) and support resumes it (`starter.py resume-flow`); refused before it
            # reserved anything, the money stays owed and the daily pass flags that
            # (`money_owed`). The cancellation
            # itself is done. (Only a child's end not yet in any running history takes this
            # path: replay-safe. A run that failed on it under the code before ends cancelled
            # when resumed, and its `status` query no longer replays.)
            self.note(f"child {self.refund_workflow_id} ended unfinished ({ended.cause or ended}): its money stays reserved")
            return
        self.note(f"child {self.refund_workflow_id} ended {result.status}")
        if result.status == "completed":
            self.set_status("refunded")

    # -- people ---------------------------------------------------------------------------
    @workflow.update
    async def update_payment_method(self, method: NewPaymentMethod) -> str:
        """Answers once the attempt with the new card has an outcome, with payments' refusal
        of the card, or with the order's status when the flow ends first."""
        attempts_before = self.attempts
        self.new_card, self.new_card_at = method, workflow.now()
        refused = lambda: self.card_refusal is not None and self.card_refusal[0] is method  # noqa: E731
        await workflow.wait_condition(
            lambda: refused()
            or self.closed
            or (self.attempts > attempts_before and (self.next_attempt_at is not None or self.status != "recovering"))
        )
        if refused():
            assert self.card_refusal is not None
            raise ApplicationError(self.card_refusal[1], type="PaymentMethodRefused", non_retryable=True)
        return self.status

    @update_payment_method.validator
    def check_payment_method(self, method: NewPaymentMethod) -> None:
        addressed_here(method)
        if not method.card_token.strip():
            raise ValueError("a card token is required")
        refuse_outsider(method.given_by, method.token, UpdatePaymentMethod, "give a new payment method")
        if self.status != "recovering" or self.new_card is not None:
            raise ValueError(f"order is {self.status}; a new payment method is only taken while recovering")
        if self.next_attempt_at is None:
            raise ValueError("a capture attempt is under way; give the new card once it has an answer")

    @workflow.update
    async def cancel_order(self, request: CancellationRequest) -> str:
        self.cancellation_answer = None
        self.cancellation, self.cancellation_at = request, workflow.now()
        # Asked here, where the flow has just woken, not after the local activity it may meet.
        self.cancels_before_retry = self.takes(CANCELLED_BEFORE_RETRY)
        await workflow.wait_condition(lambda: self.cancellation_answer is not None)
        if self.cancellation_answer.startswith("refused"):
            raise ApplicationError(self.cancellation_answer, type="CancellationRefused")
        return self.cancellation_answer

    @cancel_order.validator
    def check_cancellation(self, request: CancellationRequest) -> None:
        addressed_here(request)
        refuse_outsider(request.requested_by, request.token, CancelOrder, "cancel an order")
        if self.cancellation is not None:
            raise ValueError("a cancellation is already being handled")
        if self.closed:  # ending (the receipt still going out): nothing would act on it
            raise ValueError(f"order is {self.status}; its payment process is ending")
        if self.status not in {"capturing", "recovering", "paid"}:
            raise ValueError(f"order is {self.status}; there is nothing to cancel")

    @workflow.signal
    def order_delivered(self) -> None:
        self.delivered = True
        self.told_again()

    @workflow.signal
    def order_returned(self) -> None:
        """The parcel was intercepted for a full refund and comes back: nothing is left to cancel."""
        self.returned = True
        self.delivered = True
        self.told_again()

    def told_again(self) -> None:
        """News that comes while billing's record is read may be the very fact that read, begun
        before it, missed (a forged word, then the genuine one): the record is read again, not
        taken from the older read. Asked here, where the flow has just woken (`Process.takes`)."""
        if self.reading_fulfilment and self.takes(READ_AGAIN_WHEN_TOLD_AGAIN):
            self.told_while_reading = True

    # -- small helpers ---------------------------------------------------------------------
    async def notify(self, kind: str, subject: str | None = None, causes_next: bool = True, **facts: str) -> None:
        assert self.order is not None
        await self.send(
            self.command(
                NotifyCustomer,
                f"notify-{kind}-{subject or self.order.order_id}",
                customer_id=self.order.customer_id,
                kind=kind,
                subject=subject or self.order.order_id,
                facts={"order_id": self.order.order_id, **facts},
            ),
            NOTIFY,
            causes_next=causes_next,
        )

    async def end(self, status: str) -> PaymentStatus:
        self.next_attempt_at = None
        self.set_status(status)
        # Whatever ended the flow, an Update still waiting gets the order's final status.
        self.closed = True
        if self.cancellation is not None and self.cancellation_answer is None:
            self.cancellation_answer = status
        await self.receipt_gone_out()
        await self.finish()
        return self.current()

    @workflow.query(name="status")
    def status_view(self) -> PaymentStatus:
        return self.current()

    def current(self) -> PaymentStatus:
        assert self.order is not None
        return PaymentStatus(
            status=self.status,
            trail=self.trail,
            order_id=self.order.order_id,
            amount=self.order.amount,
            attempts=self.attempts,
            next_attempt_at=self.next_attempt_at,
            decline_code=self.decline_code,
            invoice_number=self.invoice_number,
            refund_workflow_id=self.refund_workflow_id,
            reason=self.reason,
        )
