"""starter.py resume-flow: support sends a flow that is gone back to where it stopped.

    starter.py resume-flow refund-r-42 --note "terminated by mistake, ticket 881" --as support:sam

A flow that an operator terminated or cancelled, or that failed on a bug, leaves what it
held as it was: a refund's money reserved at billing, a request unknown at payments.
Reconciliation finds it (`flow_gone`) and tells support; this is how support has it
finish. The flow is reset (Temporal's Reset, as the web UI's button) to its last
completed workflow task — for a cancelled flow, the last one before the Cancel that ended
it — and goes on from there as a new run of the same workflow id. It sends the very same
command ids, so every owner answers what it already decided from its inbox and the gateway
from its idempotency key: nothing is decided, sent or paid twice, and nothing is re-judged
at today's date (a refund's 30-day window, an expired token).

A flow that was waiting for reconciliation when it ended, and whose answer reconciliation
found while it was gone (the signal had nobody to reach), is told it again after the reset:
payments' record of the command that found it, checked by the flow like any `gateway_answer`.
A flow still running and waiting for an answer reconciliation has found is told it the same
way, without a reset (a resume whose signal was cut short is simply run again).

A cancellation's child refund is resumed like any refund and pays out on its own; its
payment flow has ended `cancelled`, noting the refund unfinished (workflows/payment.py).

What it may not do: resume a flow that still runs (unless told as above) or that finished, or
decide anything. A flow that
failed on something its history holds (a child's end, an owner's refusal) fails again at
once: the verb waits a few seconds and says so (exit code 1). Temporal's namespace
permissions say who may reset a workflow (as for the UI button); the command line verifies
the support token as for every acting verb, and who resumed it is written into the reset's
reason, which the history keeps — with a fingerprint of the note, not the note: a reset's
reason is no payload, so the codec never encrypts it, and a note may name anyone. The verb
prints the note with its fingerprint, for the ticket it belongs to.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.reconciliation import answers_found_by_reconciliation
from cli.reconciliation import UsageError  # one line on stderr, exit code 2
from domain.contracts import Outcome
from domain.reconciliation.discrepancy import DiscrepancyKind
from domain.shared.actor import Role
from workflows.messages import InvalidRequest, OrderRequest, RefundRequest
from workflows.process import FLOW_STATUS

GONE = {
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TIMED_OUT: "timed out",
}
WAITS_FOR_RECONCILIATION = {"RefundWorkflow": RefundRequest, "PaymentWorkflow": OrderRequest}


class NotResumable(Exception):
    """The flow is not one to resume (running, finished, unknown): nothing was changed."""


def resume_point(events: Sequence[HistoryEvent], cancelled: bool) -> int:
    """The event id of the workflow task the flow is reset to: its last completed one or, for
    a flow a Cancel ended, its last one before that Cancel was asked (so the new run does not
    see the Cancel again)."""
    before = len(events)
    if cancelled:
        asked = [i for i, e in enumerate(events) if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED]
        before = asked[-1] if asked else before
    completed = [e.event_id for e in events[:before] if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
    if not completed:
        raise NotResumable("it never completed a workflow task: start it again instead")
    return completed[-1]


@dataclass(frozen=True)
class Resumed:
    workflow_id: str
    was: str  # how it had ended
    run_id: str  # the new run (a waiting run that was only told: that run)
    reset_to: int | None  # the event id of the workflow task it went back to (None: not reset)
    told: list[str]  # commands whose answer reconciliation had found while the flow was gone
    parent_id: str | None = None  # a child's parent, which ended with it: the new run reports to nobody
    still_open: tuple[str, ...] = ()  # `flow_gone` discrepancies about it, support's to resolve once it finished


async def resume(client: Client, uow_factory: Any, workflow_id: str, reason: str) -> Resumed:
    handle = client.get_workflow_handle(workflow_id)
    try:
        described = await handle.describe()
    except RPCError as missing:
        if missing.status is RPCStatusCode.NOT_FOUND:
            raise NotResumable(f"no flow {workflow_id!r} (see `starter.py list`)") from None
        raise
    events = [event async for event in handle.fetch_history_events()]
    request = await _start_request(client, described, events)
    answers = _answers_found_while_gone(uow_factory, described, request)
    still_open = _flow_gone_still_open(uow_factory, request)
    if described.status is WorkflowExecutionStatus.RUNNING and answers:
        # Still waiting for an answer reconciliation has found: a resume whose telling was
        # cut short (the reset happened, the signal did not), or a signal lost on its way.
        await _tell(handle, answers)
        return Resumed(
            workflow_id, "waiting for reconciliation", described.run_id, None, [a.command_id for a in answers],
            still_open=still_open,
        )
    if described.status not in GONE:
        what = "still runs" if described.status is WorkflowExecutionStatus.RUNNING else "finished"
        raise NotResumable(f"{workflow_id} {what}: there is nothing to resume")
    point = resume_point(events, cancelled=described.status is WorkflowExecutionStatus.CANCELED)
    reset = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=described.run_id),
            reason=reason,
            workflow_task_finish_event_id=point,
            request_id=str(uuid.uuid4()),
            # Signals and Updates sent after that point are kept. The Cancel that ended a
            # cancelled flow is not seen again because the point lies before it.
        )
    )
    # The dev server takes no signal with the reset itself (post-reset operations), so it
    # follows it; should it be lost, `resume-flow` again tells the waiting run (above).
    await _tell(client.get_workflow_handle(workflow_id, run_id=reset.run_id), answers)
    return Resumed(
        workflow_id, GONE[described.status], reset.run_id, point, [a.command_id for a in answers], described.parent_id,
        still_open,
    )


async def _tell(handle: Any, answers: list[Outcome]) -> None:
    for answer in answers:
        # The flow takes no fact from a signal: it reads payments' record of this command again.
        await handle.signal("gateway_answer", answer)


async def _start_request(
    client: Client, described: WorkflowExecutionDescription, events: Sequence[HistoryEvent]
) -> RefundRequest | OrderRequest | None:
    """The request a refund or payment flow was started with (None for any other flow, and for
    one whose request never fitted its message: it failed at its start, holding nothing)."""
    request_type = WAITS_FOR_RECONCILIATION.get(described.workflow_type)
    if request_type is None or not events:
        return None
    started = events[0].workflow_execution_started_event_attributes
    try:
        [request] = await client.data_converter.decode(started.input.payloads, [request_type])
    except InvalidRequest:
        return None
    return request


def _answers_found_while_gone(
    uow_factory: Any, described: WorkflowExecutionDescription, request: RefundRequest | OrderRequest | None
) -> list[Outcome]:
    """Payments' record of the answer reconciliation found for the request the flow was waiting
    for when it ended (its last FlowStatus `awaiting_reconciliation`); none for any other flow.
    The flow takes no fact from the signal: it reads payments' record of that command again."""
    if request is None or described.typed_search_attributes.get(FLOW_STATUS) != "awaiting_reconciliation":
        return []
    return answers_found_by_reconciliation(uow_factory, request.order_id, getattr(request, "refund_id", None))


def _flow_gone_still_open(uow_factory: Any, request: RefundRequest | OrderRequest | None) -> tuple[str, ...]:
    """The open `flow_gone` discrepancies about this flow's money: its refund's, or its payment's
    capture attempts'. Resuming does not resolve them: support does, once the flow has finished
    (a flow gone again is found again by the next pass either way)."""
    if request is None:
        return ()
    with uow_factory() as uow:
        if isinstance(request, RefundRequest):
            ids = {request.refund_id}
        else:
            payment = uow.payments.find(request.order_id)
            ids = {attempt.attempt_id for attempt in payment.attempts} if payment else set()
        return tuple(
            d.id for d in uow.discrepancies.with_status("open")
            if d.kind is DiscrepancyKind.FLOW_GONE and d.business_id in ids
        )


async def new_run_settled(client: Client, resumed: Resumed, within: float = 5.0) -> tuple[WorkflowExecutionStatus, bool]:
    """The new run's status, and whether a worker has run a workflow task of it yet, once it
    has run one or `within` seconds have passed: a flow that failed on something its history
    holds fails again at once."""
    handle = client.get_workflow_handle(resumed.workflow_id, run_id=resumed.run_id)
    deadline = asyncio.get_running_loop().time() + within
    async def ran() -> bool:
        return any([
            e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and e.event_id > (resumed.reset_to or 0)
            async for e in handle.fetch_history_events()
        ])

    while True:
        has_run = await ran()  # before describe: a task that closed the run is then seen closed
        status = (await handle.describe()).status
        if status is not WorkflowExecutionStatus.RUNNING and not has_run:
            has_run = await ran()  # it closed between the two reads: its history holds the task now
        if status is not WorkflowExecutionStatus.RUNNING or has_run or asyncio.get_running_loop().time() > deadline:
            return status, has_run
        await asyncio.sleep(0.2)


# -- the verb -----------------------------------------------------------------------------------
def add_verb(verbs: Any, common: argparse.ArgumentParser, derived_id: Any, reason: Any, actor: Any) -> None:
    """Add the verb, reusing starter.py's argument checkers (`derived_id`: a workflow id, made from
    ids people gave, e.g. `refund-{order}-cancellation`)."""
    p = verbs.add_parser(
        "resume-flow", parents=[common], help="support sends a terminated, cancelled or failed flow on from where it stopped"
    )
    p.add_argument("workflow_id", type=derived_id, help="the flow, e.g. refund-r-42 (a flow_gone discrepancy names it)")
    p.add_argument("--note", required=True, type=reason, help="why (printed; the history keeps its fingerprint)")
    p.add_argument("--as", dest="actor", type=actor, help="support:ID (or --token, or $SETTLEFLOW_TOKEN)")
    p.set_defaults(handler=resume_flow)


async def resume_flow(cli: Any) -> dict:
    from adapters import db
    from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types

    args = cli.args
    if args.actor.role is not Role.SUPPORT:
        raise UsageError(f"only support resumes a flow, not a {args.actor.role.value}")
    client = await cli.client()
    engine = db.make_engine(cli.settings.database_url)
    try:
        resumed = await resume(
            client,
            lambda: SqlUnitOfWork(engine, default_aggregate_types()),
            args.workflow_id,
            reset_reason(args.actor, args.note),
        )
    except NotResumable as refused:
        raise UsageError(f"cannot resume {args.workflow_id}: {refused}") from None
    finally:
        engine.dispose()
    if resumed.reset_to is None:
        cli.out(
            f"{resumed.workflow_id}: still waiting for reconciliation; told it what reconciliation found "
            f"({', '.join(resumed.told)}){_to_resolve(resumed)}",
            workflow_id=resumed.workflow_id, was=resumed.was, run_id=resumed.run_id, reset_to=None, told=resumed.told,
            still_open=list(resumed.still_open),
        )
        return {"workflow_id": resumed.workflow_id, "run_id": resumed.run_id}
    status, ran = await new_run_settled(client, resumed)
    if status in GONE:
        raise ResumedButEnded(
            f"{resumed.workflow_id} was resumed (new run {resumed.run_id}) and at once {GONE[status]} again: "
            f"what ended it is still in its history (`starter.py status {resumed.workflow_id}`, the web UI)"
        )
    told = f"; told it what reconciliation found meanwhile ({', '.join(resumed.told)})" if resumed.told else ""
    if resumed.parent_id:
        told += f"; its parent {resumed.parent_id} has ended: it finishes on its own"
    if not ran:
        told += f"; no worker has run it yet (is one running? `starter.py status {resumed.workflow_id}`)"
    cli.out(
        f"{resumed.workflow_id}: resumed ({resumed.was} before) from its workflow task at event {resumed.reset_to}, "
        f"new run {resumed.run_id}{told}{_to_resolve(resumed)}; note (kept out of Temporal, sha256:"
        f"{note_fingerprint(args.note)}): {args.note}",
        workflow_id=resumed.workflow_id,
        was=resumed.was,
        run_id=resumed.run_id,
        reset_to=resumed.reset_to,
        told=resumed.told,
        still_open=list(resumed.still_open),
    )
    return {"workflow_id": resumed.workflow_id, "run_id": resumed.run_id}


def reset_reason(actor: Any, note: str) -> str:
    """What the history keeps of a resume: who, and the note's fingerprint (not its words)."""
    return f"resumed by {actor}; note sha256:{note_fingerprint(note)}"


def note_fingerprint(note: str) -> str:
    return hashlib.sha256(note.encode()).hexdigest()[:16]


def _to_resolve(resumed: Resumed) -> str:
    if not resumed.still_open:
        return ""
    return (
        f"; still open for support: {', '.join(resumed.still_open)} — resolve once the flow has finished "
        f"(`starter.py resolve-discrepancy {resumed.still_open[0]} --note …`)"
    )


class ResumedButEnded(RuntimeError):
    """The reset happened, and the new run ended again at once (exit code 1)."""
