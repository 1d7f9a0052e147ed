"""ReconciliationWorkflow — nobody leaves a money question open. Runs on Temporal Schedules
(`reconciliation`: every few minutes; `reconciliation-daily`: once a day, with `daily`).

Read top to bottom:
  Every run:
    FindOpenGatewayRequests → payments' records: unknown captures and refunds, and ones
        `sent` longer than any flow still retries them (the longest waiting 2,000)
    for each (at most `lookups_per_pass`, a sample when more; after three in a row the gateway
        could not answer, the rest wait for the next pass): ReconcileGatewayRefund | ReconcileCapture → payments, which looks the gateway
        up by the business id and decides what the answer means:
        GatewayRefundSettled | GatewayRefundDeclined | GatewayRefundNotFound
        | PaymentCaptured | PaymentDeclined (+ PaymentAbandoned)
      → signal `gateway_answer` to the waiting flow (refund-{refund id} / payment-{order id}),
        which takes from payments what that command recorded (a signal names no sender, so
        its facts are not believed) and completes or compensates through its owners as usual
      the flow is gone → RecordDiscrepancy(flow_gone) → reconciliation → DiscrepancyRecorded
        → NotifyTeam(support). The gateway cannot say yet → asked again next run.
    FindUntoldAnswers → flows still waiting whose answer payments already holds (found by an
        earlier pass that could not tell them) → signal `gateway_answer` with payments' record
  Daily (`daily`): the above, a FindOpenGatewayRequests that cannot be read only noted (the
    frequent pass asks again minutes later: the day's comparison must not wait on it), then
    CompareSettlements(the day before the time the run was scheduled for, or the day asked
        for) → billing's ledger and payments' records against the gateway's listing → for each
        finding: RecordDiscrepancy → reconciliation → DiscrepancyRecorded (new, or found again
        after support resolved it)
        → NotifyTeam(support)
      the listing cannot be had (an hour of tries) → RecordDiscrepancy(settlements_not_compared)
        → ... NotifyTeam(support), who compares that day again (`starter.py compare-settlements`);
        the run goes on
    FindStrandedRefunds → money billing holds reserved for a refund whose flow no longer runs
        → RecordDiscrepancy(flow_gone) → ... NotifyTeam(support)
      (this read and the two below: one that cannot be had is noted, and the run goes on)
    FindUnansweredParcelStops → stops of a parcel billing asked for over an hour ago with no
        answer of shipping recorded, whose flow (refund-{refund} or ship-{order}) no longer runs
        → RecordDiscrepancy(parcel_not_stopped) → ... NotifyTeam(support), naming the flow to
        resume (`starter.py resume-flow`)
    FindMoneyOwed → orders owing their customer money back (cancelled, or the parcel returned),
        with no refund on its way for over an hour (a review said no, the gateway declined, a
        refund never started)
        → RecordDiscrepancy(money_owed) → ... NotifyTeam(support); open until a refund takes it
        or support says how it went back (owed again later: flagged again)
    FindRefundsToCredit → refunds billing paid out that the order's invoice holds no credit note
        for (paid before refunds credited their invoice, or by a flow that ended between
        CompleteRefund and CreditInvoice)
      for each: CreditInvoice(billing's paid amount) → invoicing → InvoiceCredited (one note per
        refund, so asking again is safe)
        refused (no invoice, a credit beyond it) → RecordDiscrepancy(refund_not_credited) → ...
        NotifyTeam(support), who issue the note by hand; not asked again
        failing (not refusing) for about a quarter of an hour → noted, asked again the next day;
        after three such, the rest wait for the next day too
  Any RecordDiscrepancy (or its NotifyTeam) that cannot be saved for about an hour → noted, the
    pass goes on; after two, the rest are noted untried; one reconciliation refuses → noted as
    a bug. The run ends failed (DiscrepanciesNotRecorded) naming each, the day to compare again
    if one of its settlement findings would not save, and in full what no later pass finds
    again (a gone flow's answer); the other checks find theirs again
  Never: moves money, or decides for an owner. It describes and flags, and asks invoicing for
  the credit notes refunds left unissued (invoicing decides).

ResolveDiscrepancyWorkflow — support closes a discrepancy (`starter.py resolve-discrepancy`):
  ResolveDiscrepancy (support) → reconciliation → DiscrepancyResolved. Done.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from domain.contracts import (
        CreditInvoice,
        DiscrepancyRecorded,
        Finding,
        InvoiceCredited,
        Money,
        MoneyOwed,
        NotifyTeam,
        OPEN_REQUESTS_PER_READ,
        OpenGatewayRequest,
        Outcome,
        ReconcileCapture,
        ReconcileGatewayRefund,
        ReconciliationScan,
        RecordDiscrepancy,
        RefundToCredit,
        ResolveDiscrepancy,
        SettlementDay,
        StrandedRefund,
        UnansweredParcelStop,
        UntoldAnswer,
    )
    from domain.reconciliation.commands import discrepancy_id
    from workflows.messages import DiscrepancyResolution, ReconciliationResult, ReconciliationRun, TrailView
    from workflows.process import INVALID_REQUEST, REFUSALS, Process, Refused, Step, from_outside, retry_until_done
    from workflows.process import FLAGS_UNANSWERED_PARCEL_STOPS, TELLS_WHAT_WAS_NOT_TOLD, TRACKS_MONEY_OWED
    from workflows.process import COMPARES_THE_SCHEDULED_DAY, NOTES_AN_UNREAD_STRANDED_CHECK
    from workflows.process import CREDITS_WHAT_REFUNDS_LEFT_UNCREDITED, LEAVES_A_STUCK_CREDIT_FOR_THE_NEXT_PASS
    from workflows.process import COMPARES_THOUGH_OPEN_REQUESTS_ARE_UNREAD, NOTES_A_DISCREPANCY_IT_CANNOT_RECORD
    from workflows.process import ASKS_A_BOUNDED_NUMBER_PER_PASS

# -- Process concerns, all in one place ------------------------------------------
RECONCILIATION_QUEUE = "reconciliation"
DECIDE = Step(start_to_close=timedelta(seconds=30), retry=retry_until_done(), local=True)
NOTIFY = Step(start_to_close=timedelta(seconds=30), retry=retry_until_done(), local=True)
CREDIT = Step(
    # Asking invoicing for a credit note a refund left unissued. Invoicing failing (not refusing:
    # a row that will not load or save, the database away) is tried for about a quarter of an hour
    # (waits of 2, 4 and 8 minutes, timers in the history), then noted and asked again the next
    # day: it must not hold up the rest of the pass, nor, for ever, the passes after it.
    start_to_close=timedelta(seconds=30),
    retry=RetryPolicy(
        initial_interval=timedelta(minutes=2), backoff_coefficient=2.0, maximum_attempts=4,
        non_retryable_error_types=REFUSALS,
    ),
    local=True,
)
CREDITS_UNASKED_PER_PASS = 3  # after that many, invoicing is taken to be down: the rest wait a day
RECORD = Step(
    # Recording a discrepancy, and telling support of it. A record that will not save (a broken
    # row, the database away) is tried for about an hour (waits of 2, 4, 8, then 15 minutes: timers
    # in the history, a local activity's wait under a minute would hold the workflow task), then
    # noted: the rest of the pass goes on, and the run ends failed, naming what it could not record.
    # Retried for ever, it held this pass and, the schedules skipping overlaps, every later one:
    # days whose settlements nobody compared.
    start_to_close=timedelta(seconds=30),
    retry=RetryPolicy(
        initial_interval=timedelta(minutes=2), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=15),
        maximum_attempts=7, non_retryable_error_types=REFUSALS,
    ),
    local=True,
)
SAVES_FAILED_PER_PASS = 2  # records (or messages) that would not save: then those are taken to be down
NOT_RECORDED = "DiscrepanciesNotRecorded"  # the failure of a run that could not record them all
UNREACHED_IN_A_ROW = 3  # look-ups that failed one after another: the gateway (or payments) is down
LOOKUP = Step(
    # A look-up asks the gateway (never local). A few tries; what the gateway still cannot
    # answer is left for the next run, minutes later.
    start_to_close=timedelta(seconds=30),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=2.0,
        maximum_attempts=3,
        non_retryable_error_types=REFUSALS,
    ),
)
READ = dict(  # reads of the owners' records
    start_to_close_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=5),
)
SETTLEMENTS = dict(
    # The gateway's listing of a day: one request per page and per capture, so a busy day takes
    # minutes; a gateway outage at that hour is waited out for about an hour. After that the day
    # is flagged for support, and the rest of the run (stranded reservations) still happens.
    start_to_close_timeout=timedelta(minutes=30),
    retry_policy=RetryPolicy(  # waits of 30 s, 1, 2, 4, 8 min, then 15 min: about an hour in 9 tries
        initial_interval=timedelta(seconds=30), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=15),
        maximum_attempts=9,
    ),
)
UNTOLD = dict(
    # Asking the waiting flows (a query each) takes seconds; what it cannot get to in a minute
    # (workers down, a flow unanswered) the next pass, minutes later, asks again.
    start_to_close_timeout=timedelta(minutes=1),
    retry_policy=RetryPolicy(maximum_attempts=1),
)
SUPPORT = "support"
# Set by Temporal on a run a schedule started: the time it was scheduled for.
SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")


@workflow.defn
class ReconciliationWorkflow(Process):
    flow_name = "reconciliation"

    def __init__(self) -> None:
        super().__init__()
        self.result = ReconciliationResult(status="started", trail=[])
        self.began_at: datetime | None = None  # what this pass finds, it found as of its start
        self.records_bounded = False  # a run begun before NOTES_A_DISCREPANCY_IT_CANNOT_RECORD retries for ever
        # What could not be recorded, by what becomes of it (what_was_left):
        self.records_failed = 0  # discrepancies that would not save (refusals are bugs, not counted)
        self.messages_failed = 0  # support's messages that would not save
        self.comparing_day: date | None = None  # the day whose settlement findings are being flagged
        self.day_to_compare_again: date | None = None  # ... some of which would not save
        self.found_later = 0  # would not save; their check finds them again on its next pass
        self.refused: list[str] = []  # refused: a bug, refused again however often found
        self.by_hand: list[str] = []  # found by no later pass (refused ones too): id and detail

    @workflow.run
    async def run(self, request: ReconciliationRun) -> ReconciliationResult:
        self.begin()
        self.set_status("asking_gateway")
        now = self.began_at = workflow.now()
        telling_the_untold = self.takes(TELLS_WHAT_WAS_NOT_TOLD)  # asked at the start, where the run wakes
        tracking_money_owed = request.daily and self.folded_in(TRACKS_MONEY_OWED)  # a run begun before has none
        flagging_unanswered_stops = request.daily and self.folded_in(FLAGS_UNANSWERED_PARCEL_STOPS)
        noting_an_unread_stranded_check = self.folded_in(NOTES_AN_UNREAD_STRANDED_CHECK)
        crediting_refunds = request.daily and self.folded_in(CREDITS_WHAT_REFUNDS_LEFT_UNCREDITED)
        self.records_bounded = self.folded_in(NOTES_A_DISCREPANCY_IT_CANNOT_RECORD)
        # The daily pass's own work (the day's settlements) must not hang on this read: the
        # frequent pass, minutes later, asks the gateway about these anyway.
        open_requests: list[OpenGatewayRequest] | None = await self.read_as_of(
            "reconciliation.FindOpenGatewayRequests", list[OpenGatewayRequest], now,
            noting=request.daily and self.folded_in(COMPARES_THOUGH_OPEN_REQUESTS_ARE_UNREAD),
        )
        if open_requests is not None:
            more = " (as many as one read returns: more may wait)" if len(open_requests) >= OPEN_REQUESTS_PER_READ else ""
            self.note(f"{len(open_requests)} capture(s) and refund(s) without the gateway's answer{more}")
        if self.folded_in(ASKS_A_BOUNDED_NUMBER_PER_PASS):
            await self.ask_about(open_requests or [], request.lookups_per_pass)
        else:  # a run begun before asks about every one, whatever the gateway does
            for item in open_requests or []:
                await self.reconcile(item)
        if telling_the_untold:
            await self.tell_what_was_not_told(now)  # after the pass's own answers: it holds none of them up

        if request.daily:
            # Yesterday as of when the run was meant to start (the time its schedule fired it for,
            # else its start), not when a worker first got to it: a run held past midnight, or
            # caught up late by its schedule, still compares the day it was meant for.
            meant_at = self.scheduled_for() if self.folded_in(COMPARES_THE_SCHEDULED_DAY) else self.started_at()
            day = request.settlement_day or (meant_at - timedelta(days=1)).date()
            self.set_status("comparing_settlements")
            self.comparing_day = day
            try:
                findings: list[Finding] = await self.read(
                    "reconciliation.CompareSettlements", SettlementDay(day=day), list[Finding], **SETTLEMENTS
                )
            except ActivityError as trouble:
                if is_cancelled_exception(trouble):
                    raise  # an operator's Cancel: the run ends cancelled, nothing is flagged
                findings = []
                await self.flag(
                    "settlements_not_compared", "", day.isoformat(),
                    f"the gateway's settlements of {day} could not be read ({_short(trouble.cause or trouble)}): "
                    f"nothing of that day was compared. Compare it again: starter.py compare-settlements {day}",
                )
            else:
                self.note(f"settlements of {day}: {len(findings)} disagreement(s)")
            for finding in findings:
                await self.flag(
                    finding.kind.value, finding.order_id, finding.business_id, finding.detail,
                    ours=finding.ours, gateway=finding.gateway,
                )
            self.comparing_day = None
            stranded = await self.read_as_of(
                "reconciliation.FindStrandedRefunds", list[StrandedRefund], now, noting=noting_an_unread_stranded_check
            )
            if stranded is not None:
                self.note(f"{len(stranded)} reservation(s) whose refund flow is gone")
            for refund in stranded or []:
                await self.flag(
                    "flow_gone",
                    refund.order_id,
                    refund.refund_id,
                    f"billing holds {refund.amount} reserved for refund {refund.refund_id} since "
                    f"{refund.requested_at:%Y-%m-%d %H:%M} UTC; its flow {refund.workflow_id} is {refund.workflow_status}"
                    + (f" (run {refund.workflow_run_id})." if refund.workflow_run_id else "."),
                    ours=refund.amount,
                )
            if tracking_money_owed:
                await self.flag_money_owed(now)
            if flagging_unanswered_stops:
                await self.flag_unanswered_parcel_stops(now)
            if crediting_refunds:
                await self.credit_refunds_left_uncredited(now)
        if self.result.not_recorded or self.result.not_told:
            self.set_status("not_all_recorded")
            await self.finish()
            raise ApplicationError(self.what_was_left(), type=NOT_RECORDED, non_retryable=True)
        self.set_status("done")
        await self.finish()
        return self.current()

    def what_was_left(self) -> str:
        """The failure of a pass that could not record every discrepancy, saying what becomes
        of each: a day's settlement findings are found again by comparing the day again; the
        other checks' by their next pass; a gone flow's answer, and a refused one, by nothing
        (each with its detail, here and in the trail); support is told by no later pass."""
        said = []
        if self.result.not_recorded:
            said.append(f"{len(self.result.not_recorded)} discrepancy(ies) not recorded: "
                        f"{_some(self.result.not_recorded)}")
        if self.refused:
            said.append(f"of them refused, a bug to report (the trail says why): {_some(self.refused)}")
        if self.day_to_compare_again is not None:
            day = self.day_to_compare_again
            said.append(f"compare {day} again: starter.py compare-settlements {day}")
        if self.found_later:
            said.append(f"{self.found_later} found again by their check's next pass")
        if self.by_hand:
            said.append(f"found by no later pass, see to it by hand: {_some(self.by_hand, ' | ')}")
        if self.result.not_told:
            said.append(f"recorded, support not told (no later pass tells them): {_some(self.result.not_told)} "
                        f"(open: starter.py discrepancies)")
        return "; ".join(said)

    @staticmethod
    def scheduled_for() -> datetime:
        """The time the schedule started this run for (`TemporalScheduledStartTime`; a catch-up
        after an outage starts it later), else the run's start (started by hand)."""
        return workflow.info().typed_search_attributes.get(SCHEDULED_START) or Process.started_at()

    async def read_as_of(self, activity: str, result_type: Any, now: datetime, noting: bool) -> Any:
        """One of the pass's reads, as of its start: `noting`, one that fails is noted (None)."""
        if noting:
            return await self.read_or_note(activity, result_type, now)
        return await self.read(activity, ReconciliationScan(as_of=now), result_type)

    async def read_or_note(self, activity: str, result_type: Any, now: datetime) -> Any:
        """One of the daily pass's reads, as of the pass's start; None when it fails (Temporal or
        the database unavailable for all its tries, or a worker without the read yet, mid-deploy):
        it is noted, the rest of the pass goes on, and the next daily pass reads again."""
        try:
            return await self.read(activity, ReconciliationScan(as_of=now), result_type)
        except ActivityError as trouble:
            if is_cancelled_exception(trouble):
                raise
            self.note(f"{activity} could not be read ({_short(trouble.cause or trouble)})")
            return None

    async def flag_money_owed(self, now: datetime) -> None:
        """Billing told support once (`RefundOwed`); money still owed with no refund on its way is
        flagged, and stays flagged until a refund takes it or support says how it went back."""
        owed: list[MoneyOwed] | None = await self.read_or_note("reconciliation.FindMoneyOwed", list[MoneyOwed], now)
        if owed is None:
            return
        self.note(f"{len(owed)} order(s) owing money back with no refund on its way")
        for item in owed:
            await self.flag(
                "money_owed",
                item.order_id,
                item.order_id,
                f"order {item.order_id} (cancelled, or its parcel came back) has owed customer "
                f"{item.customer_id} {item.amount} since {item.owed_since:%Y-%m-%d %H:%M} UTC with no refund on "
                f"its way (a fraud review said no or expired, the gateway refused or declined the refund, or "
                f"none started). Pay it back: starter.py "
                f"refund --order-id {item.order_id} --reason 'money owed back' --as support:<you>; or, "
                f"once it went back another way, resolve this with a note saying how.",
                ours=item.amount,
            )

    async def flag_unanswered_parcel_stops(self, now: datetime) -> None:
        """A stop of a parcel billing asked for whose flow ended before shipping's answer was
        recorded: the parcel may be on its way to a customer whose money went back."""
        unanswered: list[UnansweredParcelStop] | None = await self.read_or_note(
            "reconciliation.FindUnansweredParcelStops", list[UnansweredParcelStop], now
        )
        if unanswered is None:
            return
        self.note(f"{len(unanswered)} stop(s) of a parcel nobody answered")
        for stop in unanswered:
            carried = (
                f"Resume it (it asks shipping again and records the answer; nothing is decided twice): "
                f"starter.py resume-flow {stop.workflow_id} --note '...' --as support:<you>"
                if stop.resumable
                else "It cannot be resumed: ask the carrier to stop the parcel"
            )
            await self.flag(
                "parcel_not_stopped",
                stop.order_id,
                stop.order_id,
                f"billing asked at {stop.asked_at:%Y-%m-%d %H:%M} UTC to stop parcel {stop.tracking} of order "
                f"{stop.order_id} (for refund {stop.refund_id}, after a {stop.because}), and no answer of shipping "
                f"was recorded: the flow carrying it, {stop.workflow_id}, is {stop.workflow_status}. {carried}; "
                f"or, once the parcel was dealt with another way, resolve this with a note saying how.",
            )

    async def credit_refunds_left_uncredited(self, now: datetime) -> None:
        """Refunds paid out whose invoice holds no credit note: invoicing is asked for it, for
        billing's paid amount. One invoicing refuses is flagged for support, and not asked again."""
        uncredited: list[RefundToCredit] | None = await self.read_or_note(
            "reconciliation.FindRefundsToCredit", list[RefundToCredit], now
        )
        if uncredited is None:
            return
        self.note(f"{len(uncredited)} refund(s) paid out with no credit note")
        run = workflow.info().run_id
        gives_up = self.folded_in(LEAVES_A_STUCK_CREDIT_FOR_THE_NEXT_PASS)  # a run begun before retries for ever
        unasked = 0
        for refund in uncredited:
            try:
                credited = await self.send(
                    self.command(
                        CreditInvoice, f"{run}/credit-{refund.order_id}/{refund.refund_id}", issued_at=self.began_at,
                        order_id=refund.order_id, refund_id=refund.refund_id, amount=refund.amount,
                    ),
                    CREDIT if gives_up else DECIDE,
                    causes_next=False,
                )
            except Refused as refused:
                await self.flag(
                    "refund_not_credited", refund.order_id, refund.refund_id,
                    f"refund {refund.refund_id} paid {refund.amount} of order {refund.order_id} back to the customer, "
                    f"and invoicing would not credit the order's invoice for it: {_short(refused.message)}. Issue "
                    f"the credit note by hand, then resolve this with its number.",
                    ours=refund.amount,
                )
                continue
            except (ActivityError, ApplicationError) as trouble:  # a local activity's error comes as it is
                if not gives_up or is_cancelled_exception(trouble):
                    raise
                unasked += 1
                self.note(f"invoicing could not be asked to credit refund {refund.refund_id} "
                          f"({_short(trouble.cause or trouble)}): asked again next pass")
                if unasked >= CREDITS_UNASKED_PER_PASS:
                    self.note("invoicing is failing: the other refunds without a credit note wait for the next pass")
                    return
                continue
            if credited.first(InvoiceCredited) is not None:
                self.result.credited += 1

    # -- the frequent pass ---------------------------------------------------------------------
    async def tell_what_was_not_told(self, now: datetime) -> None:
        """Flows still waiting whose answer an earlier pass found and could not tell them (cut
        short, or a look-up that committed after its step gave up): told now. Each takes only
        payments' record of the command named, so telling again is safe."""
        try:
            untold: list[UntoldAnswer] = await self.read(
                "reconciliation.FindUntoldAnswers", ReconciliationScan(as_of=now), list[UntoldAnswer], **UNTOLD
            )
        except ActivityError as trouble:
            if is_cancelled_exception(trouble):
                raise
            # The rest of the pass does not wait on it: the next pass looks again.
            self.note(f"flows waiting for reconciliation could not be listed ({_short(trouble.cause or trouble)})")
            return
        for item in untold:
            try:
                await workflow.get_external_workflow_handle(item.workflow_id).signal("gateway_answer", item.answer)
            except FailureError:
                continue  # ended meanwhile: nothing left waiting
            self.note(f"told {item.workflow_id} what payments found ({item.answer.command_id}): its signal had been lost")

    async def reconcile(self, item: OpenGatewayRequest) -> bool:
        """Ask payments to look one open request up; False when the gateway could not be reached."""
        self.result.asked += 1
        step = f"reconcile-{item.kind}-{item.business_id}"
        if item.kind == "refund":
            command: Any = self.command(ReconcileGatewayRefund, step, order_id=item.order_id, refund_id=item.business_id)
            waiting = f"refund-{item.business_id}"
        else:
            command = self.command(ReconcileCapture, step, order_id=item.order_id, attempt_id=item.business_id)
            waiting = f"payment-{item.order_id}"
        try:
            answer = await self.send(command, LOOKUP)
        except Refused as refused:
            self.result.left_open += 1
            self.note(f"payments will not reconcile {item.kind} {item.business_id} now: {refused.message}")
            return True
        except ActivityError as trouble:
            self.result.left_open += 1
            self.note(f"the gateway could not say what became of {item.kind} {item.business_id}: {trouble.cause or trouble}")
            if isinstance(trouble.cause, ApplicationError) and trouble.cause.type == "GatewayRefusedRequest":
                # Not "it cannot say yet" but "it will not say" (another account's key?): asked
                # again every pass, and support is told, once.
                await self.flag(
                    "lookup_refused", item.order_id, item.business_id,
                    f"the gateway refused to look up {item.kind} {item.business_id} ({item.amount}, {item.status}): "
                    f"{_short(trouble.cause.message)}. Its money stays as it is until the gateway answers.",
                    ours=item.amount,
                )
                return True
            return False
        self.result.answered += 1
        try:
            await workflow.get_external_workflow_handle(waiting).signal("gateway_answer", answer)
        except FailureError as gone:
            await self.flag(
                "flow_gone",
                item.order_id,
                item.business_id,
                f"payments now records {', '.join(answer.event_names)} for {item.kind} {item.business_id} "
                f"({item.amount}), but its flow {waiting} no longer runs to finish it ({gone.message}).",
                ours=item.amount,
                found_again=False,  # payments answered: no longer an open request the next pass lists
            )
            return True
        self.note(f"told {waiting}: {', '.join(answer.event_names)}")
        return True

    async def ask_about(self, open_requests: list[OpenGatewayRequest], at_most: int) -> None:
        """Look up at most `at_most` open requests — a sample of them when there are more, so
        that ones the gateway never answers cannot keep the rest waiting —, and stop once the
        gateway could not be reached for UNREACHED_IN_A_ROW of them: the rest, the next pass."""
        asking = open_requests
        if len(open_requests) > at_most:
            # A sample drawn from the run's seeded random numbers alone (`random.sample` itself
            # may draw differently on another Python version: a replay must draw the same).
            draw = workflow.random()
            keys = [draw.random() for _ in open_requests]
            asking = [open_requests[i] for i in sorted(range(len(open_requests)), key=keys.__getitem__)[:at_most]]
            self.result.left_open += len(open_requests) - at_most
            self.note(f"asking about {at_most} of them; the other {len(open_requests) - at_most} the next passes")
        unreached = 0
        for asked, item in enumerate(asking, 1):
            unreached = 0 if await self.reconcile(item) else unreached + 1
            if unreached >= UNREACHED_IN_A_ROW and asked < len(asking):
                self.result.left_open += len(asking) - asked
                self.note(f"{UNREACHED_IN_A_ROW} look-ups in a row failed (the gateway, or payments, unreachable): "
                          f"the other {len(asking) - asked} the next pass")
                return

    # -- discrepancies ------------------------------------------------------------------------------
    async def flag(
        self, kind: str, order_id: str, business_id: str, detail: str,
        ours: Money | None = None, gateway: Money | None = None, found_again: bool = True,
    ) -> None:
        """Record a discrepancy for support; support is told once, when it is new. One that
        cannot be recorded or told (RECORD) is noted, and the pass goes on. `found_again=False`:
        nothing finds it again once this pass is over (a gone flow's answer, recorded already)."""
        identifier = discrepancy_id(kind, business_id)
        if self.records_bounded and self.records_failed >= SAVES_FAILED_PER_PASS:
            self.note_not_recorded(identifier, detail, found_again, None)
            return
        # Step ids name this run: a day compared again (`compare-settlements`, the same workflow
        # id) must be decided again, not answered from the first run's records.
        run = workflow.info().run_id
        try:
            recorded = await self.send(
                self.command(
                    RecordDiscrepancy,
                    f"{run}/discrepancy-{identifier}",
                    issued_at=self.began_at,
                    discrepancy_id=identifier,
                    kind=kind,
                    order_id=order_id,
                    business_id=business_id,
                    ours=ours,
                    gateway=gateway,
                    detail=detail,
                ),
                RECORD if self.records_bounded else DECIDE,
            )
        except (ActivityError, ApplicationError) as trouble:  # a local activity's error comes as it is
            if not self.records_bounded or is_cancelled_exception(trouble):
                raise
            self.note_not_recorded(identifier, detail, found_again, trouble)
            return
        found = recorded.first(DiscrepancyRecorded)
        if found is None:
            return  # known already: support was told when it was found
        self.result.discrepancies += 1
        if self.records_bounded and self.messages_failed >= SAVES_FAILED_PER_PASS:
            self.result.not_told.append(identifier)
            self.note(f"support not told of {identifier}: not tried, saving messages is failing")
            return
        try:
            await self.tell_support(identifier, kind, order_id, business_id, detail, found)
        except (ActivityError, ApplicationError) as trouble:
            if not self.records_bounded or is_cancelled_exception(trouble):
                raise
            self.result.not_told.append(identifier)
            if not isinstance(trouble, Refused):
                self.messages_failed += 1
            self.note(f"support not told of {identifier}: {_why(trouble)}")

    def note_not_recorded(
        self, identifier: str, detail: str, found_again: bool, trouble: ActivityError | ApplicationError | None,
    ) -> None:
        """`trouble` None: not tried, saving having failed too often in this pass. A refusal (a
        bug in what this pass sent: finding it again cannot help) is not taken for the database
        failing."""
        self.result.not_recorded.append(identifier)
        why = "not tried, saving is failing" if trouble is None else _why(trouble)
        if isinstance(trouble, Refused):
            self.refused.append(identifier)
        elif trouble is not None:
            self.records_failed += 1
        if isinstance(trouble, Refused) or not found_again:
            self.by_hand.append(f"{identifier}: {detail}")
            why = f"{why}. See to it by hand: {detail}"  # the trail keeps them all
        elif self.comparing_day is not None:
            self.day_to_compare_again = self.comparing_day
        else:
            self.found_later += 1
        self.note(f"{identifier} not recorded: {why}")

    async def tell_support(
        self, identifier: str, kind: str, order_id: str, business_id: str, detail: str, found: DiscrepancyRecorded,
    ) -> None:
        run = workflow.info().run_id
        await self.send(
            self.command(
                NotifyTeam,
                f"{run}/tell-support-{identifier}",
                team=SUPPORT,
                kind="discrepancy_found",
                # Each time it is found open (first, or again after support resolved it): a message.
                subject=f"{identifier}@{found.occurred_at:%Y-%m-%dT%H:%M:%S.%fZ}",
                facts={
                    "discrepancy_id": identifier,
                    "kind": kind,
                    "order_id": order_id or "none: the whole day",
                    "business_id": business_id,
                    "detail": detail,
                },
            ),
            RECORD if self.records_bounded else NOTIFY,
        )

    # -- small helpers ---------------------------------------------------------------------------
    async def read(self, activity_name: str, argument: Any, result_type: Any, **step: Any) -> Any:
        return await workflow.execute_activity(
            activity_name, argument, task_queue=RECONCILIATION_QUEUE, result_type=result_type,
            summary=activity_name.split(".")[-1], **(step or READ),
        )

    @workflow.query(name="status")
    def status_view(self) -> ReconciliationResult:
        return self.current()

    def current(self) -> ReconciliationResult:
        return self.result.model_copy(update={"status": self.status, "trail": list(self.trail)})


def _some(items: list[str], between: str = ", ", shown: int = 20) -> str:
    """A list for a failure's message, cut to fit (the run's trail and result hold them all)."""
    more = f"{between}and {len(items) - shown} more" if len(items) > shown else ""
    return between.join(items[:shown]) + more


def _why(trouble: ActivityError | ApplicationError) -> str:
    if isinstance(trouble, Refused):
        return f"refused, a bug to report ({_short(trouble.message)})"
    return f"could not be saved ({_short(trouble.cause or trouble)})"


def _short(reason: object) -> str:
    """An error's text, cut to fit a discrepancy's detail (a long one must not fail the run)."""
    text = str(reason)
    return text if len(text) <= 300 else text[:297] + "..."


@workflow.defn(failure_exception_types=INVALID_REQUEST)
class ResolveDiscrepancyWorkflow(Process):
    """A person's command that starts no process of its own still goes through Temporal:
    retried, and visible in the UI."""

    flow_name = "reconciliation"

    @workflow.run
    async def run(self, request: DiscrepancyResolution) -> TrailView:
        from_outside(request.resolved_by)
        self.set_status("resolving")
        await self.send(
            self.command(
                ResolveDiscrepancy,
                "resolve",
                actor=request.resolved_by,
                credential=request.token,
                issued_at=self.started_at(),
                discrepancy_id=request.discrepancy_id,
                note=request.note,
            ),
            DECIDE,
        )
        self.set_status("resolved")
        return TrailView(status=self.status, trail=self.trail)

    @workflow.query(name="status")
    def status_view(self) -> TrailView:
        return TrailView(status=self.status, trail=self.trail)
