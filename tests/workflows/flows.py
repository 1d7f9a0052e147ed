"""Small steps the workflow tests share: start the same workflows a user would."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from domain.shared.actor import Actor, Role
from domain.shared.money import Money
from workflows.payment import OrderRequest, PaymentWorkflow
from workflows.process import FLOWS_QUEUE
from workflows.refund import RefundRequest, RefundWorkflow
from workflows.shipping import ConfirmDeliveryWorkflow, DeliveryRequest, ShipmentRequest, ShipOrderWorkflow
from tests.tokens import signed

WAREHOUSE = Actor(role=Role.WAREHOUSE, id="w-1")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def place_order(
    harness, amount: str = "120.00", card: str = "tok_visa", customer: str = "c-1", currency: str = "EUR",
    order_id: str | None = None, task_timeout: timedelta | None = None,
) -> tuple[str, dict]:
    """Place an order and wait (in real time) until its payment has an answer.
    The payment process itself stays open afterwards, for cancellations. A short
    `task_timeout` lets a test hold a local activity past its workflow task."""
    order_id = order_id or new_id("o")
    handle = harness.track(await harness.client.start_workflow(
        PaymentWorkflow.run,
        OrderRequest(
            order_id=order_id,
            customer_id=customer,
            amount=Money.of(amount, currency),
            card_token=card,
            placed_by=Actor(role=Role.CUSTOMER, id=customer), **signed(Actor(role=Role.CUSTOMER, id=customer)),
        ),
        id=f"payment-{order_id}",
        task_queue=FLOWS_QUEUE,
        task_timeout=task_timeout,
    ))
    view = await wait_for_status(handle, "paid", "recovering", "abandoned", env=harness.env)
    return order_id, view.model_dump(mode="json")


async def wait_for_status(handle: WorkflowHandle, *statuses: str, env: WorkflowEnvironment | None = None, tries: int = 400):
    """Poll the status query. With `env`, each poll lets one second of workflow time
    pass (so retry backoffs elapse); without it, nothing is skipped."""
    for _ in range(tries):
        view = await handle.query("status", result_type=_status_type(handle))
        if view.status in statuses:
            return view
        if env is not None:
            await env.sleep(timedelta(seconds=1))
        else:
            await asyncio.sleep(0.025)
    raise AssertionError(f"{handle.id} never reached {' or '.join(statuses)}")


async def wait_for_trail(handle: WorkflowHandle, line: str, env: WorkflowEnvironment, times: int = 1) -> list[str]:
    """Poll the status query, letting a second of workflow time pass each time, until the
    trail holds a line starting with `line` `times` times."""
    for _ in range(400):
        trail = (await handle.query("status"))["trail"]
        if sum(entry.startswith(line) for entry in trail) >= times:
            return trail
        await env.sleep(timedelta(seconds=1))
    raise AssertionError(f"{handle.id}: no {times} × {line!r} in the trail")


def _status_type(handle: WorkflowHandle):
    from workflows.payment import PaymentStatus
    from workflows.refund import RefundStatus

    return PaymentStatus if handle.id.startswith("payment-") else RefundStatus


async def ship(harness, order_id: str, at: datetime | None = None) -> None:
    async with real_time(harness.env):
        await _execute(
            harness.client,
            ShipOrderWorkflow.run,
            ShipmentRequest(order_id=order_id, tracking=new_id("TRK"), shipped_at=at, requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            f"ship-{order_id}",
        )


async def deliver(harness, order_id: str, at: datetime | None = None) -> None:
    """Confirm delivery, and wait until the order's payment process has taken the news and
    closed: an open payment process has a 90-day timer the test server would leap to."""
    async with real_time(harness.env):
        await _execute(
            harness.client,
            ConfirmDeliveryWorkflow.run,
            DeliveryRequest(order_id=order_id, delivered_at=at, requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            f"deliver-{order_id}",
        )
        payment = harness.client.get_workflow_handle(f"payment-{order_id}")
        if (await payment.describe()).status == WorkflowExecutionStatus.RUNNING:
            await payment.result()


async def _execute(client: Client, run, request, workflow_id: str):
    return await client.execute_workflow(run, request, id=workflow_id, task_queue=FLOWS_QUEUE)


async def delivered_order(harness, **order) -> str:
    order_id, _ = await place_order(harness, **order)
    await ship(harness, order_id)
    await deliver(harness, order_id)
    return order_id


async def finished(harness, handle: WorkflowHandle):
    """The result of a flow that needs no timers, awaited in real time: on the test
    server, awaiting a workflow that has already finished can leap ten years ahead,
    and the next refund in the same test would then be far outside the refund window."""
    async with real_time(harness.env):
        return await handle.result()


@asynccontextmanager
async def real_time(env: WorkflowEnvironment) -> AsyncIterator[None]:
    """Set-up steps run without time skipping. Waiting for a finished workflow's
    result lets the test server leap ahead to its next deadline (years away), which
    would put a fresh delivery far outside the refund window."""
    with env.auto_time_skipping_disabled():
        yield


async def start_refund(
    harness, order_id: str, amount: str | None = None, by: str = "customer:c-1", refund_id: str | None = None,
    currency: str = "EUR", task_timeout: timedelta | None = None,
) -> WorkflowHandle:
    """Start a refund flow. A short `task_timeout` lets a test hold a local activity past its
    workflow task (a mailbox outage: the test server cannot skip time while one is retried)."""
    refund_id = refund_id or new_id("r")
    return harness.track(await harness.client.start_workflow(
        RefundWorkflow.run,
        RefundRequest(
            refund_id=refund_id,
            order_id=order_id,
            amount=Money.of(amount, currency) if amount else None,
            reason="arrived damaged",
            requested_by=Actor.parse(by), **signed(Actor.parse(by)),
        ),
        id=f"refund-{refund_id}",
        task_queue=FLOWS_QUEUE,
        task_timeout=task_timeout,
    ))


HISTORIES = Path(__file__).parent / "histories"


async def keep_history(handle: WorkflowHandle, name: str) -> None:
    """With SETTLEFLOW_RECORD_HISTORIES=1, save this run's history for the replay
    tests: a later change that breaks determinism then fails `test_replay.py`."""
    if os.environ.get("SETTLEFLOW_RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())
