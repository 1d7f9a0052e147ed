"""A mixed load at the workflow level, on SQLite and on PostgreSQL: sixteen orders
driven at once through the real workflows, the real workers (`build_workers`), the
real activities and the gateway simulator process. Each order is paid, shipped and
delivered, then gets several refunds started at the same moment whose amounts
together exceed what was paid — some racing a full refund, two racing a cancellation
by support while the parcel is in transit.

The load runs once per database (a module-scoped fixture); each test checks one rule
on its outcome: every flow completes with no failed task, racing refunds never pay
back more than was captured, billing agrees with the gateway's ledger to the cent,
and every refund request is kept on its order (no lost update).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_DOWN, Decimal

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from adapters import db
from simulators.control import read_ledger
from adapters.views import order_view
from domain.contracts import CapturePayment, RetryPaymentCapture, SendRefundToGateway
from domain.shared.actor import Actor
from tests.integration.conftest import fresh_schema, postgres_server_url  # noqa: F401 - a fixture
from tests.workflows.conftest import Harness
from tests.workflows.flows import deliver, place_order, ship, start_refund, wait_for_status
from worker import ALL_QUEUES, Dependencies, build_workers
from workflows.payment import CancellationRequest, PaymentWorkflow
from workflows.refund import RefundStatus
from tests.tokens import signed

CENT = Decimal("0.01")
SUPPORT = Actor.parse("support:load-desk")
REFUND_ENDS = ("completed", "rejected", "failed", "cancelled")

# The shapes of racing refunds, all started at the same moment on one order.
FOUR_PARTIALS = "4 × 40 %"  # two fit, two must be rejected
FULL_RACES_PARTIALS = "2 × 60 % + everything"  # whoever wins, exactly the total goes back
CANCEL_RACES_REFUND = "support cancels in transit + 60 %"  # the cancellation refunds what is left

# (total, card, shape). One customer per order: the fraud rule "third approved refund
# within 7 days" would otherwise send refunds to a person. No shape can approve more
# than two refunds on one order, and every total is below the 1,000.00 review line.
PLANS = [
    ("100.00", "tok_visa", FOUR_PARTIALS),
    ("87.35", "tok_flaky", FULL_RACES_PARTIALS),
    ("250.10", "tok_visa", FOUR_PARTIALS),
    ("19.99", "tok_timeout", FULL_RACES_PARTIALS),
    ("42.00", "tok_visa", CANCEL_RACES_REFUND),
    ("999.99", "tok_flaky", FOUR_PARTIALS),
    ("64.20", "tok_visa", FULL_RACES_PARTIALS),
    ("120.00", "tok_visa", FOUR_PARTIALS),
    ("33.33", "tok_flaky", FULL_RACES_PARTIALS),
    ("75.50", "tok_timeout", FOUR_PARTIALS),
    ("310.00", "tok_flaky", CANCEL_RACES_REFUND),
    ("58.90", "tok_visa", FULL_RACES_PARTIALS),
    ("12.34", "tok_visa", FOUR_PARTIALS),
    ("480.00", "tok_visa", FULL_RACES_PARTIALS),
    ("9.99", "tok_flaky", FOUR_PARTIALS),
    ("145.45", "tok_visa", FULL_RACES_PARTIALS),
]


def share(total: str, percent: int) -> str:
    return str((Decimal(total) * percent / 100).quantize(CENT, rounding=ROUND_DOWN))


@dataclass
class OrderRun:
    total: str
    card: str
    shape: str
    customer: str
    order_id: str = ""
    payment_status: str = ""
    refunds: dict[str, RefundStatus] = field(default_factory=dict)  # workflow id → final status
    workflow_ids: list[str] = field(default_factory=list)  # every execution this order started


@dataclass
class LoadResult:
    database_url: str
    gateway_url: str
    orders: list[OrderRun]
    executions: dict[str, WorkflowExecutionStatus]
    histories: dict[str, WorkflowHistory]
    ledger: dict


class SharedClock:
    """Stands in for the environment in the `flows` helpers while many orders run at
    once. The time-skipping server keeps a single lock count, and concurrent
    `env.sleep` calls unbalance it; so one task moves the clock, a second of workflow
    time per step (retry backoffs elapse, no waiting process leaps ahead by days),
    and every waiter just polls in real time."""

    def __init__(self, env: WorkflowEnvironment) -> None:
        self.env = env
        self.running = True

    async def tick(self) -> None:
        while self.running:
            await self.env.sleep(timedelta(seconds=1))
            await asyncio.sleep(0.005)

    async def sleep(self, duration: timedelta) -> None:
        await asyncio.sleep(0.1)  # a poll's pause; the ticking task moves workflow time

    def auto_time_skipping_disabled(self):
        return self.env.auto_time_skipping_disabled()


# -- driving one order ----------------------------------------------------------------
async def drive(harness: Harness, run: OrderRun) -> OrderRun:
    run.order_id, view = await place_order(harness, amount=run.total, card=run.card, customer=run.customer)
    assert view["status"] == "paid", f"{run.order_id} ({run.card}) ended {view['status']}"
    order_id, customer = run.order_id, f"customer:{run.customer}"
    payment = harness.client.get_workflow_handle_for(PaymentWorkflow.run, f"payment-{order_id}")
    run.workflow_ids += [payment.id, f"ship-{order_id}"]
    await ship(harness, order_id)

    if run.shape == CANCEL_RACES_REFUND:
        answer, refund = await asyncio.gather(
            payment.execute_update(
                PaymentWorkflow.cancel_order, CancellationRequest(requested_by=SUPPORT, **signed(SUPPORT), reason="lost in the warehouse")
            ),
            start_refund(harness, order_id, share(run.total, 60), by=customer),
        )
        assert answer == "cancelled"
        refunds = [refund]
    else:
        await deliver(harness, order_id)
        run.workflow_ids.append(f"deliver-{order_id}")
        amounts = {
            FOUR_PARTIALS: [share(run.total, 40)] * 4,
            FULL_RACES_PARTIALS: [share(run.total, 60), None, share(run.total, 60)],
        }[run.shape]
        refunds = await asyncio.gather(*(start_refund(harness, order_id, a, by=customer) for a in amounts))

    for refund in refunds:
        await wait_for_status(refund, *REFUND_ENDS, env=harness.env)
        run.refunds[refund.id] = await refund.result()
    paid = await payment.result()
    run.payment_status = paid.status
    if paid.refund_workflow_id:  # the cancellation's own refund, a child workflow
        child = harness.client.get_workflow_handle(paid.refund_workflow_id, result_type=RefundStatus)
        run.refunds[child.id] = await child.result()
    run.workflow_ids += list(run.refunds)
    return run


# -- the load, once per database ---------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def load_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('mixed-load') / 'settleflow.db'}"
        return
    with fresh_schema(request.getfixturevalue("postgres_server_url")) as url:
        yield url


@pytest.fixture(scope="module")
async def load(
    env: WorkflowEnvironment, gateway_url: str, load_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LoadResult]:
    url = load_database_url
    db.upgrade(url)
    deps = Dependencies.connect(url, gateway_url, tmp_path_factory.mktemp("mailbox"), gateway_timeout_seconds=1.0)
    engine = deps.engine
    async with AsyncExitStack() as stack:
        executor = stack.enter_context(ThreadPoolExecutor(max_workers=8))
        for worker in build_workers(env.client, deps, list(ALL_QUEUES), executor):
            await stack.enter_async_context(worker)
        clock = SharedClock(env)
        harness = Harness(env.client, clock, deps.uow_factory, deps.mailbox, gateway_url, engine)
        runs = [
            OrderRun(total, card, shape, customer=f"c-load-{n}") for n, (total, card, shape) in enumerate(PLANS)
        ]
        try:
            # Waiting for a result must not let the server leap to the next deadline
            # (a paid order's 90 days): only the clock moves time.
            with env.auto_time_skipping_disabled():
                ticking = asyncio.create_task(clock.tick())
                try:
                    async with asyncio.timeout(120), asyncio.TaskGroup() as orders:
                        for run in runs:
                            orders.create_task(drive(harness, run))
                finally:
                    clock.running = False
                    await ticking
            ids = [workflow_id for run in runs for workflow_id in run.workflow_ids]
            handles = [env.client.get_workflow_handle(workflow_id) for workflow_id in ids]
            described = await asyncio.gather(*(h.describe() for h in handles))
            histories = await asyncio.gather(*(h.fetch_history() for h in handles))
            yield LoadResult(
                database_url=url,
                gateway_url=gateway_url,
                orders=runs,
                executions={d.id: d.status for d in described},
                histories={h.workflow_id: h for h in histories},
                ledger=read_ledger(gateway_url),
            )
        finally:
            await harness.close_open_workflows()
    deps.gateway.close()
    engine.dispose()


# -- the rules ----------------------------------------------------------------------------
async def test_every_flow_of_a_mixed_load_completes_and_lock_contention_never_fails_a_task(load: LoadResult):
    not_completed = {wid: s.name for wid, s in load.executions.items() if s is not WorkflowExecutionStatus.COMPLETED}
    assert not_completed == {}
    shapes = Counter(shape for _, _, shape in PLANS)
    kinds = Counter(wid.split("-")[0] for wid in load.executions)
    assert kinds == {
        "payment": len(PLANS),
        "ship": len(PLANS),
        "deliver": len(PLANS) - shapes[CANCEL_RACES_REFUND],
        "refund": 4 * shapes[FOUR_PARTIALS] + 3 * shapes[FULL_RACES_PARTIALS] + 2 * shapes[CANCEL_RACES_REFUND],
    }

    troubles = {}
    for workflow_id, history in load.histories.items():
        found = trouble_in(history)
        if found:
            troubles[workflow_id] = found
    assert troubles == {}


async def test_racing_refunds_all_end_completed_or_rejected_and_never_pay_back_more_than_was_captured(load: LoadResult):
    for run in load.orders:
        statuses = Counter(r.status for r in run.refunds.values())
        assert set(statuses) <= {"completed", "rejected"}, (run.order_id, run.shape, statuses)
        captured = captured_for(load.ledger, run.order_id)
        assert captured == Decimal(run.total)
        assert completed_total(run) <= captured, (run.order_id, run.shape)
        if run.shape == FOUR_PARTIALS:
            # the most that fits: two of the four, the other two rejected
            assert statuses == {"completed": 2, "rejected": 2}, (run.order_id, statuses)
            assert completed_total(run) == 2 * Decimal(share(run.total, 40))
        else:
            # whoever won the race, everything went back and not a cent more
            assert completed_total(run) == captured, (run.order_id, run.shape, statuses)
        expected_payment = "refunded" if run.shape == CANCEL_RACES_REFUND else "paid"
        assert run.payment_status == expected_payment, run.order_id


async def test_billing_agrees_with_the_gateway_ledger_to_the_cent_after_the_load(load: LoadResult):
    by_reference = Counter(r["reference"] for r in load.ledger["refunds"])
    for run in load.orders:
        view = order_view(load.database_url, run.order_id)
        assert view is not None, run.order_id
        captured = captured_for(load.ledger, run.order_id)
        refunded = refunded_for(load.ledger, run.order_id)
        assert (amount(view.paid), amount(view.refunded)) == (captured, refunded), run.order_id
        assert refunded == completed_total(run), run.order_id
        assert amount(view.reserved) == Decimal("0"), run.order_id  # nothing left in flight
        for status in run.refunds.values():
            # money moved once per completed refund, never for a rejected one
            assert by_reference[status.refund_id] == (1 if status.status == "completed" else 0), status.refund_id


async def test_every_refund_request_of_a_mixed_load_is_kept_on_its_order_so_no_update_is_lost(load: LoadResult):
    for run in load.orders:
        view = order_view(load.database_url, run.order_id)
        assert view is not None, run.order_id
        stored = {line.refund_id: line.status for line in view.refunds}
        started = {status.refund_id: status.status for status in run.refunds.values()}
        assert stored == started, (run.order_id, run.shape)


# -- reading the outcome --------------------------------------------------------------------
FAILED_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED,
}


# The steps that talk to the gateway: tok_flaky and tok_timeout make them need more
# than one attempt, on purpose. Every other step only touches the database.
GATEWAY_STEPS = {c.activity_name() for c in (CapturePayment, RetryPaymentCapture, SendRefundToGateway)}


def trouble_in(history: WorkflowHistory) -> list[str]:
    """Failed tasks, and any trace of a lost optimistic-concurrency race that reached
    Temporal instead of being absorbed inside the activity: a database step (remote or
    local activity) that failed or needed a second attempt."""
    found = [EventType.Name(e.event_type) for e in history.events if e.event_type in FAILED_EVENTS]
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            step = scheduled[started.scheduled_event_id]
            failure = started.last_failure if started.HasField("last_failure") else None
            # (the time-skipping server does not record why an attempt failed)
            if failure is not None and failure.application_failure_info.type == "ConcurrencyConflict":
                found.append(f"{step} attempt {started.attempt} after a lost race: {failure.message}")
            elif started.attempt > 1 and step not in GATEWAY_STEPS:
                found.append(f"{step} needed attempt {started.attempt}")
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes
            if marker.HasField("failure"):
                found.append(f"local activity failed: {marker.failure.message}")
            if marker.marker_name == "core_local_activity":
                data = json.loads(marker.details["data"].payloads[0].data)
                if data["attempt"] > 1:
                    found.append(f"local {data['activity_type']} needed attempt {data['attempt']}")
    return found


def amount(text: str) -> Decimal:
    """A view's money ("120.00 EUR", or "—" for none) as a Decimal."""
    return Decimal("0") if text.strip() in ("", "—") else Decimal(text.split()[0])


def captured_for(ledger: dict, order_id: str) -> Decimal:
    return sum((Decimal(c["amount"]) for c in ledger["captures"] if c["reference"] == order_id), Decimal("0"))


def refunded_for(ledger: dict, order_id: str) -> Decimal:
    charges = {c["id"] for c in ledger["captures"] if c["reference"] == order_id}
    return sum((Decimal(r["amount"]) for r in ledger["refunds"] if r["charge"] in charges), Decimal("0"))


def completed_total(run: OrderRun) -> Decimal:
    return sum((r.amount.amount for r in run.refunds.values() if r.status == "completed"), Decimal("0"))
