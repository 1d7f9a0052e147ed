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

A flow that waits for reconciliation and whose answer reconciliation found while it was
gone (the signal had nobody to reach) is told again: payments' record of the command that
found it, checked by the flow like any `gateway_answer`.

What it may not do: resume a flow that still runs or that finished, or decide anything.
Temporal's namespace permissions say who may reset a workflow (as for the UI button); who
resumed it and why is written into the reset's reason, which the history keeps.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, ResetReapplyExcludeType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from cli.reconciliation import UsageError  # one line on stderr, exit code 2
from domain.contracts import Outcome
from domain.shared.actor import Role
from workflows.messages import OrderRequest, RefundRequest

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
    run_id: str  # the new run
    reset_to: int  # the event id of the workflow task it went back to
    told: list[str]  # commands whose answer reconciliation had found while the flow was gone


async def resume(client: Client, uow_factory: Any, workflow_id: str, reason: str) -> Resumed:
    handle = client.get_workflow_handle(workflow_id)
    try:
        described = await handle.describe()
    except RPCError as missing:
        if missing.status is RPCStatusCode.NOT_FOUND:
            raise NotResumable(f"no flow {workflow_id!r} (see `starter.py list`)") from None
        raise
    if described.status not in GONE:
        what = "still runs" if described.status is WorkflowExecutionStatus.RUNNING else "finished"
        raise NotResumable(f"{workflow_id} {what}: there is nothing to resume")
    events = [event async for event in handle.fetch_history_events()]
    point = resume_point(events, cancelled=described.status is WorkflowExecutionStatus.CANCELED)
    reset = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=described.run_id),
            reason=reason,
            workflow_task_finish_event_id=point,
            request_id=str(uuid.uuid4()),
            # Signals and Updates sent after that point are kept; the Cancel that ended it is not.
            reset_reapply_exclude_types=[ResetReapplyExcludeType.RESET_REAPPLY_EXCLUDE_TYPE_CANCEL_REQUEST],
        )
    )
    told = await _tell_answers_found_meanwhile(client, uow_factory, workflow_id, described.workflow_type, events)
    return Resumed(workflow_id, GONE[described.status], reset.run_id, point, told)


async def _tell_answers_found_meanwhile(
    client: Client, uow_factory: Any, workflow_id: str, workflow_type: str, events: Sequence[HistoryEvent]
) -> list[str]:
    request_type = WAITS_FOR_RECONCILIATION.get(workflow_type)
    if request_type is None or not events:
        return []
    started = events[0].workflow_execution_started_event_attributes
    [request] = await client.data_converter.decode(started.input.payloads, [request_type])
    with uow_factory() as uow:
        payment = uow.payments.find(request.order_id)
        if payment is None:
            return []
        found = payment.answers_found_by_reconciliation(getattr(request, "refund_id", None))
        recorded = [Outcome.model_validate(r) for c in found if (r := uow.processed_result(c)) is not None]
    handle = client.get_workflow_handle(workflow_id)
    for outcome in recorded:
        # The flow takes no fact from a signal: it reads payments' record of this command again.
        await handle.signal("gateway_answer", outcome)
    return [outcome.command_id for outcome in recorded]


# -- the verb -----------------------------------------------------------------------------------
def add_verb(verbs: Any, common: argparse.ArgumentParser, identifier: Any, reason: Any, actor: Any) -> None:
    p = verbs.add_parser(
        "resume-flow", parents=[common], help="support sends a terminated, cancelled or failed flow on from where it stopped"
    )
    p.add_argument("workflow_id", type=identifier, help="the flow, e.g. refund-r-42 (a flow_gone discrepancy names it)")
    p.add_argument("--note", required=True, type=reason, help="why (kept in the flow's history)")
    p.add_argument("--as", dest="actor", type=actor, help="support:ID (or --token, or $SETTLEFLOW_TOKEN)")
    p.set_defaults(handler=resume_flow)


async def resume_flow(cli: Any) -> dict:
    from adapters import db
    from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types

    args = cli.args
    if args.actor.role is not Role.SUPPORT:
        raise UsageError(f"only support resumes a flow, not a {args.actor.role.value}")
    engine = db.make_engine(cli.settings.database_url)
    try:
        resumed = await resume(
            await cli.client(),
            lambda: SqlUnitOfWork(engine, default_aggregate_types()),
            args.workflow_id,
            f"resumed by {args.actor}: {args.note}",
        )
    except NotResumable as refused:
        raise UsageError(f"cannot resume {args.workflow_id}: {refused}") from None
    finally:
        engine.dispose()
    told = f"; told it what reconciliation found meanwhile ({', '.join(resumed.told)})" if resumed.told else ""
    cli.out(
        f"{resumed.workflow_id}: resumed ({resumed.was} before) from its workflow task at event {resumed.reset_to}, "
        f"new run {resumed.run_id}{told}",
        workflow_id=resumed.workflow_id,
        was=resumed.was,
        run_id=resumed.run_id,
        reset_to=resumed.reset_to,
        told=resumed.told,
    )
    return {"workflow_id": resumed.workflow_id, "run_id": resumed.run_id}

