"""Reconciliation on the time-skipping server: unknown gateway answers end as the gateway
says (settled, paid, or — only when it confirms nothing moved — failed with the money freed),
operators' buttons never free money on a guess, and what disagrees becomes a discrepancy
that support is told about once.

Real owners on a temporary SQLite database, real workflows and workers; the gateway is the
in-process FakeGateway (tests/fakes.py), whose scenario words in card tokens and refund ids
lose answers, never arrive, or refuse the request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import (
    ScheduleBackfill, ScheduleOverlapPolicy, WorkflowExecutionStatus, WorkflowFailureError, WorkflowUpdateStage,
)
from temporalio.service import RPCError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

import starter
from adapters import db, tables
from adapters.repository import PaymentRepository, dump_state
from activities.billing import BillingActivities
from activities.payments import PaymentsActivities
from activities.registry import OWNER_QUEUES, activities_for
from adapters.mailbox import FileMailbox
from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types
from adapters.temporal import AddressUpdates
from adapters.seal import SealsCommands
from cli import reconciliation as verbs
from devstack import temporal_cli
from domain.payments.commands import CapturePayment, SendRefundToGateway
from domain.contracts import GatewayQuestion, GatewayRefundSettled, Outcome, PaymentCaptured, RequestRefund, ReviewDecision
from domain.invoicing.invoice import credit_note_number
from domain.payments.gateway import GatewayUnavailable, SettlementLine
from domain.payments.payment import AttemptStatus, GatewayRefundStatus
from domain.shared.actor import Actor, Role
from domain.shared.errors import NotFound
from domain.shared.money import Money
from tests.fakes import FakeGateway
from tests.tokens import signed
from tests.unit.builders import command
from tests.workflows.conftest import Harness
from tests.workflows.flows import (
    deliver, keep_history, new_id, real_time, ship, start_refund, wait_for_status, wait_for_trail,
)
from worker import ALL_QUEUES, Dependencies, build_workers
from workflows.messages import DiscrepancyResolution, ReconciliationResult, ReconciliationRun
from workflows.payment import CancellationRequest, OrderRequest, PaymentWorkflow
from workflows.process import FLOWS_QUEUE, SEARCH_ATTRIBUTES
from workflows.refund import RefundRequest, RefundWorkflow, ReviewResolution
from workflows.registry import WORKFLOWS
from workflows.reconciliation import ReconciliationWorkflow, ResolveDiscrepancyWorkflow
from activities import reconciliation as reconciliation_activities
from activities.reconciliation import ReconciliationActivities
from domain.reconciliation.queries import ReconciliationScan
from workflows.schedules import DAILY, FREQUENT, ensure_schedules

RETRY_WINDOW_PASSED = timedelta(hours=25)
CUSTOMER = Actor(role=Role.CUSTOMER, id="c-1")


class ReconHarness(Harness):
    gateway: FakeGateway
    deps: Dependencies

    def refund(self, order_id: str, refund_id: str):
        return self.order(order_id).refunds[refund_id]

    def support_messages(self) -> list[dict]:
        return self.messages("team:support")

    def discrepancies(self) -> list:
        with self.uow_factory() as uow:
            return uow.discrepancies.with_status("open")


@pytest.fixture
async def harness(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[ReconHarness]:
    async with recon_harness(env, tmp_path) as harness:
        yield harness


@asynccontextmanager
async def recon_harness(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[ReconHarness]:
    """Every queue's worker on `env`, a SQLite file and the FakeGateway."""
    url = f"sqlite:///{tmp_path / 'settleflow.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    aggregates = default_aggregate_types()
    gateway = FakeGateway()
    deps = Dependencies(
        uow_factory=lambda: SqlUnitOfWork(engine, aggregates),
        gateway=gateway,  # type: ignore[arg-type]
        mailbox=FileMailbox(tmp_path / "mailbox"),
        engine=engine,
    )
    async with AsyncExitStack() as stack:
        executor = stack.enter_context(ThreadPoolExecutor(max_workers=8))
        for worker in build_workers(env.client, deps, list(ALL_QUEUES), executor):
            await stack.enter_async_context(worker)
        harness = ReconHarness(env.client, env, deps.uow_factory, deps.mailbox, "", engine)
        harness.gateway = gateway
        harness.deps = deps
        yield harness
        await harness.close_open_workflows()
    engine.dispose()


# -- steps ------------------------------------------------------------------------------------------
async def start_payment(harness: ReconHarness, card: str, amount: str = "120.00", order_id: str | None = None):
    order_id = order_id or new_id("o")
    handle = harness.track(
        await harness.client.start_workflow(
            PaymentWorkflow.run,
            OrderRequest(
                order_id=order_id,
                customer_id="c-1",
                amount=Money.of(amount, "EUR"),
                card_token=card,
                placed_by=Actor(role=Role.CUSTOMER, id="c-1"), **signed("customer:c-1"),
            ),
            id=f"payment-{order_id}",
            task_queue=FLOWS_QUEUE,
        )
    )
    return order_id, handle


async def delivered(harness: ReconHarness, amount: str = "120.00") -> str:
    order_id, handle = await start_payment(harness, "tok_visa", amount)
    await wait_for_status(handle, "paid", env=harness.env)
    await ship(harness, order_id)
    await deliver(harness, order_id)
    return order_id


async def terminated_while_sending(harness: ReconHarness) -> tuple[str, str]:
    """A refund of 30.00 whose request never arrives, terminated two hours into sending: its
    money stays reserved at billing, and its flow is gone."""
    order_id = await delivered(harness)
    refund_id = new_id("r-never_arrives")
    handle = await start_refund(harness, order_id, "30.00", refund_id=refund_id)
    await wait_for_status(handle, "sending", env=harness.env)
    await harness.env.sleep(timedelta(hours=2))  # older than a flow just starting
    await handle.terminate("an operator pressed Terminate")
    return order_id, refund_id


async def reconcile(
    harness: ReconHarness, daily: bool = False, day: date | None = None, history: str = ""
) -> ReconciliationResult:
    async with real_time(harness.env):
        handle = await harness.client.start_workflow(
            ReconciliationWorkflow.run,
            ReconciliationRun(daily=daily, settlement_day=day),
            id=new_id("reconciliation"),
            task_queue=FLOWS_QUEUE,
        )
        result = await handle.result()
    if history:
        await keep_history(handle, history)
    return result


async def refund_awaiting_reconciliation(harness: ReconHarness, scenario: str, amount: str = "30.00"):
    order_id = await delivered(harness)
    refund_id = new_id(f"r-{scenario}")
    handle = await start_refund(harness, order_id, amount, refund_id=refund_id)
    await wait_for_status(handle, "sending", env=harness.env)
    await harness.env.sleep(RETRY_WINDOW_PASSED)
    view = await wait_for_status(handle, "awaiting_reconciliation", env=harness.env)
    return order_id, refund_id, handle, view


# -- refunds ------------------------------------------------------------------------------------------
async def test_a_refund_whose_answer_was_lost_past_the_retry_window_ends_settled_once_reconciliation_finds_it_paid(
    harness,
):
    order_id, refund_id, handle, view = await refund_awaiting_reconciliation(harness, "answer_lost")

    # Waiting, not failed: the money stays reserved and the customer is told nothing yet.
    assert harness.payment(order_id).refunds[refund_id].status is GatewayRefundStatus.UNKNOWN
    assert harness.order(order_id).refundable.amount == Decimal("90.00")
    assert [m["kind"] for m in harness.messages("customer:c-1")] == ["payment_received"]

    run = await reconcile(harness, history="reconciliation_answered")
    result = await handle.result()
    await keep_history(handle, "refund_unknown_then_settled")

    assert (run.asked, run.answered) == (1, 1)
    assert result.status == "completed"
    assert harness.refund(order_id, refund_id).status.value == "completed"
    assert harness.order(order_id).refundable.amount == Decimal("90.00")
    assert harness.gateway.refunds_paid(refund_id) == 1
    assert sorted(m["kind"] for m in harness.messages("customer:c-1")) == ["payment_received", "refund_completed"]


async def test_a_refund_that_never_reached_the_gateway_fails_and_frees_its_amount_only_once_the_gateway_confirms_it(
    harness,
):
    order_id, refund_id, handle, _ = await refund_awaiting_reconciliation(harness, "never_arrives")
    harness.gateway.reachable = False  # the gateway cannot say yet: nothing is decided

    unanswered = await reconcile(harness)

    assert (unanswered.asked, unanswered.left_open) == (1, 1)
    assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
    assert harness.order(order_id).refundable.amount == Decimal("90.00")

    harness.gateway.reachable = True
    await reconcile(harness)
    result = await handle.result()

    assert (result.status, result.reason) == ("failed", "not_paid:GatewayRefundNotFound")
    assert harness.payment(order_id).refunds[refund_id].status is GatewayRefundStatus.NOT_FOUND
    assert harness.order(order_id).refundable.amount == Decimal("120.00")
    assert harness.gateway.refunds_paid(refund_id) == 0
    assert "refund_failed" in [m["kind"] for m in harness.messages("customer:c-1")]


async def test_a_look_up_the_gateway_refuses_leaves_the_refund_waiting_and_support_is_told_once(harness):
    order_id, refund_id, handle, _ = await refund_awaiting_reconciliation(harness, "answer_lost")
    harness.gateway.refuses_lookups = True  # e.g. a key of another account: "no such payment"

    first = await reconcile(harness)
    again = await reconcile(harness)

    [discrepancy] = harness.discrepancies()
    assert (discrepancy.id, discrepancy.ours) == (f"lookup_refused:{refund_id}", Money.of("30.00", "EUR"))
    assert (first.left_open, first.discrepancies, again.discrepancies) == (1, 1, 0)
    assert [m["kind"] for m in harness.support_messages()] == ["discrepancy_found"]
    # Nothing is decided on a refusal: the money stays reserved and the flow waits.
    assert harness.payment(order_id).refunds[refund_id].status is GatewayRefundStatus.UNKNOWN
    assert (await handle.query(RefundWorkflow.status_view)).status == "awaiting_reconciliation"


async def test_a_refund_the_gateway_refuses_as_invalid_waits_for_reconciliation_instead_of_failing(harness):
    order_id = await delivered(harness)
    refund_id = new_id("r-refused")
    handle = await start_refund(harness, order_id, "30.00", refund_id=refund_id)

    await wait_for_status(handle, "awaiting_reconciliation", env=harness.env)
    assert harness.order(order_id).refundable.amount == Decimal("90.00")

    await reconcile(harness)
    result = await handle.result()

    assert result.status == "failed"
    assert harness.order(order_id).refundable.amount == Decimal("120.00")


async def test_cancelling_a_sending_refund_records_it_unknown_and_keeps_its_money_reserved(harness):
    order_id = await delivered(harness)
    refund_id = new_id("r-answer_lost")
    handle = await start_refund(harness, order_id, "30.00", refund_id=refund_id)
    await wait_for_status(handle, "sending", env=harness.env)

    await handle.cancel()
    view = await wait_for_status(handle, "awaiting_reconciliation", env=harness.env)

    assert view.status == "awaiting_reconciliation"
    assert harness.payment(order_id).refunds[refund_id].status is GatewayRefundStatus.UNKNOWN
    assert harness.refund(order_id, refund_id).status.value == "approved"
    assert harness.order(order_id).refundable.amount == Decimal("90.00")
    assert "refund_failed" not in [m["kind"] for m in harness.messages("customer:c-1")]

    await handle.cancel()  # pressed again while waiting: still nothing is freed
    await harness.env.sleep(timedelta(minutes=5))
    assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
    assert harness.order(order_id).refundable.amount == Decimal("90.00")

    await reconcile(harness)  # the gateway did pay: the refund completes, it is not paid twice

    assert (await handle.result()).status == "completed"
    assert harness.gateway.refunds_paid(refund_id) == 1


async def test_a_terminated_refunds_reservation_becomes_a_discrepancy_and_support_is_told_once(harness):
    order_id, refund_id = await terminated_while_sending(harness)

    first = await reconcile(harness, daily=True)
    again = await reconcile(harness, daily=True)

    [discrepancy] = harness.discrepancies()
    assert (discrepancy.kind.value, discrepancy.business_id, discrepancy.ours) == (
        "flow_gone", refund_id, Money.of("30.00", "EUR"),
    )
    assert (first.discrepancies, again.discrepancies) == (1, 0)
    assert [m["kind"] for m in harness.support_messages()] == ["discrepancy_found"]
    # Describing is all reconciliation does: the money is still reserved, for support to decide.
    assert harness.order(order_id).refundable.amount == Decimal("90.00")


# -- captures ------------------------------------------------------------------------------------------
async def test_a_capture_whose_answer_was_lost_past_the_retry_window_ends_paid_once_reconciliation_finds_it(harness):
    order_id, handle = await start_payment(harness, "tok_capture_answer_lost")
    await wait_for_status(handle, "capturing", env=harness.env)
    await harness.env.sleep(RETRY_WINDOW_PASSED)
    await wait_for_status(handle, "awaiting_reconciliation", env=harness.env)
    assert harness.payment(order_id).attempts[0].status is AttemptStatus.UNKNOWN
    assert [m["kind"] for m in harness.messages("customer:c-1")] == []

    await reconcile(harness)
    view = await wait_for_status(handle, "paid", env=harness.env)

    assert view.invoice_number
    assert harness.order(order_id).paid.amount == Decimal("120.00")
    assert [m["kind"] for m in harness.messages("customer:c-1")] == ["payment_received"]


async def payment_whose_capture_cannot_begin(harness):
    """A payment whose capture step cannot even begin its attempt: the gateway's key cannot say
    whose account it is (until the test deletes `harness.gateway.account`)."""
    def account_unknown() -> str:
        raise GatewayUnavailable("the gateway cannot say whose key this is")

    harness.gateway.account = account_unknown
    order_id, handle = await start_payment(harness, "tok_visa")
    await wait_for_status(handle, "capturing", env=harness.env)
    return order_id, handle


async def test_a_capture_that_never_reached_payments_for_a_day_is_sent_again_as_an_attempt_and_ends_paid_once(harness):
    order_id, handle = await payment_whose_capture_cannot_begin(harness)
    await harness.env.sleep(RETRY_WINDOW_PASSED)
    # Nothing was recorded, so nothing went out: the attempt is sent again, not the flow failed.
    await wait_for_trail(handle, "capture attempt 1 never reached payments: sent again", harness.env)
    await harness.env.sleep(RETRY_WINDOW_PASSED)  # and again, a second day without an answer
    await wait_for_trail(handle, "capture attempt 1 never reached payments: sent again", harness.env, times=2)
    del harness.gateway.account  # the key can say whose it is again
    await harness.env.sleep(timedelta(hours=2))  # the step's next try (its back-off reaches an hour)

    view = await wait_for_status(handle, "paid", env=harness.env)

    await keep_history(handle, "payment_capture_sent_again_after_it_never_reached_payments")
    assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING  # open for cancellation
    assert view.invoice_number and harness.order(order_id).paid.amount == Decimal("120.00")
    [attempt] = harness.payment(order_id).attempts
    assert harness.gateway.calls == {attempt.attempt_id: 1}  # charged once
    assert [m["kind"] for m in harness.messages("customer:c-1")] == ["payment_received"]


async def test_a_cancellation_accepted_while_the_capture_never_reached_payments_goes_first_and_nothing_is_charged(harness):
    order_id, handle = await payment_whose_capture_cannot_begin(harness)
    cancellation = await handle.start_update(
        PaymentWorkflow.cancel_order,
        CancellationRequest(requested_by=CUSTOMER, **signed(CUSTOMER), reason="changed my mind"),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )
    await harness.env.sleep(RETRY_WINDOW_PASSED)  # the step gives up; payments holds no attempt
    del harness.gateway.account  # a resend would now reach the gateway and charge the card

    # Bounded: had the attempt gone out first, the flow would charge, refund and stay open.
    answer = await asyncio.wait_for(cancellation.result(), timeout=60)
    result = await asyncio.wait_for(handle.result(), timeout=60)

    await keep_history(handle, "payment_cancelled_before_its_capture_was_sent_again")
    assert (answer, result.status) == ("cancelled", "cancelled")
    assert "capture attempt 1 never reached payments: sent again" not in result.trail
    assert harness.gateway.calls == {}  # nothing charged, so nothing to give back
    order = harness.order(order_id)
    assert order.cancelled and not order.paid.is_positive and order.refunds == {}
    with pytest.raises(NotFound):  # payments never recorded an attempt, nor the payment
        harness.payment(order_id)


async def test_a_capture_looked_up_under_another_accounts_key_stays_unknown_until_its_own_account_answers(harness):
    # The card was charged, the answer lost. The worker then runs with another account's key, whose
    # search would find nothing: were that "not charged", recovery would charge the card again.
    order_id, handle = await start_payment(harness, "tok_capture_answer_lost")
    await wait_for_status(handle, "capturing", env=harness.env)
    await harness.env.sleep(RETRY_WINDOW_PASSED)
    await wait_for_status(handle, "awaiting_reconciliation", env=harness.env)
    [attempt] = harness.payment(order_id).attempts
    assert attempt.sent_to == "test:acct_fake"

    harness.gateway.account_id = "test:acct_another"
    await reconcile(harness)

    [discrepancy] = harness.discrepancies()
    assert discrepancy.id == f"lookup_refused:{attempt.attempt_id}"
    assert "acct_another" in discrepancy.detail
    assert harness.payment(order_id).attempts[0].status is AttemptStatus.UNKNOWN
    assert (await handle.query(PaymentWorkflow.status_view)).status == "awaiting_reconciliation"

    harness.gateway.account_id = "test:acct_fake"  # the right key again
    await reconcile(harness)
    await wait_for_status(handle, "paid", env=harness.env)
    assert harness.order(order_id).paid.amount == Decimal("120.00")


async def test_a_refused_capture_request_is_reconciled_as_not_charged_and_recovery_goes_on(harness):
    order_id, handle = await start_payment(harness, "tok_capture_refused")
    await wait_for_status(handle, "awaiting_reconciliation", env=harness.env)

    await reconcile(harness)
    view = await wait_for_status(handle, "recovering", env=harness.env)
    await keep_history(handle, "payment_capture_refused_then_not_charged")

    assert view.decline_code == "not_charged"
    [attempt] = harness.payment(order_id).attempts
    assert (attempt.status, attempt.decline_code) == (AttemptStatus.DECLINED, "not_charged")
    assert harness.order(order_id).paid.amount == Decimal("0")
    assert [m["kind"] for m in harness.messages("customer:c-1")] == ["payment_declined"]


async def test_a_capture_that_never_arrived_fails_only_when_the_gateway_confirms_it(harness):
    order_id, handle = await start_payment(harness, "tok_capture_never_arrives")
    await wait_for_status(handle, "capturing", env=harness.env)
    await harness.env.sleep(RETRY_WINDOW_PASSED)
    await wait_for_status(handle, "awaiting_reconciliation", env=harness.env)

    await reconcile(harness)
    view = await wait_for_status(handle, "recovering", env=harness.env)

    assert view.decline_code == "not_charged"
    assert harness.gateway.settlements(datetime.now(UTC).date()) == []


# -- a signal names no sender ----------------------------------------------------------------------------
async def test_a_forged_gateway_answer_completes_no_refund_and_the_flow_takes_only_what_payments_recorded(harness):
    order_id = await delivered(harness)
    refund_id = new_id("r-refused")  # the gateway refuses the request: no money moves
    handle = await start_refund(harness, order_id, "30.00", refund_id=refund_id)
    await wait_for_status(handle, "awaiting_reconciliation", env=harness.env)

    # Anyone who may signal the workflow claims the gateway paid it...
    forged = GatewayRefundSettled(
        order_id=order_id, refund_id=refund_id, amount=Money.of("30.00", "EUR"), gateway_reference="re_forged",
        event_id="forged-1",
    )
    await handle.signal("gateway_answer", Outcome(command_id="somebody/forged", events=[forged]))
    # ...or names a real payments command that is no answer (the flow's own "unknown" record).
    await handle.signal("gateway_answer", Outcome(command_id=f"refund-{refund_id}/mark-unknown", events=[forged]))
    trail = await wait_for_trail(handle, "ignored a gateway answer", harness.env, times=2)

    assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
    assert (await handle.query("status")).get("status") == "awaiting_reconciliation"
    assert not any(entry.startswith("CompleteRefund") for entry in trail)
    assert harness.refund(order_id, refund_id).status.value == "approved"
    assert harness.order(order_id).refundable.amount == Decimal("90.00")  # still reserved
    assert "refund_completed" not in [m["kind"] for m in harness.messages("customer:c-1")]

    await reconcile(harness)  # payments asks the gateway: it holds no such refund
    result = await handle.result()

    assert (result.status, result.reason) == ("failed", "not_paid:GatewayRefundNotFound")
    assert harness.order(order_id).refundable.amount == Decimal("120.00")
    assert harness.gateway.refunds_paid(refund_id) == 0


@asynccontextmanager
async def refunds_reading_payments_slowly(harness, slow: Callable[[GatewayQuestion], bool]):
    """A flows worker of its own whose read of payments' recorded answer (`RecordedAnswer`) waits
    for `go_on` when `slow(question)`; yields (start a refused refund, asked, go_on)."""
    payments = PaymentsActivities(harness.deps.uow_factory, harness.gateway)
    go_on, asked = threading.Event(), threading.Event()

    @activity.defn(name=GatewayQuestion.activity_name)
    def recorded_answer_slowly(question: GatewayQuestion) -> Outcome | None:
        if slow(question):
            asked.set()
            go_on.wait(60)
        return payments.recorded_answer(question)

    local = [
        a
        for owner in OWNER_QUEUES
        for a in activities_for(owner, harness.deps.uow_factory, harness.gateway, harness.deps.mailbox)
        if a.__temporal_activity_definition.name != GatewayQuestion.activity_name
    ] + [recorded_answer_slowly]
    queue = f"{FLOWS_QUEUE}-slow-payments-{new_id('q')}"

    async def refused_refund(order_id: str, refund_id: str):  # the gateway refuses it: no money moves
        return harness.track(await harness.client.start_workflow(
            RefundWorkflow.run,
            RefundRequest(refund_id=refund_id, order_id=order_id, amount=Money.of("30.00", "EUR"),
                          reason="arrived damaged", requested_by=CUSTOMER, **signed(CUSTOMER)),
            id=f"refund-{refund_id}",
            task_queue=queue,
        ))

    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(harness.client, task_queue=queue, workflows=WORKFLOWS, activities=local,
                          activity_executor=executor):
            try:
                yield refused_refund, asked, go_on
            finally:
                go_on.set()


async def test_a_cancel_while_the_flow_asks_payments_for_the_answer_changes_nothing(harness):
    # Payments' read is held up; the operator presses Cancel meanwhile. The flow asks again,
    # and the gateway's answer (never sent: nothing paid) still decides and frees the money.
    order_id = await delivered(harness)
    refund_id = new_id("r-refused")  # the gateway refuses the request: no money moves

    async with refunds_reading_payments_slowly(harness, lambda question: True) as (
        refused_refund, payments_asked, payments_slow,
    ):
        handle = await refused_refund(order_id, refund_id)
        await wait_for_status(handle, "awaiting_reconciliation", env=harness.env)
        await reconcile(harness)
        async with real_time(harness.env):
            await asyncio.to_thread(payments_asked.wait, 30)
            await handle.cancel()
            for _ in range(240):  # the Cancel reaches the flow with its next workflow task
                if any(line.startswith("Cancel while asking payments") for line in (await handle.query("status"))["trail"]):
                    break
                await asyncio.sleep(0.25)
            payments_slow.set()
            result = await handle.result()

    assert (result.status, result.reason) == ("failed", "not_paid:GatewayRefundNotFound")
    assert harness.order(order_id).refundable.amount == Decimal("120.00")
    assert harness.gateway.refunds_paid(refund_id) == 0


async def test_reconciliations_answer_is_taken_although_a_stray_signal_came_after_it(harness):
    """The flow is reading payments for a stray `gateway_answer` when reconciliation's genuine
    one arrives, then another stray one. Only the last signal used to be kept: the genuine
    answer was pushed out, reconciliation (which tells a flow once) found nothing open any
    more, and the refund stayed reserved for good. Every signal is now read in turn."""
    order_id = await delivered(harness)
    refund_id = new_id("r-refused")

    async with refunds_reading_payments_slowly(harness, lambda question: question.command_id == "stray/1") as (
        refused_refund, stray_read, go_on,
    ):
        handle = await refused_refund(order_id, refund_id)
        await wait_for_status(handle, "awaiting_reconciliation", env=harness.env)
        async with real_time(harness.env):
            await handle.signal("gateway_answer", Outcome(command_id="stray/1", events=[]))
            await asyncio.to_thread(stray_read.wait, 30)
        await reconcile(harness)  # the genuine answer (not found: nothing paid) comes meanwhile
        async with real_time(harness.env):
            await handle.signal("gateway_answer", Outcome(command_id="stray/2", events=[]))
            go_on.set()
            result = await asyncio.wait_for(handle.result(), 60)  # it used to wait for ever

    assert (result.status, result.reason) == ("failed", "not_paid:GatewayRefundNotFound")
    assert harness.order(order_id).refundable.amount == Decimal("120.00")  # released on the answer


async def test_a_forged_capture_answer_marks_no_order_paid_and_recovery_follows_payments_answer(harness):
    order_id, handle = await start_payment(harness, "tok_capture_refused")  # nothing is charged
    await wait_for_status(handle, "awaiting_reconciliation", env=harness.env)
    attempt_id = harness.payment(order_id).attempts[0].attempt_id

    forged = PaymentCaptured(
        order_id=order_id, customer_id="c-1", attempt_id=attempt_id, amount=Money.of("120.00", "EUR"),
        gateway_reference="ch_forged", event_id="forged-2",
    )
    await handle.signal("gateway_answer", Outcome(command_id="somebody/forged", events=[forged]))
    await wait_for_trail(handle, "ignored a gateway answer", harness.env)

    assert (await handle.query("status")).get("status") == "awaiting_reconciliation"
    assert harness.order(order_id).paid.amount == Decimal("0")
    assert harness.payment(order_id).attempts[0].status is AttemptStatus.UNKNOWN
    assert [m["kind"] for m in harness.messages("customer:c-1")] == []

    await reconcile(harness)
    view = await wait_for_status(handle, "recovering", env=harness.env)

    assert view.decline_code == "not_charged"
    assert harness.order(order_id).paid.amount == Decimal("0")
    assert [m["kind"] for m in harness.messages("customer:c-1")] == ["payment_declined"]


async def support_resolves(harness: ReconHarness, discrepancy: str, note: str) -> None:
    """As `starter.py resolve-discrepancy` does: one resolution per time it is open."""
    with harness.uow_factory() as uow:
        workflow_id = verbs.resolution_workflow_id(uow.discrepancies.get(discrepancy))
    async with real_time(harness.env):
        await harness.client.execute_workflow(
            ResolveDiscrepancyWorkflow.run,
            DiscrepancyResolution(discrepancy_id=discrepancy, note=note, resolved_by=Actor.parse("support:sam"),
                                  **signed("support:sam")),
            id=workflow_id, task_queue=FLOWS_QUEUE,
        )


async def refunds_sent_and_never_answered(harness: ReconHarness, count: int) -> list[str]:
    """Refunds payments sent whose answer was lost and that no flow waits for (started by hand,
    as a script might), a minute apart: open requests for reconciliation, due a day later, read
    oldest first."""
    payments = PaymentsActivities(harness.uow_factory, harness.gateway)
    refunds = []
    for _ in range(count):
        await harness.env.sleep(timedelta(minutes=1))
        now = await harness.env.get_current_time()
        order_id, refund_id = new_id("o"), new_id("r-answer_lost")
        payments.capture_payment(command(CapturePayment, issued_at=now, order_id=order_id, customer_id="c-1",
                                         amount=Money.of("50.00", "EUR"), card_token="tok_visa"))
        with pytest.raises(ApplicationError, match="GatewayUnavailable"):  # the money moved; its answer was lost
            payments.send_refund_to_gateway(command(SendRefundToGateway, issued_at=now, order_id=order_id,
                                                    refund_id=refund_id, amount=Money.of("20.00", "EUR")))
        refunds.append(refund_id)
    await harness.env.sleep(RETRY_WINDOW_PASSED)  # longer than any flow still sends it
    return refunds


async def pass_asking_at_most(harness: ReconHarness, lookups: int) -> ReconciliationResult:
    handle = await harness.client.start_workflow(
        ReconciliationWorkflow.run, ReconciliationRun(lookups_per_pass=lookups), id=new_id("reconciliation"),
        task_queue=FLOWS_QUEUE,
    )
    return await handle.result()  # time skips over the look-ups' retries


async def test_a_pass_asks_the_gateway_about_at_most_its_share_and_the_next_pass_asks_the_rest(harness):
    refunds = await refunds_sent_and_never_answered(harness, 3)

    first = await pass_asking_at_most(harness, 2)
    second = await pass_asking_at_most(harness, 2)

    assert (first.asked, first.answered, first.left_open) == (2, 2, 1)
    assert "asking about 2 of them; the other 1 the next passes" in first.trail
    assert (second.asked, second.answered, second.left_open) == (1, 1, 0)
    assert sorted(d.business_id for d in harness.discrepancies()) == sorted(refunds)  # each found paid, its flow gone
    assert all(harness.gateway.refunds_paid(r) == 1 for r in refunds)  # asking moved no money


async def test_a_pass_stops_asking_once_the_gateway_could_not_answer_three_in_a_row(harness):
    await refunds_sent_and_never_answered(harness, 5)
    harness.gateway.reachable = False  # the gateway is down

    down = await pass_asking_at_most(harness, 500)
    harness.gateway.reachable = True
    back = await pass_asking_at_most(harness, 500)

    assert (down.asked, down.answered, down.left_open) == (3, 0, 5)
    assert "3 look-ups in a row failed (the gateway, or payments, unreachable): the other 2 the next pass" in down.trail
    assert (back.asked, back.answered, back.left_open) == (5, 5, 0)


async def test_a_look_up_answered_between_failures_keeps_the_pass_asking(harness):
    first, second, answered, fourth, fifth = await refunds_sent_and_never_answered(harness, 5)
    harness.gateway.unreachable_for = {first, second, fourth, fifth}  # asked oldest first: two fail, one answers, two fail

    result = await pass_asking_at_most(harness, 500)

    assert (result.asked, result.answered, result.left_open) == (5, 1, 4)
    assert not any("in a row failed" in step for step in result.trail)
    assert [d.business_id for d in harness.discrepancies()] == [answered]  # found paid, its flow gone


async def test_look_ups_the_gateway_refuses_do_not_stop_the_pass(harness):
    refunds = await refunds_sent_and_never_answered(harness, 4)
    harness.gateway.refuses_lookups = True  # it answers, with a refusal (another account's payment?)

    result = await pass_asking_at_most(harness, 500)

    assert (result.asked, result.answered, result.left_open) == (4, 0, 4)
    assert sorted(d.id for d in harness.discrepancies()) == sorted(f"lookup_refused:{r}" for r in refunds)


async def test_a_read_of_open_requests_returns_the_longest_waiting_first_and_at_most_its_limit(harness, monkeypatch):
    oldest, second, *_ = await refunds_sent_and_never_answered(harness, 5)  # their payments' ids in no order
    monkeypatch.setattr(reconciliation_activities, "OPEN_REQUESTS_PER_READ", 2)
    monkeypatch.setattr(reconciliation_activities, "PAYMENTS_PER_PAGE", 1)  # a page at a time, as past not-due ones
    reads = ReconciliationActivities(harness.uow_factory, harness.gateway)

    found = reads.find_open_gateway_requests(ReconciliationScan(as_of=await harness.env.get_current_time()))

    assert [request.business_id for request in found] == [oldest, second]


# -- the daily pass ------------------------------------------------------------------------------------------
async def test_a_settlement_payments_does_not_know_is_recorded_once_and_support_told_once(harness):
    day = date(2026, 11, 30)
    harness.gateway.moved["ch_stray"] = SettlementLine(
        kind="capture",
        business_id="payment-o-stray/capture",
        order_id="o-stray",
        reference="ch_stray",
        amount=Money.of("55.00", "EUR"),
        settled_at=datetime(2026, 11, 30, 14, 0, tzinfo=UTC),
    )

    first = await reconcile(harness, daily=True, day=day, history="reconciliation_daily_discrepancy")
    again = await reconcile(harness, daily=True, day=day)

    [discrepancy] = harness.discrepancies()
    assert (discrepancy.kind.value, discrepancy.order_id, discrepancy.gateway) == (
        "missing_in_payments", "o-stray", Money.of("55.00", "EUR"),
    )
    assert (first.discrepancies, again.discrepancies) == (1, 0)
    assert len(harness.support_messages()) == 1


async def test_a_refund_the_cards_bank_sent_back_is_flagged_for_support_to_pay_another_way(harness):
    order_id = await delivered(harness)
    handle = await start_refund(harness, order_id, "30.00")
    assert (await handle.result()).status == "completed"
    refund_id = handle.id.removeprefix("refund-")
    paid = harness.gateway.moved[refund_id]  # the refund id is its idempotency key
    reversed_at = paid.settled_at + timedelta(seconds=5)  # the card was closed: the money came back
    harness.gateway.moved[f"reversal-{refund_id}"] = SettlementLine(
        kind="refund_reversal", business_id=paid.business_id, order_id=order_id, reference=paid.reference,
        amount=paid.amount, settled_at=reversed_at,
    )

    first = await reconcile(harness, daily=True, day=reversed_at.date())
    again = await reconcile(harness, daily=True, day=reversed_at.date())

    [flag] = harness.discrepancies()
    assert (flag.id, flag.order_id, flag.ours, flag.gateway) == (
        f"refund_reversed:{refund_id}", order_id, Money.of("30.00", "EUR"), Money.of("30.00", "EUR"),
    )
    assert (first.discrepancies, again.discrepancies) == (1, 0)
    assert [m["kind"] for m in harness.support_messages()] == ["discrepancy_found"]


async def test_a_day_whose_settlements_cannot_be_read_is_flagged_and_the_stranded_check_still_runs(harness):
    await terminated_while_sending(harness)
    harness.gateway.reachable = False  # the gateway is down all through the daily pass (an hour of tries)
    day = date(2026, 11, 30)

    run = await harness.client.start_workflow(
        ReconciliationWorkflow.run, ReconciliationRun(daily=True, settlement_day=day), id=new_id("reconciliation"),
        task_queue=FLOWS_QUEUE,
    )
    result = await run.result()  # time skips through the tries' backoff

    found = {d.kind.value: d for d in harness.discrepancies()}
    assert set(found) == {"settlements_not_compared", "flow_gone"}  # the money held is still found
    assert (found["settlements_not_compared"].id, found["settlements_not_compared"].order_id) == (
        "settlements_not_compared:2026-11-30", "")
    assert "starter.py compare-settlements 2026-11-30" in found["settlements_not_compared"].detail
    assert (result.status, result.discrepancies) == ("done", 2)
    assert len(harness.support_messages()) == 2


def stray_capture(harness: ReconHarness, order_id: str, amount: str = "55.00") -> None:
    """A capture the gateway settled on 2026-11-30 that payments never asked for."""
    harness.gateway.moved[f"ch_{order_id}"] = SettlementLine(
        kind="capture", business_id=f"payment-{order_id}/capture", order_id=order_id, reference=f"ch_{order_id}",
        amount=Money.of(amount, "EUR"), settled_at=datetime(2026, 11, 30, 14, 0, tzinfo=UTC),
    )


async def run_failing(
    harness: ReconHarness, day: date | None = None, daily: bool = True,
) -> tuple[ApplicationError, ReconciliationResult]:
    """A pass whose run ends failed, and what it showed last; time skips over its steps' retries."""
    handle = await harness.client.start_workflow(
        ReconciliationWorkflow.run, ReconciliationRun(daily=daily, settlement_day=day), id=new_id("reconciliation"),
        task_queue=FLOWS_QUEUE,
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert isinstance(failed.value.cause, ApplicationError)
    return failed.value.cause, await handle.query("status", result_type=ReconciliationResult)


def refuse_to_save(harness: ReconHarness, table: str, when: str = "1") -> None:
    """Rows of `table` (matching `when`) that never save, as a broken row or a full disk would."""
    with harness.engine.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE TRIGGER stuck_{table} BEFORE INSERT ON {table} WHEN {when} "
            f"BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )


def saving_again(harness: ReconHarness, table: str) -> None:
    with harness.engine.begin() as connection:
        connection.exec_driver_sql(f"DROP TRIGGER stuck_{table}")


async def test_a_discrepancy_that_will_not_save_is_noted_the_pass_goes_on_and_the_run_fails_naming_the_day(harness):
    day = date(2026, 11, 30)
    stray_capture(harness, "o-stuck")
    stray_capture(harness, "o-saved")
    _, stranded_refund = await terminated_while_sending(harness)
    refuse_to_save(harness, "discrepancies", when="NEW.id LIKE '%o-stuck%'")

    failure, view = await run_failing(harness, day)
    recorded_by_the_pass = {d.id for d in harness.discrepancies()}
    saving_again(harness, "discrepancies")
    again = await reconcile(harness, daily=True, day=day)  # as support does, told by the failure

    stuck = "missing_in_payments:payment-o-stuck/capture"
    assert (failure.type, view.status, view.not_recorded) == ("DiscrepanciesNotRecorded", "not_all_recorded", [stuck])
    assert f"1 discrepancy(ies) not recorded: {stuck}" in failure.message
    assert "compare 2026-11-30 again: starter.py compare-settlements 2026-11-30" in failure.message
    assert recorded_by_the_pass == {"missing_in_payments:payment-o-saved/capture", f"flow_gone:{stranded_refund}"}
    assert {d.id for d in harness.discrepancies()} == recorded_by_the_pass | {stuck}
    assert (again.status, again.discrepancies, again.not_recorded) == ("done", 1, [])
    assert len(harness.support_messages()) == 3  # each told once


async def test_once_two_discrepancies_would_not_save_the_rest_of_the_pass_are_not_tried(harness):
    for order in ("o-1", "o-2", "o-3"):
        stray_capture(harness, order)
    refuse_to_save(harness, "discrepancies")  # none can be saved

    failure, view = await run_failing(harness, date(2026, 11, 30))

    assert "3 discrepancy(ies) not recorded" in failure.message
    assert "starter.py compare-settlements 2026-11-30" in failure.message
    assert (view.status, len(view.not_recorded)) == ("not_all_recorded", 3)
    assert len([step for step in view.trail if "not recorded: could not be saved" in step]) == 2
    assert len([step for step in view.trail if step.endswith("not recorded: not tried, saving is failing")]) == 1
    assert (harness.discrepancies(), harness.support_messages()) == ([], [])


async def test_a_finding_reconciliation_refuses_to_record_is_named_as_a_bug_and_holds_up_no_other(harness):
    too_long = "x" * 1001  # a stray charge's metadata, longer than any id settleflow keeps
    for order in (f"{too_long}-1", f"{too_long}-2", "z-stray"):  # compared in this order (by business id)
        stray_capture(harness, order)

    failure, view = await run_failing(harness, date(2026, 11, 30))

    refused = [step for step in view.trail if "not recorded: refused, a bug to report" in step]
    assert (len(refused), len(view.not_recorded)) == (2, 2)
    assert [d.id for d in harness.discrepancies()] == ["missing_in_payments:payment-z-stray/capture"]  # not skipped
    assert "of them refused, a bug to report" in failure.message
    assert failure.message.count("has no settled record of it") == 2  # each one's detail, to see to by hand
    assert "compare-settlements" not in failure.message  # comparing again would be refused again


async def test_a_discrepancy_support_cannot_be_told_of_stays_open_and_the_run_fails_naming_it(harness):
    for order in ("o-1", "o-2", "o-3"):
        stray_capture(harness, order)
    refuse_to_save(harness, "notifications")  # support's messages can never be saved

    failure, view = await run_failing(harness, date(2026, 11, 30))

    opened = sorted(d.id for d in harness.discrepancies())
    assert (view.status, view.not_recorded, sorted(view.not_told)) == ("not_all_recorded", [], opened)
    assert len(opened) == 3  # each recorded, though telling support failed
    assert len([step for step in view.trail if "not tried, saving messages is failing" in step]) == 1
    assert "recorded, support not told (no later pass tells them): " in failure.message
    assert "compare-settlements" not in failure.message  # recorded: nothing of the day is missing
    assert harness.support_messages() == []


async def test_a_gone_flows_answer_that_will_not_save_as_a_discrepancy_is_described_in_full_in_the_failure(harness):
    order_id, refund_id, handle, _ = await refund_awaiting_reconciliation(harness, "answer_lost")
    await handle.terminate("an operator pressed Terminate")
    refuse_to_save(harness, "discrepancies")

    failure, _ = await run_failing(harness, daily=False)  # the frequent pass

    assert f"found by no later pass, see to it by hand: flow_gone:{refund_id}: payments now records" in failure.message
    assert f"refund-{refund_id} no longer runs" in failure.message
    assert harness.payment(order_id).refunds[refund_id].status is GatewayRefundStatus.SETTLED  # payments answered


async def test_a_stranded_check_that_cannot_be_read_is_noted_and_the_next_daily_pass_finds_what_it_missed(
    harness, monkeypatch
):
    _, refund_id = await terminated_while_sending(harness)

    def database_down(self, as_of):
        # As its last try fails (the step's five tries take half a minute of real time here).
        raise ApplicationError("the database is unreachable", non_retryable=True)

    monkeypatch.setattr(ReconciliationActivities, "_reserved_refunds", database_down)
    first = await reconcile(harness, daily=True)
    monkeypatch.undo()
    await harness.env.sleep(timedelta(days=1))
    second = await reconcile(harness, daily=True)

    assert first.status == "done"  # the run went on (money owed, unanswered stops) and ended
    assert any(line.startswith("reconciliation.FindStrandedRefunds could not be read") for line in first.trail)
    assert first.discrepancies == 0 and second.discrepancies >= 1
    assert [d.id for d in harness.discrepancies()] == [f"flow_gone:{refund_id}"]  # the money held is found


async def test_a_daily_pass_that_cannot_list_the_open_gateway_requests_still_compares_its_day(harness, monkeypatch):
    stray_capture(harness, "o-stray")

    def database_down(self):
        # As the read's last try would fail (non-retryable: its five tries take half a minute).
        raise ApplicationError("the database is unreachable", non_retryable=True)

    monkeypatch.setattr(PaymentRepository, "awaiting_answers", database_down)
    result = await reconcile(harness, daily=True, day=date(2026, 11, 30))

    assert result.status == "done"
    assert any(line.startswith("reconciliation.FindOpenGatewayRequests could not be read") for line in result.trail)
    assert [d.id for d in harness.discrepancies()] == ["missing_in_payments:payment-o-stray/capture"]


async def test_money_a_cancelled_order_owes_after_a_review_said_no_is_flagged_until_a_refund_takes_it(
    harness,
):
    support, analyst = Actor.parse("support:sam"), Actor.parse("fraud_analyst:alice")
    order_id, payment = await start_payment(harness, "tok_visa", "1500.00")
    await wait_for_status(payment, "paid", env=harness.env)
    await ship(harness, order_id)
    in_review = await start_refund(harness, order_id, "1000.00")  # large: waits for a person
    await wait_for_status(in_review, "under_review", env=harness.env)
    async with real_time(harness.env):
        await payment.execute_update(
            PaymentWorkflow.cancel_order, CancellationRequest(requested_by=support, **signed(support), reason="parcel lost")
        )
        await payment.result()  # the 500.00 not in review went back at once
        await in_review.execute_update(RefundWorkflow.resolve_review, ReviewResolution(
            decision=ReviewDecision.REJECT, reviewer=analyst, **signed(analyst)))
        await in_review.result()
    assert harness.order(order_id).owed == Money.of("1000.00", "EUR")
    await harness.env.sleep(timedelta(hours=2))

    first = await reconcile(harness, daily=True, history="reconciliation_daily_money_owed")
    [flag] = harness.discrepancies()
    assert (flag.id, flag.order_id, flag.ours) == (f"money_owed:{order_id}", order_id, Money.of("1000.00", "EUR"))
    assert f"starter.py refund --order-id {order_id}" in flag.detail
    await harness.env.sleep(timedelta(days=1))
    second = await reconcile(harness, daily=True)  # still open: support was told once

    paid_back = await start_refund(harness, order_id, by="support:sam")  # all still owed; fraud clears it
    async with real_time(harness.env):
        assert (await paid_back.result()).status == "completed"
    await support_resolves(harness, flag.id, "refunded the rest")
    await harness.env.sleep(timedelta(days=1))
    third = await reconcile(harness, daily=True)

    assert (first.discrepancies, second.discrepancies, third.discrepancies) == (1, 0, 0)
    assert harness.discrepancies() == []
    assert harness.order(order_id).owed == Money.zero("EUR")
    assert sorted(m["kind"] for m in harness.support_messages()) == [
        "discrepancy_found", "refund_owed_support",  # told once by billing, once by reconciliation
    ]


async def paid_back_before_credit_notes(harness: ReconHarness, amount: str = "30.00") -> tuple[str, str]:
    """A delivered order of 120.00 with a refund of `amount` paid out, and its invoice as a flow of
    a release before credit notes left it: no credit note for that refund."""
    order_id = await delivered(harness)
    handle = await start_refund(harness, order_id, amount)
    async with real_time(harness.env):
        assert (await handle.result()).status == "completed"
    refund_id = handle.id.removeprefix("refund-")
    invoice = harness.invoice(order_id).model_copy(update={"credit_notes": []})
    with harness.engine.begin() as connection:
        connection.execute(tables.invoices.update().where(tables.invoices.c.id == invoice.id).values(
            state=dump_state(invoice), credit_notes=0, version=invoice.version + 1,
        ))
    return order_id, refund_id


async def test_a_refund_paid_out_before_refunds_credited_their_invoice_is_credited_once_by_the_daily_pass(harness):
    order_id, refund_id = await paid_back_before_credit_notes(harness)

    first = await reconcile(harness, daily=True, history="reconciliation_daily_credits_a_refund")
    await harness.env.sleep(timedelta(days=1))
    second = await reconcile(harness, daily=True)

    [note] = harness.invoice(order_id).credit_notes
    assert (note.refund_id, note.amount, note.number) == (
        refund_id, Money.of("30.00", "EUR"), credit_note_number(order_id, refund_id),
    )
    assert (first.credited, second.credited, first.discrepancies, second.discrepancies) == (1, 0, 0, 0)
    assert not any("CreditInvoice" in step for step in second.trail)  # nothing left to ask
    assert harness.discrepancies() == []


async def test_a_credit_note_invoicing_fails_to_issue_is_left_for_the_next_pass_and_holds_up_no_other(harness):
    stuck_order, stuck_refund = await paid_back_before_credit_notes(harness)
    order_id, refund_id = await paid_back_before_credit_notes(harness)
    with harness.engine.begin() as connection:  # the stuck order's invoice can no longer be saved
        connection.exec_driver_sql(
            f"CREATE TRIGGER stuck BEFORE UPDATE ON invoices WHEN OLD.order_id = '{stuck_order}' "
            f"BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )

    handle = await harness.client.start_workflow(  # time skips over the retries' waits
        ReconciliationWorkflow.run, ReconciliationRun(daily=True), id=new_id("reconciliation"), task_queue=FLOWS_QUEUE,
    )
    first = await handle.result()
    with harness.engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER stuck")
    await harness.env.sleep(timedelta(days=1))
    second = await reconcile(harness, daily=True)

    assert (first.status, first.credited, first.discrepancies) == ("done", 1, 0)
    assert any(f"credit refund {stuck_refund}" in step and "asked again next pass" in step for step in first.trail)
    assert [n.refund_id for n in harness.invoice(order_id).credit_notes] == [refund_id]
    assert (second.credited, [n.refund_id for n in harness.invoice(stuck_order).credit_notes]) == (1, [stuck_refund])
    assert harness.discrepancies() == []


async def test_once_invoicing_failed_three_credit_notes_in_a_pass_the_rest_wait_for_the_next_pass(harness):
    for _ in range(4):
        await paid_back_before_credit_notes(harness)
        await harness.env.sleep(timedelta(days=8))  # fraud reviews a customer's third refund within 7 days
    with harness.engine.begin() as connection:  # no invoice can be saved
        connection.exec_driver_sql("CREATE TRIGGER stuck BEFORE UPDATE ON invoices BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")

    handle = await harness.client.start_workflow(  # time skips over the retries' waits
        ReconciliationWorkflow.run, ReconciliationRun(daily=True), id=new_id("reconciliation"), task_queue=FLOWS_QUEUE,
    )
    result = await handle.result()

    unasked = [step for step in result.trail if "asked again next pass" in step]
    assert (result.status, result.credited, len(unasked)) == ("done", 0, 3)
    assert result.trail[-1] == "invoicing is failing: the other refunds without a credit note wait for the next pass"


async def test_a_refund_invoicing_cannot_credit_is_flagged_for_support_once_and_not_asked_about_again(harness):
    order_id, refund_id = await paid_back_before_credit_notes(harness)
    with harness.engine.begin() as connection:  # the order was never invoiced
        connection.execute(tables.invoices.delete().where(tables.invoices.c.order_id == order_id))

    first = await reconcile(harness, daily=True)
    [flag] = harness.discrepancies()
    await support_resolves(harness, flag.id, "credit note CN-MANUAL-7 issued by hand")
    await harness.env.sleep(timedelta(days=1))
    second = await reconcile(harness, daily=True)

    assert (flag.id, flag.order_id, flag.ours) == (
        f"refund_not_credited:{refund_id}", order_id, Money.of("30.00", "EUR"),
    )
    assert f"order {order_id} has no invoice to credit" in flag.detail
    assert (first.credited, first.discrepancies, second.discrepancies) == (0, 1, 0)
    assert not any("CreditInvoice" in step for step in second.trail)  # support's now: not asked again
    [told] = [m for m in harness.support_messages() if m["kind"] == "discrepancy_found"]
    assert f"refund_not_credited:{refund_id}" in told["body"]


async def test_a_refund_whose_flow_told_support_it_has_no_credit_note_is_left_to_support_by_the_daily_pass(harness):
    order_id = await delivered(harness)
    with harness.engine.begin() as connection:  # the order was never invoiced
        connection.execute(tables.invoices.delete().where(tables.invoices.c.order_id == order_id))
    handle = await start_refund(harness, order_id, "30.00")
    async with real_time(harness.env):
        assert (await handle.result()).status == "completed"

    daily = await reconcile(harness, daily=True)

    assert (daily.credited, daily.discrepancies) == (0, 0)
    assert not any("CreditInvoice" in step for step in daily.trail)
    assert [m["kind"] for m in harness.support_messages()] == ["invoice_not_credited_support"]  # told once, by the flow


async def test_a_parcel_stop_whose_refund_flow_ended_before_asking_shipping_is_flagged_naming_the_flow_to_resume(
    harness,
):
    order_id, payment = await start_payment(harness, "tok_visa", "1500.00")
    await wait_for_status(payment, "paid", env=harness.env)
    await ship(harness, order_id)
    refund_id = new_id("r-all")
    in_review = await start_refund(harness, order_id, refund_id=refund_id)  # all of it: the parcel is to stop
    await wait_for_status(in_review, "under_review", env=harness.env)  # it stops once fraud lets the money go
    await harness.env.sleep(timedelta(hours=2))
    assert harness.order(order_id).parcel_stop.refund_id == refund_id

    while_it_runs = await reconcile(harness, daily=True)  # a review may take days: not a question yet
    await in_review.terminate("an operator pressed Terminate")
    after = await reconcile(harness, daily=True, history="reconciliation_daily_parcel_not_stopped")

    flags = {d.kind.value: d for d in harness.discrepancies()}
    assert (while_it_runs.discrepancies, after.discrepancies) == (0, 2)
    assert set(flags) == {"parcel_not_stopped", "flow_gone"}  # and its money is still reserved
    stop = flags["parcel_not_stopped"]
    assert (stop.id, stop.order_id) == (f"parcel_not_stopped:{order_id}", order_id)
    assert f"starter.py resume-flow refund-{refund_id}" in stop.detail and "terminated" in stop.detail
    assert harness.order(order_id).fulfilment == "shipped"  # describing is all reconciliation does


async def test_a_parcel_stop_nobody_carried_to_shipping_cannot_be_resumed_and_support_is_told_to_ask_the_carrier(
    harness,
):
    order_id, payment = await start_payment(harness, "tok_visa", "80.00")
    await wait_for_status(payment, "paid", env=harness.env)
    await ship(harness, order_id)
    now = (await harness.env.get_current_time()).astimezone(UTC)
    # A refund decided outside any flow (as a run of a release before would leave it): billing
    # asks for the stop, and no flow of that refund exists to carry it.
    BillingActivities(harness.uow_factory).request_refund(command(
        RequestRefund, actor=Actor.parse("support:sam"), issued_at=now, order_id=order_id, refund_id="r-orphan",
        reason="lost",
    ))
    await harness.env.sleep(timedelta(hours=2))

    await reconcile(harness, daily=True)

    [stop] = [d for d in harness.discrepancies() if d.kind.value == "parcel_not_stopped"]
    assert "refund-r-orphan, is not found" in stop.detail and "ask the carrier to stop the parcel" in stop.detail
    await harness.env.sleep(timedelta(days=1))
    await reconcile(harness, daily=True)  # still open: support was told once
    assert [m["kind"] for m in harness.support_messages()].count("discrepancy_found") == 2  # this and flow_gone


async def test_a_daily_run_held_back_two_days_compares_the_day_before_it_was_asked_for(harness):
    asked_at = (await harness.env.get_current_time()).astimezone(UTC)
    # Its first workflow task waits two days (every worker down; the test server cannot skip
    # time while a task waits for a worker, so the delay is the server's own start delay).
    run = await harness.client.start_workflow(
        ReconciliationWorkflow.run, ReconciliationRun(daily=True), id=new_id("reconciliation-daily"),
        task_queue=FLOWS_QUEUE, start_delay=timedelta(days=2),
    )
    result = await run.result()

    meant_for = (asked_at - timedelta(days=1)).date()
    assert any(line.startswith(f"settlements of {meant_for}:") for line in result.trail), result.trail


async def test_a_day_compared_again_under_the_same_id_is_decided_again_not_answered_from_the_first_run(harness):
    harness.gateway.reachable = False  # the listing cannot be read, the first time and the second
    day = date(2026, 11, 30)

    async def compare_again():  # what `starter.py compare-settlements 2026-11-30` starts, run after run
        run = await harness.client.start_workflow(
            ReconciliationWorkflow.run, ReconciliationRun(daily=True, settlement_day=day),
            id=f"reconciliation-settlements-{day}", task_queue=FLOWS_QUEUE,
        )
        return await run.result()

    await compare_again()
    [found] = harness.discrepancies()
    await support_resolves(harness, found.id, "compared it by hand")
    await harness.env.sleep(timedelta(minutes=1))
    second = await compare_again()

    assert second.discrepancies == 1
    assert [d.id for d in harness.discrepancies()] == ["settlements_not_compared:2026-11-30"]
    assert len(harness.support_messages()) == 2


async def test_a_gone_flow_support_resolved_is_not_reopened_while_the_same_run_holds_the_money(harness):
    # (Another run gone again reopens it: tests/unit/test_recording_discrepancies.py. A second
    # run of the same id, terminated here, left the later tests' time skipping timing out.)
    await terminated_while_sending(harness)
    await reconcile(harness, daily=True)
    [found] = harness.discrepancies()
    await support_resolves(harness, found.id, "refunded by hand, ticket 881")

    same_run = await reconcile(harness, daily=True)  # the run support dealt with: nothing new

    assert (same_run.discrepancies, harness.discrepancies()) == (0, [])
    assert [m["kind"] for m in harness.support_messages()] == ["discrepancy_found"]


async def stray_refund_at_the_gateway(harness, refund_id: str):
    """A refund the gateway settled that settleflow never asked for: the daily pass records it."""
    harness.gateway.moved[f"re_{refund_id}"] = SettlementLine(
        kind="refund", business_id=refund_id, order_id=f"o-{refund_id}", reference=f"re_{refund_id}",
        amount=Money.of("5.00", "EUR"), settled_at=datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
    )
    await reconcile(harness, daily=True, day=date(2026, 11, 30))
    [found] = harness.discrepancies()
    return found


async def test_a_second_charge_days_after_the_first_is_reported_as_a_duplicate_of_the_paid_attempt(harness):
    order_id, handle = await start_payment(harness, "tok_visa")
    await wait_for_status(handle, "paid", env=harness.env)
    [attempt] = harness.payment(order_id).attempts
    later = (datetime.now(UTC) + timedelta(days=3)).date()
    # The gateway charges again under the same attempt id, three days on (another PaymentIntent).
    harness.gateway.moved["second-charge"] = SettlementLine(
        kind="capture", business_id=attempt.attempt_id, order_id=order_id, reference="pi_second",
        amount=Money.of("120.00", "EUR"), settled_at=datetime.combine(later, time(9), tzinfo=UTC),
    )

    await reconcile(harness, daily=True, day=later)

    [found] = harness.discrepancies()
    assert (found.id, found.gateway) == (f"duplicate_at_gateway:{attempt.attempt_id}", Money.of("120.00", "EUR"))
    assert "pi_second" in found.detail and attempt.gateway_reference in found.detail


async def test_support_resolves_a_discrepancy_with_a_note_and_it_is_no_longer_open(harness):
    found = await stray_refund_at_the_gateway(harness, "r-stray")

    async with real_time(harness.env):
        handle = await harness.client.start_workflow(
            ResolveDiscrepancyWorkflow.run,
            DiscrepancyResolution(
                discrepancy_id=found.id, note="a test refund in the shared account",
                resolved_by=Actor.parse("support:sam"), **signed("support:sam"),
            ),
            id=f"resolve-discrepancy-{found.id}",
            task_queue=FLOWS_QUEUE,
        )
        view = await handle.result()
    await keep_history(handle, "resolve_discrepancy")

    assert view.status == "resolved"
    assert harness.discrepancies() == []
    with harness.uow_factory() as uow:
        resolved = uow.discrepancies.get(found.id)
    assert (resolved.resolved_by, resolved.note) == ("support:sam", "a test refund in the shared account")


# -- the schedule ------------------------------------------------------------------------------------------
@pytest.fixture
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server has no Schedules: this one test uses the dev server."""
    environment = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter, interceptors=[AddressUpdates(), SealsCommands()],
        dev_server_existing_path=temporal_cli(),
        search_attributes=list(SEARCH_ATTRIBUTES),
    )
    yield environment
    await environment.shutdown()


async def test_the_schedules_exist_after_start_up_and_creating_them_again_is_harmless(dev_server):
    client = dev_server.client
    first = await ensure_schedules(client)
    frequent = client.get_schedule_handle(FREQUENT)
    await frequent.pause(note="an operator paused it")

    second = await ensure_schedules(client)  # the next worker start-up

    assert set(first) == {FREQUENT, DAILY} and second == []
    described = await frequent.describe()
    assert described.schedule.state.paused and described.schedule.state.note == "an operator paused it"
    daily = await client.get_schedule_handle(DAILY).describe()
    assert daily.schedule.spec.calendars and not daily.schedule.state.paused


def schedule_cli(client):
    """`starter.py schedule WORDS` as its verb sees it: starter.Cli's two members the verbs use."""

    class Cli:
        def __init__(self, *words: str) -> None:
            self.args = starter.build_parser().parse_args(["schedule", *words])

        async def client(self):
            return client

        def out(self, text: str, **data) -> None:
            print(text)

    return Cli


async def test_starter_schedule_verbs_pause_unpause_trigger_and_retime_the_frequent_pass(dev_server, capsys):
    client = dev_server.client
    await ensure_schedules(client)
    Cli = schedule_cli(client)

    await verbs.schedule(Cli("pause", "--note", "gateway maintenance"))
    paused = (await client.get_schedule_handle(FREQUENT).describe()).schedule.state
    await verbs.schedule(Cli("interval", "10"))
    await verbs.schedule(Cli("unpause"))
    await verbs.schedule(Cli("trigger", "--daily"))
    frequent = (await client.get_schedule_handle(FREQUENT).describe()).schedule

    assert (paused.paused, paused.note) == (True, "gateway maintenance")
    assert not frequent.state.paused
    assert [spec.every for spec in frequent.spec.intervals] == [timedelta(minutes=10)]
    assert "reconciliation: unpause done; running" in capsys.readouterr().out


async def test_starter_schedule_lookups_changes_only_how_many_open_requests_a_pass_asks_about(dev_server):
    client = dev_server.client
    await ensure_schedules(client)
    Cli = schedule_cli(client)

    async def run_asked(schedule_id: str) -> ReconciliationRun:
        action = (await client.get_schedule_handle(schedule_id).describe()).schedule.action
        [run] = await client.data_converter.decode(list(action.args), [ReconciliationRun])
        return run

    await verbs.schedule(Cli("lookups", "200"))
    await verbs.schedule(Cli("lookups", "1500", "--daily"))
    for bad in (["lookups"], ["lookups", "0"], ["lookups", "2001"], ["lookups", "many"], ["pause", "5"]):
        with pytest.raises(verbs.UsageError):
            await verbs.schedule(Cli(*bad))

    assert await run_asked(FREQUENT) == ReconciliationRun(lookups_per_pass=200)
    assert await run_asked(DAILY) == ReconciliationRun(daily=True, lookups_per_pass=1500)


async def test_a_daily_run_its_schedule_caught_up_late_compares_the_day_before_the_time_it_was_scheduled_for(
    dev_server, tmp_path
):
    # A server down at 02:00 catches the run up later (here: a backfill of three days ago, run now).
    async with recon_harness(dev_server, tmp_path) as harness:
        await ensure_schedules(harness.client)
        meant_for = datetime.combine(datetime.now(UTC).date() - timedelta(days=3), time(2), tzinfo=UTC)
        await harness.client.get_schedule_handle(DAILY).backfill(ScheduleBackfill(
            start_at=meant_for - timedelta(minutes=1), end_at=meant_for + timedelta(minutes=1),
            overlap=ScheduleOverlapPolicy.ALLOW_ALL,
        ))
        run = harness.client.get_workflow_handle_for(
            ReconciliationWorkflow.run, f"{DAILY}-{meant_for:%Y-%m-%dT%H:%M:%SZ}")
        for _ in range(100):  # the schedule starts it within a second or so
            try:
                await run.describe()
                break
            except RPCError:
                await asyncio.sleep(0.1)
        result = await run.result()

    compared = (meant_for - timedelta(days=1)).date()  # not the day before it ran: that is today's
    assert any(line.startswith(f"settlements of {compared}:") for line in result.trail), result.trail


async def test_a_resolution_without_a_token_changes_nothing(harness):
    found = await stray_refund_at_the_gateway(harness, "r-stray2")

    async with real_time(harness.env):
        handle = await harness.client.start_workflow(
            ResolveDiscrepancyWorkflow.run,
            DiscrepancyResolution(discrepancy_id=found.id, note="typed, not proven", resolved_by=Actor.parse("support:sam")),
            id=f"resolve-discrepancy-unsigned-{found.id}",
            task_queue=FLOWS_QUEUE,
        )
        with pytest.raises(WorkflowFailureError):
            await handle.result()

    assert [d.id for d in harness.discrepancies()] == [found.id]  # still open
