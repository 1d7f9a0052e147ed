"""What every process manager shares: how a command is sent to its owner, and
how the trail (command → owner → event) is kept for the status query and the UI.

Nothing here decides a business question; it only moves commands and records
which facts came back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from domain.contracts import REFUSALS as CONTRACT_REFUSALS
    from domain.contracts import Actor, Command, GatewayQuestion, Outcome
    from domain.shared.actor import Role
    from workflows.messages import PASSING_STATUSES, AddressedUpdate, InvalidRequest

C = TypeVar("C", bound=Command)

# Typed search attributes shown (and searchable) in the Temporal web UI.
ORDER_ID = SearchAttributeKey.for_keyword("OrderId")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
REFUND_ID = SearchAttributeKey.for_keyword("RefundId")
FLOW_STATUS = SearchAttributeKey.for_keyword("FlowStatus")
SEARCH_ATTRIBUTES = (ORDER_ID, CUSTOMER_ID, REFUND_ID, FLOW_STATUS)

FLOWS_QUEUE = "flows"  # where the process managers themselves run

# Workflows started before local activities came in replay with remote activities
# only: the marker this patch records tells the two apart (see Step.local).
LOCAL_DECISIONS = "local-decisions"

# The releases of the flows' code paths, newest first. A flow that starts on a release
# records its one patch marker and takes every change up to it (each patch id above, below
# and in the flow modules) without asking for them one by one: each patch asked costs a
# marker and an upsert of TemporalChangeVersion in every history (4 patches were 8 of a
# refund's 27 events). Flows recorded before a release ask each later change where they
# reach it, and replay their own path. A new release goes first in this list.
RELEASE = "flows-2026-12-07e"  # new flows start on it
FIRST_RELEASE = "flows-2026-12"  # flows started on it take the changes below where they reach them
RELEASES = (
    RELEASE, "flows-2026-12-07d", "flows-2026-12-07c", "flows-2026-12-07b", "flows-2026-12-07", "flows-2026-12-06h", "flows-2026-12-06g", "flows-2026-12-06f", "flows-2026-12-06e", "flows-2026-12-06d", "flows-2026-12-06c", "flows-2026-12-06b", "flows-2026-12-06",
    FIRST_RELEASE,
)

# A start request that does not fit its message (JSON with a wrong type or a missing
# field, from the web UI or `temporal workflow start --input`) fails the workflow at once
# with the reason, before any owner is asked, instead of failing its first task forever.
# Only InvalidRequest, raised by the start requests themselves: any other error later in
# a flow still fails just the task, which a fixed deployment can retry.
INVALID_REQUEST = [InvalidRequest]

# Changes made after FIRST_RELEASE, each with the release that folded it in (`Process.takes`).
# flows-2026-12-06: a flow waiting for reconciliation takes payments' recorded answer, not the
# signal's facts; a payment process told its order was delivered or came back asks billing
# before it ends.
VERIFIED_GATEWAY_ANSWERS = "verified-gateway-answers"
VERIFIED_FULFILMENT = "verified-fulfilment"
# flows-2026-12-06b: a cancellation accepted while a new card was being recorded is taken
# before the card is charged.
CANCELLED_BEFORE_RETRY = "cancelled-before-retry"
# flows-2026-12-06c: a fraud review's reminder goes out beside the review, so a mailbox outage
# holds up neither a reviewer's decision nor the expiry.
REMINDER_BESIDE_REVIEW = "reminder-beside-review"
# flows-2026-12-06d: a payment process told of a delivery or a return again while billing's
# record was being read reads it again, rather than let that read (begun before the news it
# may have missed) close the question.
READ_AGAIN_WHEN_TOLD_AGAIN = "read-again-when-told-again"
# flows-2026-12-06d: a flow runs only under the workflow id its request derives (`Process.runs_as`).
DERIVED_IDS_ONLY = "derived-ids-only"
SETTLEFLOW_IDS = ("refund-", "payment-", "ship-", "deliver-", "resolve-discrepancy-", "reconciliation-")
# flows-2026-12-06d: a delivery woken by `shipment_recorded` that shipping still knows nothing of
# (a forged or early signal) waits on for the rest of its time, rather than failing.
WAITS_ON_AFTER_A_FALSE_WAKE = "waits-on-after-a-false-wake"
# flows-2026-12-06d: after its own answers, each reconciliation pass tells flows still waiting
# whose answer an earlier pass found but could not tell them (the signal lost).
TELLS_WHAT_WAS_NOT_TOLD = "tells-what-was-not-told"
# flows-2026-12-06e: the daily reconciliation flags money a cancelled order has owed its customer
# for over an hour with no refund on its way (a review's "no", a declined refund, none started).
TRACKS_MONEY_OWED = "tracks-money-owed"
# flows-2026-12-06e: a shipment recorded for an order cancelled meanwhile (a cancellation racing
# the shipment, or a departure recorded late) has its parcel stopped by the shipment flow.
STOPS_A_CANCELLED_ORDERS_PARCEL = "stops-a-cancelled-orders-parcel"
# flows-2026-12-06e: a delivery recorded for a cancelled order (billing's CancelledOrderDelivered)
# is told to support by the delivery flow.
TELLS_SUPPORT_A_CANCELLED_ORDER_ARRIVED = "tells-support-a-cancelled-order-arrived"
# flows-2026-12-06e: a cancellation accepted while the order was being placed goes before its
# first capture: a cancelled order is not charged (as `cancelled-before-retry` for retries).
CANCELLED_BEFORE_FIRST_CAPTURE = "cancelled-before-first-capture"
# flows-2026-12-06f: a delivery recorded for a parcel stopped for a refund (billing's
# ReturnedParcelDelivered: a late scan, or a stop that did not take) is told to support.
TELLS_SUPPORT_A_STOPPED_PARCEL_ARRIVED = "tells-support-a-stopped-parcel-arrived"
# flows-2026-12-06f: the daily reconciliation flags a stop of a parcel billing asked for over an
# hour ago that nobody answered, its flow no longer running (`parcel_not_stopped`).
FLAGS_UNANSWERED_PARCEL_STOPS = "flags-unanswered-parcel-stops"
# flows-2026-12-06f: a capture attempt that never reached payments (its step ran out of time
# before recording it) is sent again as an attempt: no usable answer again makes it unknown,
# where the flow used to fail with the card perhaps charged.
SENDS_A_CAPTURE_AGAIN_GUARDED = "sends-a-capture-again-guarded"
# flows-2026-12-06f: a cancelled paid order's refund starts beside the customer's notice of the
# cancellation, not after it: a mailbox outage no longer holds the money back.
REFUNDS_BESIDE_THE_NOTICE = "refunds-beside-the-notice"
# flows-2026-12-06f: a refund whose intercept brought the parcel back, while another refund of
# the order said no meanwhile, tells support what the return leaves owed (billing's RefundOwed).
TELLS_SUPPORT_WHAT_A_RETURN_OWES = "tells-support-what-a-return-owes"
# flows-2026-12-06g: the daily reconciliation's check for stranded reservations that cannot be
# read (Temporal or the database unavailable for its tries) is noted, and the run goes on to
# money owed and unanswered stops, as its other daily reads do; it used to fail the run.
NOTES_AN_UNREAD_STRANDED_CHECK = "notes-an-unread-stranded-check"
# flows-2026-12-06g: a daily reconciliation run started by its schedule compares the day before
# the time it was scheduled for (`TemporalScheduledStartTime`), not before its start: a run the
# schedule caught up late (a server outage past 02:00) compares the day it was meant for.
COMPARES_THE_SCHEDULED_DAY = "compares-the-scheduled-day"
# flows-2026-12-06g: a delivery still without its shipment after WAIT_FOR_SHIPMENT tells support
# and waits on for it, rather than failing: the delivery, a fact, is never dropped by a timer.
DELIVERY_WAITS_ON_FOR_ITS_SHIPMENT = "delivery-waits-on-for-its-shipment"
# flows-2026-12-06h: a parcel stop that shipping carried out after billing had recorded the parcel
# delivered (billing's ReturnedParcelDelivered) is told to support by the flow that asked for it,
# as a delivery recorded after the stop is told by the delivery flow.
TELLS_SUPPORT_A_STOP_AFTER_DELIVERY = "tells-support-a-stop-after-delivery"
# flows-2026-12-06h: a capture attempt that never reached payments is not sent again once a
# cancellation was accepted meanwhile: the order is cancelled first (nothing was charged), as
# before a first capture or a retry; only if billing refuses is the attempt sent again.
CANCELLED_BEFORE_SENDING_AGAIN = "cancelled-before-sending-again"
# flows-2026-12-06h: the customer's receipt goes out beside the payment process, which rests as
# `paid` at once: a mailbox outage holds up the message, not a cancellation accepted meanwhile
# (nor the refund paying it back). The flow ends only once the receipt has gone out.
RECEIPT_BESIDE_THE_PROCESS = "receipt-beside-the-process"
# flows-2026-12-06h: recovery's next attempt is timed from the decline, not from when the
# customer's notice of it went out (a mailbox outage no longer pushes the 1/3/7 days back).
RECOVERY_TIMED_FROM_THE_DECLINE = "recovery-timed-from-the-decline"
# flows-2026-12-06h: a fraud team's reminder that could not go out (its day of tries ran out)
# is noted and the refund flow ends as decided; it used to fail the flow after the fact.
REMINDER_FAILURE_IS_NOTED = "reminder-failure-is-noted"
# flows-2026-12-07: what a refund tells support before it pays (a stop that took after the parcel
# was delivered; what a return leaves owed) goes out beside the payout: a mailbox outage holds up
# the message, not the money. The flow ends only once it has gone out.
TELLS_SUPPORT_BESIDE_THE_PAYOUT = "tells-support-beside-the-payout"
# flows-2026-12-07b: a refund paid out is credited on the order's invoice (invoicing's credit note,
# one per refund), before the customer is told.
CREDITS_THE_INVOICE = "credits-the-invoice"
# flows-2026-12-07c: the daily reconciliation asks invoicing to credit refunds paid out with no
# credit note (paid before flows-2026-12-07b, or by a flow that ended between the two steps).
CREDITS_WHAT_REFUNDS_LEFT_UNCREDITED = "credits-what-refunds-left-uncredited"
# flows-2026-12-07d: a credit note the daily pass cannot ask for (invoicing failing, not refusing)
# is noted after a few tries and asked again the next day; it no longer holds the pass, and the
# passes after it, for ever.
LEAVES_A_STUCK_CREDIT_FOR_THE_NEXT_PASS = "leaves-a-stuck-credit-for-the-next-pass"
# flows-2026-12-07e: a discrepancy the reconciliation cannot record (or support cannot be told
# of) is noted after about an hour of tries; the pass goes on and ends failed, naming it. Before,
# it was retried for ever, holding that pass and, the schedules skipping overlaps, every later one.
NOTES_A_DISCREPANCY_IT_CANNOT_RECORD = "notes-a-discrepancy-it-cannot-record"
# flows-2026-12-07e too: a daily pass whose list of open gateway requests cannot be read (the
# database away for half a minute at 02:00) notes it and compares the day; before, it failed
# the run there, and that day's settlements were compared by nobody.
COMPARES_THOUGH_OPEN_REQUESTS_ARE_UNREAD = "compares-though-open-requests-are-unread"
# flows-2026-12-07e too: a pass asks the gateway about at most `lookups_per_pass` open requests
# (a sample of them when there are more: the rest the next pass), and stops asking after three
# in a row the gateway could not answer (it is down: the rest the next pass). Before, a backlog
# after a gateway outage was asked in one pass: hours long, its history past Temporal's limit.
ASKS_A_BOUNDED_NUMBER_PER_PASS = "asks-a-bounded-number-per-pass"
FOLDED_INTO = {
    VERIFIED_GATEWAY_ANSWERS: "flows-2026-12-06",
    VERIFIED_FULFILMENT: "flows-2026-12-06",
    CANCELLED_BEFORE_RETRY: "flows-2026-12-06b",
    REMINDER_BESIDE_REVIEW: "flows-2026-12-06c",
    READ_AGAIN_WHEN_TOLD_AGAIN: "flows-2026-12-06d",
    DERIVED_IDS_ONLY: "flows-2026-12-06d",
    WAITS_ON_AFTER_A_FALSE_WAKE: "flows-2026-12-06d",
    TELLS_WHAT_WAS_NOT_TOLD: "flows-2026-12-06d",
    TRACKS_MONEY_OWED: "flows-2026-12-06e",
    STOPS_A_CANCELLED_ORDERS_PARCEL: "flows-2026-12-06e",
    TELLS_SUPPORT_A_CANCELLED_ORDER_ARRIVED: "flows-2026-12-06e",
    CANCELLED_BEFORE_FIRST_CAPTURE: "flows-2026-12-06e",
    TELLS_SUPPORT_A_STOPPED_PARCEL_ARRIVED: "flows-2026-12-06f",
    FLAGS_UNANSWERED_PARCEL_STOPS: "flows-2026-12-06f",
    SENDS_A_CAPTURE_AGAIN_GUARDED: "flows-2026-12-06f",
    REFUNDS_BESIDE_THE_NOTICE: "flows-2026-12-06f",
    TELLS_SUPPORT_WHAT_A_RETURN_OWES: "flows-2026-12-06f",
    NOTES_AN_UNREAD_STRANDED_CHECK: "flows-2026-12-06g",
    COMPARES_THE_SCHEDULED_DAY: "flows-2026-12-06g",
    DELIVERY_WAITS_ON_FOR_ITS_SHIPMENT: "flows-2026-12-06g",
    TELLS_SUPPORT_A_STOP_AFTER_DELIVERY: "flows-2026-12-06h",
    CANCELLED_BEFORE_SENDING_AGAIN: "flows-2026-12-06h",
    RECEIPT_BESIDE_THE_PROCESS: "flows-2026-12-06h",
    RECOVERY_TIMED_FROM_THE_DECLINE: "flows-2026-12-06h",
    REMINDER_FAILURE_IS_NOTED: "flows-2026-12-06h",
    TELLS_SUPPORT_BESIDE_THE_PAYOUT: "flows-2026-12-07",
    CREDITS_THE_INVOICE: "flows-2026-12-07b",
    CREDITS_WHAT_REFUNDS_LEFT_UNCREDITED: "flows-2026-12-07c",
    LEAVES_A_STUCK_CREDIT_FOR_THE_NEXT_PASS: "flows-2026-12-07d",
    NOTES_A_DISCREPANCY_IT_CANNOT_RECORD: "flows-2026-12-07e",
    COMPARES_THOUGH_OPEN_REQUESTS_ARE_UNREAD: "flows-2026-12-07e",
    ASKS_A_BOUNDED_NUMBER_PER_PASS: "flows-2026-12-07e",
}

# Errors an owner raises when a command makes no sense; retrying cannot help. Read from the
# domain's errors, so a new kind of refusal is never retried by mistake.
REFUSALS = CONTRACT_REFUSALS


@dataclass(frozen=True)
class Step:
    """Process concerns of one kind of step: how long it may take and how it is retried."""

    start_to_close: timedelta
    retry: RetryPolicy
    schedule_to_close: timedelta | None = None
    # Run as a local activity, inside the workflow's own task on the flows worker, instead
    # of a round trip through the owner's task queue. Only for short, database-only steps
    # whose owner is idempotent by command id: a crash re-runs the step and the owner
    # answers with its first outcome. Never for a call to the gateway.
    local: bool = False


def retry_until_done(maximum_interval: timedelta = timedelta(minutes=5)) -> RetryPolicy:
    """For steps that must happen (recording a fact, compensation): retry without
    a limit on transient trouble, stop at once when the owner refuses."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=maximum_interval,
        non_retryable_error_types=REFUSALS,
    )


class Refused(ApplicationError):
    """The owner refused the command (not authorized, invalid, not found): nothing changed,
    and asking again cannot help. Uncaught, it fails the workflow with the owner's words."""

    def __init__(self, refusal: ApplicationError) -> None:
        super().__init__(refusal.message, type=refusal.type, non_retryable=True)
        self.kind = refusal.type or "Refused"
        self.code = str(refusal.details[0]) if refusal.details else ""  # the owner's reason code

    @classmethod
    def invalid(cls, command_name: str, bad: ValidationError) -> Refused:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or command_name}: {e['msg']}" for e in bad.errors())
        return cls(ApplicationError(f"invalid {command_name}: {problems}", type="InvalidCommand"))

    @classmethod
    def from_failure(cls, failure: BaseException) -> Refused | None:
        # A remote activity wraps the owner's error in an ActivityError; a local activity
        # hands it over as it is. Either way the workflow sees one kind of refusal.
        cause = failure.cause if isinstance(failure, ActivityError) else failure
        if isinstance(cause, ApplicationError) and cause.type in REFUSALS:
            return cls(cause)
        return None


def refuse_role(actor: Actor, command_type: type[Command], doing: str) -> None:
    """For Update validators: refuse at the door an actor whose role may not issue the
    command the Update would become (the roles come from the command's `issued_by`)."""
    if actor.role not in command_type.issued_by:
        allowed = ", ".join(sorted(r.value for r in command_type.issued_by))
        raise ValueError(f"a {actor.role.value} cannot {doing} (needs {allowed})")


def refuse_outsider(actor: Actor | None, token: str | None, command_type: type[Command], doing: str) -> None:
    """For Update validators (an Update always comes from outside): it must name someone,
    never `system`, carry a token, and come from a role that may issue the command. The
    token itself is verified by the owner's activity, which answers a forged one."""
    if actor is None:
        raise ValueError(f"nobody named: say who wants to {doing}")
    if actor.role is Role.SYSTEM:
        raise ValueError("system is settleflow's workflows alone: an Update from outside cannot act as system")
    if not token:
        raise ValueError(f"no token: {actor} must send a signed token to {doing}")
    refuse_role(actor, command_type, doing)


def addressed_here(update: AddressedUpdate) -> None:
    """Refuse an Update whose argument names another flow (or none): a copy of another flow's."""
    here = workflow.info().workflow_id
    if update.to_flow != here:
        raise ValueError(f"this request is addressed to {update.to_flow or 'no flow'}, not to {here}")


def from_outside(actor: Actor) -> None:
    """A start request claims `system` only when one of settleflow's own workflows started
    this one as its child (Temporal records the parent; nobody outside can forge it).
    Anyone else naming `system` is refused before any owner is asked."""
    if actor.role is Role.SYSTEM and workflow.info().parent is None:
        raise InvalidRequest("system is settleflow's workflows alone: a request from outside cannot act as system")


class Process:
    """Base for process managers: sends commands, keeps the trail and the status."""

    flow_name = "process"

    def __init__(self) -> None:
        self.status = "started"
        self.release: str | None = None  # the release this flow started on (see begin)
        self.on_release = False  # started on a release: takes every change up to FIRST_RELEASE
        self.unshown: dict[SearchAttributeKey[str], str] = {}  # search attributes for the next resting status
        self.searchable_status = ""  # the FlowStatus last written
        self.trail: list[str] = []
        self.correlation_id: str | None = None  # `order-{order_id}` once a command names the order
        self.cause: str | None = None  # the newest event an owner answered with
        self.asides: list[tuple[str, asyncio.Task[Outcome]]] = []  # notices going out beside the flow

    # -- which code path this flow runs --------------------------------------------
    def begin(self) -> None:
        """Asked once, before the first command (asked later, after a local activity that
        outlived its workflow task, a replay could meet the marker too late). A new flow
        records RELEASE's marker alone; one recorded earlier finds its own release's."""
        self.release = next((release for release in RELEASES if workflow.patched(release)), None)
        self.on_release = self.release is not None

    def runs_as(self, derived_id: str) -> None:
        """A flow under one of settleflow's ids (SETTLEFLOW_IDS) runs only under the one its
        request derives (`refund-{refund_id}`, `payment-{order_id}`, ...). Command ids are
        `{workflow id}/{step}` and owners answer an id they saw with its first answer: a flow
        started under another's id — a refund's, an order's cancellation refund's, taken before
        settleflow starts it — would be answered with facts that are not its own, or leave its own
        for that flow to be answered with. (An id outside settleflow's, a replay's or a test's,
        meets none of settleflow's flows.) Asked at the start, after `begin`."""
        actual = workflow.info().workflow_id
        if actual != derived_id and actual.startswith(SETTLEFLOW_IDS) and self.takes(DERIVED_IDS_ONLY):
            raise InvalidRequest(f"this request runs as {derived_id}, not as {actual}: start it under that id")

    def started_by_its_payment(self, request: Any) -> None:
        """A refund settleflow asks for itself (`system`) is a cancelled order's: started by that
        order's payment flow, and nowhere else (any workflow can be a parent; billing refunds for
        `system` only what a cancellation left owed). Part of `derived-ids-only`."""
        parent = workflow.info().parent
        by_its_payment = parent is not None and parent.workflow_id == f"payment-{request.order_id}"
        if request.requested_by.role is Role.SYSTEM and not by_its_payment and self.takes(DERIVED_IDS_ONLY):
            raise InvalidRequest(f"a refund settleflow asks for itself is started by payment-{request.order_id} alone")

    def runs_with(self, change: str) -> bool:
        """Whether this flow takes a change made before FIRST_RELEASE, patched in under
        `change`: every flow started on a release does; an older one as its history says."""
        return self.on_release or workflow.patched(change)

    def takes(self, change: str) -> bool:
        """Whether this flow takes a change made after FIRST_RELEASE: a flow started on the
        release that folded it in, or a later one, does without asking; an older one asks where
        it reaches the change (a marker only in the flows that get there). Ask it where the
        flow has just woken (a start, a signal, an Update, a timer), never right after a local
        activity (see `begin`)."""
        return self.folded_in(change) or workflow.patched(change)

    def folded_in(self, change: str) -> bool:
        """Whether this flow started on a release that folded `change` in (asks nothing: safe
        anywhere, unlike `takes`, whose answer for an older flow is fixed where it is first asked)."""
        return self.release in RELEASES[: RELEASES.index(FOLDED_INTO[change]) + 1]

    # -- sending commands ---------------------------------------------------------
    def command(
        self, command_type: type[C], step: str, actor: Actor | None = None, issued_at: datetime | None = None,
        **fields: Any,
    ) -> C:
        """A command with a deterministic id (`{workflow_id}/{step}`): an activity
        retry, a worker crash or a replay sends the very same command. `issued_at` is
        when the request behind it reached settleflow (see `started_at`, or the time an
        Update was accepted); without it, the time of this workflow task.

        Trace: the correlation id is the order's (`order-{order_id}`, from the first
        command that names an order), so payment, shipping, delivery, refunds and a
        cancellation's child refund form one chain; the causation id is the last event
        an owner answered with, or `{workflow_id}/request` (the request that started
        the flow, a person's or a parent flow's) before any."""
        info = workflow.info()
        if self.correlation_id is None:
            order_id = fields.get("order_id")
            self.correlation_id = f"order-{order_id}" if order_id else info.workflow_id
        try:
            return command_type(
                command_id=f"{info.workflow_id}/{step}",
                actor=actor or Actor.system(self.flow_name),
                issued_at=issued_at or workflow.now(),
                correlation_id=self.correlation_id,
                causation_id=self.cause or f"{info.workflow_id}/request",
                **fields,
            )
        except ValidationError as bad:
            # What cannot become a command can never succeed: refuse it as its owner would
            # (failing the workflow, or only the Update that asked), never a task retried forever.
            raise Refused.invalid(command_type.__name__, bad) from None

    @staticmethod
    def started_at() -> datetime:
        """When the start request reached settleflow: the workflow's start, not the time
        a worker first got to it (a worker outage or a backlog must not move a decision)."""
        return workflow.info().workflow_start_time

    async def send(self, command: Command, step: Step, causes_next: bool = True) -> Outcome:
        """Send a command to its owner and return the owner's outcome. Raises Refused when
        the owner refuses it, ActivityError when the step ran out of time or retries.
        `causes_next=False` for a side step (a reminder beside a wait): its facts do not
        become the cause of the flow's next command."""
        try:
            outcome = await self._execute(command, step)
        except (ActivityError, ApplicationError) as failed:
            if refused := Refused.from_failure(failed):
                raise refused from failed
            raise
        if outcome.events and causes_next:  # the next command is caused by the newest fact
            self.cause = outcome.events[-1].event_id
        self.note(f"{command.name()} → {command.owner} → {', '.join(outcome.event_names) or 'nothing new'}")
        return outcome

    def send_beside(self, command: Command, step: Step, what: str) -> None:
        """Send a notice beside the flow: none of its steps waits for it (a mailbox outage holds
        up the message, not the money), and its facts cause none of them. The flow ends only once
        it has gone out (`asides_gone_out`)."""
        self.asides.append((what, asyncio.create_task(self.send(command, step, causes_next=False))))

    async def asides_gone_out(self) -> None:
        """Notices still going out beside the flow go out before it ends, however it ends: an
        operator's Cancel meanwhile does not stop them (what they tell has happened). One that
        cannot go out (its owner refused it) is noted."""
        asides, self.asides = self.asides, []
        for what, notice in asides:
            await self.gone_out(notice, what)
            try:
                notice.result()
            except (ApplicationError, ActivityError, asyncio.CancelledError) as failed:  # each is waited for
                self.note(f"{what} did not go out: {failed or type(failed).__name__}")

    async def gone_out(self, notice: asyncio.Task[Outcome], what: str) -> None:
        """Wait until a notice going out beside the flow is done, sent or failed (the caller reads
        which). An operator's Cancel meanwhile does not stop it: it is noted, and waited for."""
        while not notice.done():
            try:
                await asyncio.shield(notice)
            except asyncio.CancelledError:
                if notice.cancelled():
                    return
                self.note(f"cancel asked while {what} was still going out: it goes out first")
            except (ApplicationError, ActivityError):  # a refusal, or a local activity's own error
                return

    async def _execute(self, command: Command, step: Step) -> Outcome:
        summary = f"{command.name()} → {command.owner}"
        if step.local and self.runs_with(LOCAL_DECISIONS):
            outcome: Outcome = await workflow.execute_local_activity(
                command.activity_name(),
                command,
                result_type=Outcome,
                start_to_close_timeout=step.start_to_close,
                schedule_to_close_timeout=step.schedule_to_close,
                retry_policy=step.retry,
                summary=summary,
            )
        else:
            outcome = await workflow.execute_activity(
                command.activity_name(),
                command,
                task_queue=command.owner,
                result_type=Outcome,
                start_to_close_timeout=step.start_to_close,
                schedule_to_close_timeout=step.schedule_to_close,
                retry_policy=step.retry,
                summary=summary,
            )
        return outcome

    @staticmethod
    async def look_up(activity_name: str, argument: Any, result_type: Any, step: Step) -> Any:
        """Read what an owner has recorded (`owner.What`: decides nothing, changes nothing), as a
        local activity on this worker, with the step's timeout and retries."""
        owner, what = activity_name.split(".", 1)
        return await workflow.execute_local_activity(
            activity_name,
            argument,
            result_type=result_type,
            start_to_close_timeout=step.start_to_close,
            retry_policy=step.retry,
            summary=f"{what} → {owner}",
        )

    @staticmethod
    async def wait_for(condition: Any, timeout: timedelta, summary: str | None = None) -> bool:
        """Wait for a person (or another process); False when the time ran out."""
        try:
            await workflow.wait_condition(condition, timeout=timeout, timeout_summary=summary)
            return True
        except TimeoutError:
            return False

    # -- what people see ----------------------------------------------------------
    def note(self, line: str) -> None:
        self.trail.append(line)
        self._show()

    def set_status(self, status: str) -> None:
        """The status query and the UI's details always show the step; the FlowStatus search
        attribute (a history event and a visibility write each) shows where the flow rests:
        a status passed within one run of decisions (PASSING_STATUSES) is not written there,
        and search attributes learnt on the way go with the next one that is."""
        self.status = status
        if not self.on_release:  # flows recorded before RELEASE wrote every status at once
            workflow.upsert_search_attributes([FLOW_STATUS.value_set(status)])
        elif status not in PASSING_STATUSES and (status != self.searchable_status or self.unshown):
            shown = [key.value_set(value) for key, value in self.unshown.items()]
            workflow.upsert_search_attributes([*shown, FLOW_STATUS.value_set(status)])
            self.searchable_status = status
            self.unshown.clear()
        self._show()

    def show_in_search(self, key: SearchAttributeKey[str], value: str) -> None:
        """A search attribute learnt along the way (the customer of a refund): written with
        the next resting status on RELEASE, at once before it."""
        if self.on_release:
            self.unshown[key] = value
        else:
            workflow.upsert_search_attributes([key.value_set(value)])

    def _show(self) -> None:
        lines = "\n".join(f"{i}. {line}" for i, line in enumerate(self.trail, 1))
        workflow.set_current_details(f"**{self.status}**\n\n{lines}")

    async def finish(self) -> None:
        # An Update still in flight must get its answer before the workflow closes.
        await workflow.wait_condition(workflow.all_handlers_finished)


class AwaitsReconciliation:
    """Mixed into a Process (before it) that may have to wait for reconciliation to learn what the gateway really
    did with a request whose answer was lost (the signal `gateway_answer`)."""

    @workflow.signal
    def gateway_answer(self, outcome: Outcome) -> None:
        """Reconciliation says which of payments' commands found the answer (`outcome.command_id`).
        A signal names no sender: its facts are not taken, payments' record of that command is.
        Every one is kept until read: a stray signal arriving after the genuine one must not
        push it out (reconciliation tells a flow once; the question is then no longer open)."""
        self.gateway_answers_told().append(outcome)

    @workflow.query(name="waits_for_reconciliation")
    def waits_for_reconciliation(self) -> bool:
        """Whether this flow waits for reconciliation's word with none unread: asked before an
        answer is told again (a flow that took its answer may rest on its status a while)."""
        return bool(self.__dict__.get("_waits_for_word")) and not self.gateway_answers_told()

    def gateway_answers_told(self) -> list[Outcome]:
        """`gateway_answer` signals not read yet, in the order they came."""
        if "_told" not in self.__dict__:
            self._told: list[Outcome] = []
        return self._told

    async def reconciliation_answer(
        self, kind: Literal["capture", "refund"], order_id: str, business_id: str, step: Step
    ) -> Outcome:
        """Wait for reconciliation's word, and take the answer payments recorded for the command
        it names, about this refund or capture attempt (`business_id`; `step` runs the read).
        A signal whose command recorded no answer to this question — forged, or about another
        refund or attempt — is noted and changes nothing: the flow waits on. An operator's Cancel
        meanwhile changes nothing either: only the gateway's answer may end a money question
        (Terminate stops the flow, and reconciliation then records the discrepancy for support)."""
        waiting = self.gateway_answers_told()
        self._waits_for_word = True
        while True:
            while not waiting:
                try:
                    await workflow.wait_condition(lambda: bool(waiting))
                except asyncio.CancelledError:
                    self.note("Cancel while waiting for reconciliation: the gateway's answer still decides")
            # The newest first, as when only the last signal was kept (histories replay as they
            # ran); the ones before it wait their turn instead of being dropped.
            told = waiting.pop()
            if not self.takes(VERIFIED_GATEWAY_ANSWERS):
                self.note(f"reconciliation: payments answered {', '.join(told.event_names)}")
                self._waits_for_word = False
                return told  # recorded before answers were checked: replays as it ran
            question = GatewayQuestion(kind=kind, order_id=order_id, business_id=business_id, command_id=told.command_id)
            recorded = await self.recorded_answer(question, step)
            if recorded is None:
                self.note(f"ignored a gateway answer payments never recorded for this {kind} ({told.command_id})")
                continue
            self.note(f"reconciliation: payments answered {', '.join(recorded.event_names)}")
            self._waits_for_word = False
            return recorded

    async def recorded_answer(self, question: GatewayQuestion, step: Step) -> Outcome | None:
        """Payments' recorded answer to `question`, or None. An operator's Cancel while payments
        is asked changes nothing, as while waiting: the read is asked again."""
        while True:
            try:
                return await self.look_up(GatewayQuestion.activity_name, question, Outcome | None, step)
            except (asyncio.CancelledError, ActivityError) as stopped:
                if not is_cancelled_exception(stopped):  # the read cancelled with the flow, or Cancel itself
                    raise
                self.note("Cancel while asking payments for the gateway's answer: the answer still decides")
