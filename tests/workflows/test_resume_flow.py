"""A flow that is gone is resumed by support (`starter.py resume-flow`, cli/resume.py) and
finishes what it held, deciding, sending and paying nothing twice.

Temporal's Reset is not in the time-skipping test server, so these run on a dev server of
their own (real time: no test here waits for a timer).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.testing import WorkflowEnvironment

from activities.payments import PaymentsActivities
from activities.reconciliation import WAITING_FLOWS
from adapters.codec import data_converter
from adapters.temporal import AddressUpdates
from adapters.seal import SealsCommands
from cli.resume import NotResumable, new_run_settled, reset_reason, resume
from devstack import temporal_cli
from domain.payments.payment import GatewayRefundStatus
from domain.shared.actor import Actor, Role
from domain.contracts import CapturePayment, ReconcileGatewayRefund, ReviewDecision
from tests.unit.builders import command
from tests.tokens import signed
from tests.workflows.flows import keep_history, new_id, start_refund, wait_for_status
from tests.workflows.test_reconciliation import ReconHarness, delivered, recon_harness, reconcile, start_payment
from workflows.messages import CancellationRequest, ReviewResolution
from workflows.payment import PaymentWorkflow
from workflows.process import FLOWS_QUEUE, SEARCH_ATTRIBUTES
from workflows.refund import RefundWorkflow

SUPPORT = reset_reason("support:sam", "terminated by mistake")  # who, and the note's fingerprint
ANALYST = Actor(role=Role.FRAUD_ANALYST, id="a-1")
SUPPORT_AGENT = Actor(role=Role.SUPPORT, id="sam")


@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local(
        data_converter=data_converter(), interceptors=[AddressUpdates(), SealsCommands()], dev_server_existing_path=temporal_cli(),
        search_attributes=list(SEARCH_ATTRIBUTES),
    )
    yield environment
    await environment.shutdown()


@pytest.fixture
async def harness(dev_server: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[ReconHarness]:
    async with recon_harness(dev_server, tmp_path) as harness:
        yield harness


async def large_refund_under_review(harness: ReconHarness):
    order_id = await delivered(harness, amount="1500.00")
    handle = await start_refund(harness, order_id, refund_id=new_id("r-review"))
    await wait_for_status(handle, "under_review")
    return order_id, handle


async def sent_to_gateway(harness: ReconHarness, order_id: str, refund_id: str) -> None:
    """Until payments has recorded the request (status `sending` comes just before it)."""
    for _ in range(400):
        if refund_id in harness.payment(order_id).refunds:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"refund {refund_id} never reached payments")


async def capture_sent(harness: ReconHarness, order_id: str) -> None:
    for _ in range(400):
        with harness.uow_factory() as uow:
            payment = uow.payments.find(order_id)
        if payment is not None and payment.attempts:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"order {order_id}'s capture never reached payments")


async def approve(harness: ReconHarness, workflow_id: str) -> None:
    await harness.client.get_workflow_handle(workflow_id).execute_update(
        RefundWorkflow.resolve_review,
        ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=ANALYST, **signed(ANALYST)),
    )


async def test_a_refund_terminated_while_awaiting_reconciliation_is_resumed_told_what_was_found_and_completes_once(
    harness,
):
    order_id = await delivered(harness)
    refund_id = new_id("r-answer_lost")  # the gateway pays, its answer never arrives
    handle = await start_refund(harness, order_id, "30.00", refund_id=refund_id)
    await sent_to_gateway(harness, order_id, refund_id)
    await handle.cancel()  # the answer is unknown: the flow waits for reconciliation
    await wait_for_status(handle, "awaiting_reconciliation")
    await handle.terminate("an operator pressed Terminate")
    await reconcile(harness)  # payments learns the gateway paid; the flow it would tell is gone
    [discrepancy] = harness.discrepancies()
    assert (discrepancy.kind.value, discrepancy.business_id) == ("flow_gone", refund_id)
    assert harness.order(order_id).refundable.amount == Decimal("90.00")  # still reserved

    resumed = await resume(harness.client, harness.uow_factory, f"refund-{refund_id}", SUPPORT)

    resumed_flow = harness.client.get_workflow_handle_for(RefundWorkflow.run, f"refund-{refund_id}")
    result = await asyncio.wait_for(resumed_flow.result(), timeout=60)  # not left waiting for a lost signal
    assert result.status == "completed"
    await keep_history(resumed_flow, "refund_resumed_and_told_what_reconciliation_found")
    assert resumed.was == "terminated"
    assert resumed.told == harness.payment(order_id).answers_found_by_reconciliation(refund_id) != []
    assert resumed.still_open == (f"flow_gone:{refund_id}",)  # named for support, who resolves it
    assert harness.refund(order_id, refund_id).status.value == "completed"
    assert harness.payment(order_id).refunds[refund_id].status is GatewayRefundStatus.SETTLED
    assert harness.gateway.refunds_paid(refund_id) == 1
    assert harness.order(order_id).refunded.amount == Decimal("30.00")  # paid out now, not reserved
    assert [m["kind"] for m in harness.messages("customer:c-1")].count("refund_completed") == 1


async def waiting_with_its_answer_untold(harness):
    """A refund waiting for reconciliation whose answer payments found (settled) without telling
    it: (order id, refund id, its flow, payments' command that found the answer)."""
    order_id = await delivered(harness)
    refund_id = new_id("r-answer_lost")
    handle = await start_refund(harness, order_id, "30.00", refund_id=refund_id)
    await sent_to_gateway(harness, order_id, refund_id)
    await handle.cancel()
    await wait_for_status(handle, "awaiting_reconciliation")
    found = PaymentsActivities(harness.uow_factory, harness.gateway).reconcile_gateway_refund(
        command(ReconcileGatewayRefund, order_id=order_id, refund_id=refund_id, issued_at=datetime.now(UTC))
    )
    return order_id, refund_id, handle, found


async def test_a_waiting_refund_whose_answer_reconciliation_found_without_telling_it_is_told_on_resume(harness):
    # As when a resume's reset happened and its signal did not: the flow waits, the answer is in.
    order_id, refund_id, handle, found = await waiting_with_its_answer_untold(harness)

    resumed = await resume(harness.client, harness.uow_factory, handle.id, SUPPORT)

    result = await asyncio.wait_for(harness.client.get_workflow_handle_for(RefundWorkflow.run, handle.id).result(), 60)
    assert (resumed.reset_to, resumed.told, result.status) == (None, [found.command_id], "completed")
    assert harness.gateway.refunds_paid(refund_id) == 1


async def test_a_waiting_refund_whose_answer_a_pass_found_but_never_told_is_told_by_the_next_pass(harness):
    # A pass's look-up committed payments' answer after its step gave up (or the pass was cut
    # short): the signal never went, and payments lists the request no more.
    order_id, refund_id, handle, found = await waiting_with_its_answer_untold(harness)
    for _ in range(100):  # the flow's resting status reaches the server's visibility
        if [f async for f in harness.client.list_workflows(f"{WAITING_FLOWS} AND WorkflowId = '{handle.id}'")]:
            break
        await asyncio.sleep(0.1)

    passed = await reconcile(harness)

    result = await asyncio.wait_for(harness.client.get_workflow_handle_for(RefundWorkflow.run, handle.id).result(), 60)
    assert result.status == "completed"
    assert f"told {handle.id} what payments found ({found.command_id}): its signal had been lost" in passed.trail
    assert harness.gateway.refunds_paid(refund_id) == 1
    assert harness.order(order_id).refunded.amount == Decimal("30.00")


async def test_a_refund_terminated_while_sending_and_answered_by_reconciliation_a_day_later_completes_once_resumed(
    harness,
):
    order_id = await delivered(harness)
    refund_id = new_id("r-answer_lost")  # the gateway pays, its answers never arrive
    handle = await start_refund(harness, order_id, "30.00", refund_id=refund_id)
    await sent_to_gateway(harness, order_id, refund_id)  # its send is retried: nothing recorded as answered
    await handle.terminate("an operator pressed Terminate")
    # A day later, reconciliation finds the request still `sent` and asks the gateway.
    a_day_later = datetime.now(UTC) + timedelta(hours=26)
    found = PaymentsActivities(harness.uow_factory, harness.gateway).reconcile_gateway_refund(
        command(ReconcileGatewayRefund, order_id=order_id, refund_id=refund_id, issued_at=a_day_later)
    )
    assert found.event_names == ["GatewayRefundSettled"]

    resumed = await resume(harness.client, harness.uow_factory, handle.id, SUPPORT)

    again = harness.client.get_workflow_handle_for(RefundWorkflow.run, handle.id)
    result = await asyncio.wait_for(again.result(), timeout=60)
    assert (resumed.was, result.status) == ("terminated", "completed")  # not refused as answered already
    assert (resumed.told, resumed.still_open) == ([], ())  # not waiting, not found gone: nothing to tell or name
    assert harness.refund(order_id, refund_id).status.value == "completed"
    assert harness.gateway.refunds_paid(refund_id) == 1


async def test_a_payment_flow_terminated_while_awaiting_reconciliation_is_resumed_and_ends_paid_once(harness):
    order_id, handle = await start_payment(harness, "tok_capture_answer_lost")  # captured, answer lost
    await wait_for_status(handle, "capturing")
    await capture_sent(harness, order_id)
    await handle.cancel()  # the capture is unknown: the flow waits for reconciliation
    await wait_for_status(handle, "awaiting_reconciliation")
    await handle.terminate("an operator pressed Terminate")
    await reconcile(harness)  # payments learns the card was charged; nobody to tell
    assert harness.order(order_id).paid.amount == Decimal("0")

    resumed = await resume(harness.client, harness.uow_factory, handle.id, SUPPORT)

    view = await wait_for_status(harness.client.get_workflow_handle(handle.id), "paid")
    assert view.invoice_number
    assert resumed.told == harness.payment(order_id).answers_found_by_reconciliation() != []
    assert resumed.still_open == tuple(f"flow_gone:{a.attempt_id}" for a in harness.payment(order_id).attempts)
    assert harness.order(order_id).paid.amount == Decimal("120.00")
    assert [m["kind"] for m in harness.messages("customer:c-1")] == ["payment_received"]


async def test_a_payment_flow_reset_to_before_its_unknown_capture_sends_no_second_request_and_ends_paid_once(harness):
    """An operator Resets a flow (the UI's button) to before its capture, whose answer is
    unknown. A second request could charge again once the gateway forgot the key (Stripe: 24 h):
    payments refuses it (`attempt_unknown`), the flow waits for reconciliation, paid once."""
    order_id, handle = await start_payment(harness, "tok_capture_answer_lost")  # charged, answer lost
    await wait_for_status(handle, "capturing")
    await capture_sent(harness, order_id)
    await handle.cancel()  # the capture becomes unknown: the flow waits for reconciliation
    await wait_for_status(handle, "awaiting_reconciliation")
    attempt_id = harness.payment(order_id).attempts[0].attempt_id
    requests_before = harness.gateway.calls[attempt_id]
    events = [e async for e in handle.fetch_history_events()]
    scheduled = next(e for e in events if e.activity_task_scheduled_event_attributes.activity_type.name
                     == CapturePayment.activity_name())
    before_capture = max(e.event_id for e in events if e.event_id < scheduled.event_id and e.HasField(
        "workflow_task_completed_event_attributes"))
    described = await handle.describe()
    reset = await harness.client.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
        namespace=harness.client.namespace,
        workflow_execution=WorkflowExecution(workflow_id=handle.id, run_id=described.run_id),
        reason="an operator reset it to before the capture", workflow_task_finish_event_id=before_capture,
        request_id=str(uuid.uuid4()),
    ))
    again = harness.client.get_workflow_handle(handle.id, run_id=reset.run_id)

    await wait_for_status(again, "awaiting_reconciliation")
    assert harness.gateway.calls[attempt_id] == requests_before  # no second request went out
    await reconcile(harness)
    await wait_for_status(again, "paid")
    await keep_history(again, "payment_reset_to_before_its_unknown_capture")

    assert harness.order(order_id).paid.amount == Decimal("120.00")
    assert len([line for line in harness.gateway.moved.values() if line.kind == "capture"
                and line.order_id == order_id]) == 1
    assert [m["kind"] for m in harness.messages("customer:c-1")] == ["payment_received"]


async def test_a_refund_cancelled_in_review_is_resumed_without_its_cancel_and_pays_out_once_approved(harness):
    order_id, handle = await large_refund_under_review(harness)
    await handle.cancel()  # before the gateway step a Cancel stops the flow, the money stays reserved
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert (await handle.describe()).status is WorkflowExecutionStatus.CANCELED

    resumed = await resume(harness.client, harness.uow_factory, handle.id, SUPPORT)

    assert (resumed.was, resumed.told) == ("cancelled", [])
    again = harness.client.get_workflow_handle_for(RefundWorkflow.run, handle.id)
    assert (await wait_for_status(again, "under_review")).status == "under_review"  # not cancelled again
    await approve(harness, handle.id)
    assert (await again.result()).status == "completed"
    await keep_history(again, "refund_resumed_after_a_cancel_in_review")
    refund_id = handle.id.removeprefix("refund-")
    assert harness.gateway.refunds_paid(refund_id) == 1
    assert harness.order(order_id).refunded.amount == Decimal("1500.00")


async def test_only_a_flow_that_is_gone_is_resumed_and_a_refused_resume_changes_nothing(harness):
    order_id, handle = await large_refund_under_review(harness)

    with pytest.raises(NotResumable, match="still runs"):
        await resume(harness.client, harness.uow_factory, handle.id, SUPPORT)
    with pytest.raises(NotResumable, match="no flow"):
        await resume(harness.client, harness.uow_factory, "refund-r-never-started", SUPPORT)
    assert (await handle.describe()).run_id == handle.result_run_id  # the same run goes on

    await approve(harness, handle.id)
    assert (await handle.result()).status == "completed"
    with pytest.raises(NotResumable, match="finished"):
        await resume(harness.client, harness.uow_factory, handle.id, SUPPORT)
    assert harness.gateway.refunds_paid(handle.id.removeprefix("refund-")) == 1


async def test_a_cancellations_terminated_child_refund_is_resumed_and_pays_out_once_its_payment_flow_ended_cancelled(
    harness,
):
    order_id, payment = await start_payment(harness, "tok_visa", order_id=new_id("o-answer_lost"))
    await wait_for_status(payment, "paid")
    await payment.execute_update(
        PaymentWorkflow.cancel_order,
        CancellationRequest(requested_by=SUPPORT_AGENT, **signed(SUPPORT_AGENT), reason="out of stock"),
    )
    refund_id = f"{order_id}-cancellation"
    child = harness.client.get_workflow_handle_for(RefundWorkflow.run, f"refund-{refund_id}")
    await sent_to_gateway(harness, order_id, refund_id)  # its answers are lost: it keeps retrying
    await child.terminate("an operator pressed Terminate")

    ended = await payment.result()  # the cancellation is done; the refund's money stays reserved
    assert ended.status == "cancelled"
    await keep_history(payment, "payment_cancelled_with_its_refund_unfinished")
    assert any(line.startswith(f"child refund-{refund_id} ended unfinished") for line in ended.trail)
    assert harness.order(order_id).refundable.amount == Decimal("0.00")
    with pytest.raises(NotResumable, match="finished"):
        await resume(harness.client, harness.uow_factory, payment.id, SUPPORT)

    resumed = await resume(harness.client, harness.uow_factory, child.id, SUPPORT)

    assert resumed.parent_id == payment.id
    await wait_for_status(child, "sending")  # the gateway still loses its answers:
    await child.cancel()  # unknown, and reconciliation finds what it did
    await wait_for_status(child, "awaiting_reconciliation")
    await reconcile(harness)
    assert (await asyncio.wait_for(child.result(), 60)).status == "completed"
    assert harness.gateway.refunds_paid(refund_id) == 1
    assert harness.order(order_id).refunded.amount == Decimal("120.00")


async def test_a_flow_that_failed_on_its_own_history_fails_again_when_resumed_and_that_is_seen(harness):
    refused = {"refund_id": "r-1", "order_id": "o-1", "amount": 20.5, "reason": "damaged",  # a bare number
               "requested_by": {"role": "customer", "id": "c-1"}}
    handle = harness.track(await harness.client.start_workflow(
        "RefundWorkflow", refused, id=new_id("refund-bad"), task_queue=FLOWS_QUEUE))
    with pytest.raises(WorkflowFailureError):
        await handle.result()

    resumed = await resume(harness.client, harness.uow_factory, handle.id, SUPPORT)

    assert resumed.was == "failed"
    assert await new_run_settled(harness.client, resumed, within=30) == (WorkflowExecutionStatus.FAILED, True)
