"""Chaos run: many orders and refunds while workers crash and the Temporal server restarts,
then check that money moved exactly once and every fact was recorded exactly once.

    .venv/bin/python -m chaos.run [--orders 200] [--kills 5] [--seed S] [--quick] [--keep]

Exit code 0: no violation; 1: at least one violation (or the stack did not come up).
See chaos/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402
from temporalio.client import (  # noqa: E402
    Client,
    WorkflowFailureError,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy  # noqa: E402
from adapters.codec import data_converter  # noqa: E402
from adapters.temporal import AddressUpdates  # noqa: E402
from adapters.seal import SealsCommands
from temporalio.exceptions import WorkflowAlreadyStartedError  # noqa: E402
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter  # noqa: E402
from temporalio.service import RPCError  # noqa: E402

from adapters import db  # noqa: E402
from adapters.mailbox import FileMailbox  # noqa: E402
from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types  # noqa: E402
from simulators.control import configure, read_ledger  # noqa: E402
from adapters.inspection import outbox_rows  # noqa: E402
from adapters.tables import notifications  # noqa: E402
from adapters.views import order_view  # noqa: E402
from chaos.events import EventFaults  # noqa: E402
from chaos.redelivery import Redelivery  # noqa: E402
from devstack import Stack, stop_on_sigterm  # noqa: E402
from domain.fraud.commands import ReviewDecision  # noqa: E402
from domain.shared.actor import Actor, Role  # noqa: E402
from domain.shared.money import Money  # noqa: E402
from workflows.payment import NewPaymentMethod, OrderRequest, PaymentWorkflow  # noqa: E402
from workflows.process import FLOWS_QUEUE, ORDER_ID, REFUND_ID  # noqa: E402
from workflows.messages import ReconciliationRun  # noqa: E402
from workflows.reconciliation import ReconciliationWorkflow  # noqa: E402
from workflows.refund import RefundRequest, RefundWorkflow, ReviewResolution  # noqa: E402
from worker import Dependencies  # noqa: E402
from workflows.shipping import ConfirmDeliveryWorkflow, DeliveryRequest, ShipmentRequest, ShipOrderWorkflow  # noqa: E402
from adapters.identity import signed

REFUND_FINAL = {"completed", "rejected", "failed", "cancelled"}
PAYMENT_FINAL = {"paid", "abandoned"}
WAREHOUSE = Actor(role=Role.WAREHOUSE, id="chaos-warehouse")
ANALYST = Actor(role=Role.FRAUD_ANALYST, id="chaos-analyst")
CURRENCY = "EUR"
CENT = Decimal("0.01")

# Card mix: (token, weight). tok_capture_declined orders are recovered with a new card or
# driven to abandonment; a few tok_refund_declined orders give failed refunds.
CARDS = [("tok_visa", 50), ("tok_flaky", 20), ("tok_timeout", 15), ("tok_capture_declined", 10),
         ("tok_refund_declined", 5), ("tok_refund_answer_lost", 6), ("tok_capture_answer_lost", 4),
         ("tok_capture_refused", 3)]
# Lost answers: the money moves at the gateway, but no answer ever gets through. A day of
# retries cannot pass in a chaos run, so the driver cuts them short the way an operator
# would, with Cancel: the flow records the outcome unknown and waits for reconciliation,
# which a background task runs every few seconds (the schedule runs every 5 minutes).
ANSWER_LOST_CAPTURE, ANSWER_LOST_REFUND = "tok_capture_answer_lost", "tok_refund_answer_lost"
RECONCILE_EVERY = 3.0  # seconds between the driver's reconciliation passes
QUERY_ATTEMPTS = 2  # a final status query that goes unanswered is asked once more


def log(line: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {line}", flush=True)


# -- what was driven ---------------------------------------------------------------------
@dataclass
class Order:
    order_id: str
    customer_id: str
    amount: Decimal
    card: str
    payment_status: str = ""          # final status seen by the driver
    refund_ids: list[str] = field(default_factory=list)
    shipped: bool = False
    delivered: bool = False
    error: str = ""


@dataclass
class Faults:
    kills: int = 0
    server_restarts: int = 0
    server_signal: str = ""
    worker_exits_restarted: int = 0   # workers that exited by themselves and were restarted
    duplicate_starts: int = 0
    reviews_decided: int = 0  # refunds held for fraud review, decided by the driver as an analyst
    duplicate_rejected: int = 0
    duplicate_accepted: list[str] = field(default_factory=list)
    rpc_retries: int = 0
    error_rate: float = 0.0
    latency_ms: int = 0


@dataclass
class Config:
    orders: int
    kills: int
    seed: int
    concurrency: int
    fault_window: tuple[float, float]
    timeout: float
    refund_share: float = 0.85
    duplicate_share: float = 0.5
    late_refund_share: float = 0.15
    keep: bool = False


# -- the harness ---------------------------------------------------------------------------
class Chaos:
    def __init__(self, cfg: Config, stack: Stack, client: Client, deps: Dependencies) -> None:
        self.cfg = cfg
        self.stack = stack
        self.client = client
        self.rng = random.Random(cfg.seed)
        self.faults = Faults()
        self.orders: list[Order] = []
        self.workflow_ids: dict[str, str] = {}   # workflow id -> kind (payment, ship, deliver, refund)
        self.run_tag = f"{cfg.seed}"
        self.workers: list[Any] = []
        self.temporal: Any = None
        self.worker_lock = asyncio.Lock()  # one change to the worker list at a time
        self.deadline = 0.0
        self.redelivery = Redelivery(deps)
        self.redeliveries: list[asyncio.Task] = []
        self.deps = deps
        self.reconciliations = 0  # passes run to the end
        self.reconciliation_attempts = 0  # each pass gets an id of its own, even one whose answer was lost
        self.cancelled_while_waiting = 0  # flows an "operator" cancelled while the gateway's answer was lost

    # -- resilient client calls ----------------------------------------------------------
    async def rpc(self, what: str, call: Callable[[], Awaitable[Any]], retry_on: tuple = ()) -> Any:
        """Repeat a client call across a server restart (RPC errors) until the overall deadline."""
        while True:
            try:
                return await call()
            except (RPCError, *retry_on) as trouble:
                if time.monotonic() > self.deadline:
                    raise TimeoutError(f"{what}: still failing at the deadline: {trouble}") from None
                self.faults.rpc_retries += 1
                await asyncio.sleep(0.5 + self.rng.random())

    async def start(self, workflow, request, workflow_id: str, kind: str, attrs) -> WorkflowHandle:
        """Start once; an 'already started' after a failed attempt means our earlier try got through."""
        self.workflow_ids[workflow_id] = kind
        tried = False
        while True:
            try:
                return await self.client.start_workflow(
                    workflow, request, id=workflow_id, task_queue=FLOWS_QUEUE,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    search_attributes=TypedSearchAttributes([SearchAttributePair(k, v) for k, v in attrs.items()]),
                )
            except WorkflowAlreadyStartedError:
                if tried:
                    return self.client.get_workflow_handle(workflow_id)
                raise
            except RPCError as trouble:
                tried = True
                if time.monotonic() > self.deadline:
                    raise TimeoutError(f"start {workflow_id}: {trouble}") from None
                self.faults.rpc_retries += 1
                await asyncio.sleep(0.5 + self.rng.random())

    async def duplicate_start(self, request: RefundRequest, workflow_id: str, attrs) -> None:
        """Start the SAME refund id again: the server must refuse it."""
        self.faults.duplicate_starts += 1
        try:
            await self.rpc(f"duplicate {workflow_id}", lambda: self.client.start_workflow(
                RefundWorkflow.run, request, id=workflow_id, task_queue=FLOWS_QUEUE,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes([SearchAttributePair(k, v) for k, v in attrs.items()]),
            ))
        except WorkflowAlreadyStartedError:
            self.faults.duplicate_rejected += 1
            return
        self.faults.duplicate_accepted.append(workflow_id)

    async def status(self, handle: WorkflowHandle) -> dict | None:
        try:
            return await handle.query("status")
        except (RPCError, WorkflowQueryFailedError):
            return None

    async def closed(self, handle: WorkflowHandle) -> WorkflowExecutionStatus | None:
        try:
            status = (await handle.describe()).status
        except RPCError:
            return None
        return None if status == WorkflowExecutionStatus.RUNNING else status

    async def until(self, handle: WorkflowHandle, done: Callable[[str], bool], closed_too: bool = False) -> dict:
        """Poll the `status` query until done(status) (and, when asked, the workflow has closed)."""
        while True:
            view = await self.status(handle)
            if view is not None and done(view["status"]):
                if not closed_too or await self.closed(handle) is not None:
                    return view
            elif view is None and await self.closed(handle) not in (None, WorkflowExecutionStatus.COMPLETED):
                raise RuntimeError(f"{handle.id} closed without a final status")
            if time.monotonic() > self.deadline:
                raise TimeoutError(f"{handle.id}: still {view['status'] if view else 'unanswered'}")
            await asyncio.sleep(0.7 + 0.6 * self.rng.random())

    # -- one order's story --------------------------------------------------------------------
    async def order_flow(self, order: Order, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                await self._order_flow(order)
            except Exception as failed:  # recorded; the checks report the flow as unfinished
                order.error = f"{type(failed).__name__}: {failed}"
                log(f"{order.order_id}: driver error {order.error}")

    async def _order_flow(self, order: Order) -> None:
        customer = Actor(role=Role.CUSTOMER, id=order.customer_id)
        pay_id = f"payment-{order.order_id}"
        handle = await self.start(
            PaymentWorkflow.run,
            OrderRequest(order_id=order.order_id, customer_id=order.customer_id,
                         amount=Money.of(order.amount, CURRENCY), card_token=order.card, placed_by=customer, **signed(customer)),
            pay_id, "payment", {ORDER_ID: order.order_id},
        )
        if order.card == ANSWER_LOST_CAPTURE:
            await self.cancel_while(handle, "capturing")
        view = await self.until(handle, lambda s: s not in ("capturing", "awaiting_reconciliation"))
        if view["status"] == "recovering":
            recover = self.rng.random() < 0.5
            view = await self.recover(handle, "tok_visa" if recover else "tok_capture_declined", customer)
        order.payment_status = view["status"]
        if view["status"] == "abandoned":
            await self.until(handle, lambda s: s in PAYMENT_FINAL, closed_too=True)
            return
        if view["status"] != "paid":
            raise RuntimeError(f"{pay_id} ended {view['status']}")

        # ship and deliver: short workflows that complete
        ship = await self.start(
            ShipOrderWorkflow.run,
            ShipmentRequest(order_id=order.order_id, tracking=f"TRK-{order.order_id}", requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            f"ship-{order.order_id}", "ship", {ORDER_ID: order.order_id},
        )
        await self.rpc(f"result {ship.id}", ship.result)
        order.shipped = True
        deliver = await self.start(
            ConfirmDeliveryWorkflow.run,
            DeliveryRequest(order_id=order.order_id, requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            f"deliver-{order.order_id}", "deliver", {ORDER_ID: order.order_id},
        )
        await self.rpc(f"result {deliver.id}", deliver.result)
        order.delivered = True
        order.payment_status = (await self.until(handle, lambda s: s in PAYMENT_FINAL, closed_too=True))["status"]

        if self.rng.random() >= self.cfg.refund_share:
            return
        # refunds: everything, one part, or two parts at once
        shape = self.rng.random()
        if shape < 0.35:
            amounts: list[Decimal | None] = [None]
        elif shape < 0.65:
            amounts = [(order.amount * Decimal(self.rng.uniform(0.2, 0.9))).quantize(CENT)]
        else:
            amounts = [(order.amount * Decimal(self.rng.uniform(0.1, 0.45))).quantize(CENT) for _ in range(2)]
        refunds = []
        for n, amount in enumerate(amounts, 1):
            refund_id = f"{order.order_id}-r{n}"
            order.refund_ids.append(refund_id)
            request = RefundRequest(
                refund_id=refund_id, order_id=order.order_id,
                amount=Money.of(amount, CURRENCY) if amount is not None else None,
                reason="chaos: arrived damaged", requested_by=customer, **signed(customer),
            )
            attrs = {ORDER_ID: order.order_id, REFUND_ID: refund_id}
            refund = await self.start(RefundWorkflow.run, request, f"refund-{refund_id}", "refund", attrs)
            if self.rng.random() < self.cfg.duplicate_share:
                await self.duplicate_start(request, f"refund-{refund_id}", attrs)
            if self.rng.random() < self.cfg.duplicate_share:
                # a second copy of the workflow's RequestRefund, racing the first
                self.redeliveries.append(asyncio.create_task(asyncio.to_thread(
                    self.redelivery.request_refund, refund.id, refund_id, order.order_id, request.amount,
                    request.reason, customer, request.token)))
            refunds.append(refund)
        for refund in refunds:
            view = await self.refund_outcome(refund, order.card)
            # (Not for a lost answer: its SendRefundToGateway never had an outcome to repeat;
            # reconciliation's ReconcileGatewayRefund settled it.)
            if view["status"] == "completed" and order.card != ANSWER_LOST_REFUND \
                    and self.rng.random() < self.cfg.duplicate_share:
                # second copies of the payout and of the customer's message, after the fact
                await asyncio.to_thread(
                    self.redelivery.completed_refund, refund.id, view["refund_id"], order.order_id,
                    Money.model_validate(view["amount"]), order.customer_id)
        if self.rng.random() < self.cfg.duplicate_share / 2:
            # the same refund id again after it closed: REJECT_DUPLICATE still refuses it
            await self.duplicate_start(request, f"refund-{request.refund_id}", attrs)
        if self.rng.random() < self.cfg.late_refund_share:
            # the whole amount once more: billing rejects it (or, after a declined refund,
            # approves it and the gateway declines it again)
            refund_id = f"{order.order_id}-late"
            order.refund_ids.append(refund_id)
            request = RefundRequest(refund_id=refund_id, order_id=order.order_id,
                                    amount=Money.of(order.amount, CURRENCY),
                                    reason="chaos: asked again", requested_by=customer, **signed(customer))
            late = await self.start(RefundWorkflow.run, request, f"refund-{refund_id}", "refund",
                                    {ORDER_ID: order.order_id, REFUND_ID: refund_id})
            await self.refund_outcome(late, order.card)

    async def cancel_while(self, handle: WorkflowHandle, status: str) -> None:
        """An operator's Cancel while the gateway's answer is lost: once the flow has been in
        `status` long enough for its request to reach the gateway (answers hang 5 s)."""
        view = await self.until(handle, lambda s: s != "requested" and s != "started")
        if view["status"] != status:
            return
        await asyncio.sleep(4.0)
        await self.rpc(f"cancel {handle.id}", handle.cancel)
        self.cancelled_while_waiting += 1

    async def reconcile_continuously(self) -> None:
        """What the `reconciliation` schedule does, every few seconds instead of minutes."""
        while True:
            await asyncio.sleep(RECONCILE_EVERY)
            await self.reconcile_once()

    async def reconcile_once(self) -> None:
        # A fresh id per attempt: a pass whose answer was lost in a server restart may still
        # be running, and starting its id again would fail (and once ended the passes for good).
        self.reconciliation_attempts += 1
        try:
            await self.client.execute_workflow(
                ReconciliationWorkflow.run, ReconciliationRun(),
                id=f"chaos-reconciliation-{self.reconciliation_attempts}",
                task_queue=FLOWS_QUEUE, execution_timeout=timedelta(seconds=60),
            )
            self.reconciliations += 1
        except (RPCError, WorkflowFailureError, WorkflowAlreadyStartedError) as trouble:  # the server restarting
            cause = getattr(trouble, "cause", None)  # a WorkflowFailureError says why only in its cause
            log(f"reconciliation pass failed: {type(trouble).__name__}: {trouble}"
                + (f" ({type(cause).__name__}: {cause})" if cause is not None else ""))

    async def refund_outcome(self, handle: WorkflowHandle, card: str = "") -> dict:
        """Wait for a refund's final status. One sent to fraud review (a customer's third
        approved refund within 7 days, e.g. after two declined payouts) is decided by an
        analyst through the `resolve_review` Update, as a person would."""
        if card == ANSWER_LOST_REFUND:
            await self.cancel_while(handle, "sending")
        view = await self.until(handle, lambda s: s in REFUND_FINAL or s == "under_review")
        if view["status"] == "under_review":
            decision = self.rng.choice([ReviewDecision.APPROVE, ReviewDecision.REJECT])
            self.faults.reviews_decided += 1
            try:
                await self.rpc(f"review {handle.id}", lambda: handle.start_update(
                    RefundWorkflow.resolve_review, ReviewResolution(decision=decision, reviewer=ANALYST, **signed(ANALYST)),
                    id=f"chaos-review-{handle.id}", wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                ))
            except WorkflowUpdateFailedError:
                pass  # the review closed meanwhile: the final status tells
        return await self.until(handle, lambda s: s in REFUND_FINAL, closed_too=True)

    async def recover(self, handle: WorkflowHandle, card: str, customer: Actor) -> dict:
        """Give a recovering payment a new card until it is paid or abandoned."""
        while True:
            view = await self.until(handle, lambda s: s != "capturing")
            if view["status"] != "recovering":
                return view
            if not view.get("next_attempt_at"):
                await asyncio.sleep(0.5)
                continue
            attempts = view["attempts"]
            try:
                await self.rpc(f"new card {handle.id}", lambda: handle.start_update(
                    PaymentWorkflow.update_payment_method, NewPaymentMethod(card_token=card, given_by=customer, **signed(customer)),
                    id=f"chaos-card-{attempts}", wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                ))
            except WorkflowUpdateFailedError:
                pass  # the validator refused (state moved on): look again
            await self._until_attempt_after(handle, attempts)

    async def _until_attempt_after(self, handle: WorkflowHandle, attempts: int) -> None:
        while True:
            view = await self.status(handle)
            if view is not None and (view["status"] != "recovering" or
                                     (view["attempts"] > attempts and view.get("next_attempt_at"))):
                return
            if time.monotonic() > self.deadline:
                raise TimeoutError(f"{handle.id}: no new capture attempt")
            await asyncio.sleep(0.7)

    # -- faults ----------------------------------------------------------------------------
    async def kill_a_worker(self) -> None:
        async with self.worker_lock:
            index = self.rng.randrange(len(self.workers))
            victim = self.workers[index]
            log(f"fault: SIGKILL worker pid {victim.pid}")
            await asyncio.to_thread(self.stack.kill_process, victim)
            self.faults.kills += 1
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))  # down for a moment: its tasks time out
            self.workers[index] = await asyncio.to_thread(self.stack.start_worker)
            log(f"worker restarted as pid {self.workers[index].pid}")

    async def restart_server(self) -> None:
        hard = self.rng.random() < 0.5
        self.faults.server_signal = "SIGKILL" if hard else "SIGTERM"
        log(f"fault: {self.faults.server_signal} the Temporal dev server")
        if hard:
            await asyncio.to_thread(self.stack.kill_process, self.temporal)
        else:
            await asyncio.to_thread(self.stack.stop_process, self.temporal)
        await asyncio.sleep(self.rng.uniform(1.0, 4.0))
        self.temporal = await asyncio.to_thread(self.stack.start_temporal)
        self.faults.server_restarts += 1
        log("Temporal dev server back on the same database file and port")

    async def watchdog(self) -> None:
        """Workers that exit by themselves (e.g. while the server is down) are restarted."""
        while True:
            await asyncio.sleep(2.0)
            async with self.worker_lock:
                for index, worker in enumerate(list(self.workers)):
                    if worker.poll() is not None:
                        log(f"worker pid {worker.pid} exited by itself (code {worker.returncode}): restarting")
                        self.faults.worker_exits_restarted += 1
                        self.stack._forget(worker)  # noqa: SLF001 — release its log file
                        self.workers[index] = await asyncio.to_thread(self.stack.start_worker)

    async def inject(self, started: float) -> None:
        low, high = self.cfg.fault_window
        events = [("kill", self.rng.uniform(low, high)) for _ in range(self.cfg.kills)]
        events.append(("server", self.rng.uniform(low + (high - low) * 0.25, low + (high - low) * 0.75)))
        for kind, at in sorted(events, key=lambda e: e[1]):
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            if kind == "kill":
                await self.kill_a_worker()
            else:
                await self.restart_server()

    # -- the run -----------------------------------------------------------------------------
    def plan(self) -> None:
        tokens, weights = zip(*CARDS)
        for i in range(self.cfg.orders):
            card = self.rng.choices(tokens, weights)[0]
            if i < 2:  # always some declined cards, even in a tiny run
                card = "tok_capture_declined"
            elif i < 5:  # and every lost or refused answer
                card = (ANSWER_LOST_REFUND, ANSWER_LOST_CAPTURE, "tok_capture_refused")[i - 2]
            amount = Decimal(self.rng.randint(1000, 90000)) / 100  # below the 1,000.00 fraud review line
            self.orders.append(Order(f"o-{self.run_tag}-{i:04d}", f"c-{self.run_tag}-{i:04d}", amount, card))

    async def drive(self) -> None:
        gate = asyncio.Semaphore(self.cfg.concurrency)
        tasks = []
        for order in self.orders:
            tasks.append(asyncio.create_task(self.order_flow(order, gate)))
            await asyncio.sleep(0.02)
        await asyncio.gather(*tasks)

    # -- final state, as Temporal sees it -------------------------------------------------------
    async def final_statuses(self) -> dict[str, tuple[str, str]]:
        """workflow id -> (execution status, flow status)."""
        out: dict[str, tuple[str, str]] = {}

        async def one(workflow_id: str) -> None:
            handle = self.client.get_workflow_handle(workflow_id)
            try:
                described = await handle.describe()
                execution = described.status.name if described.status else "?"
            except RPCError as trouble:
                out[workflow_id] = (f"describe failed: {trouble}", "")
                return
            # A query can go unanswered once (30 s) when the server first tries the sticky queue
            # of a worker this run killed; a flow's final status is read again before it counts
            # as missing (seen once: a completed payment reported with no status).
            view = None
            for _ in range(QUERY_ATTEMPTS):
                view = await self.status(handle)
                if view is not None:
                    break
            out[workflow_id] = (execution, view["status"] if view else "")

        gate = asyncio.Semaphore(20)

        async def gated(workflow_id: str) -> None:
            async with gate:
                await one(workflow_id)

        await asyncio.gather(*(gated(w) for w in self.workflow_ids))
        return out


# -- checks -------------------------------------------------------------------------------------
def money(text: str) -> Decimal:
    """A view's money string ("120.00 EUR", or "—" for none) as a Decimal."""
    text = (text or "").strip()
    if not text or text == "—":
        return Decimal("0.00")
    return Decimal(text.split()[0])


def run_checks(chaos: Chaos, finals: dict[str, tuple[str, str]]) -> list[tuple[str, int, list[str]]]:
    stack = chaos.stack
    checks: list[tuple[str, int, list[str]]] = []

    # 1. every flow reached a final status
    bad = []
    for workflow_id, kind in chaos.workflow_ids.items():
        execution, status = finals.get(workflow_id, ("missing", ""))
        if kind == "payment":
            # a paid order whose delivery was confirmed (and every abandoned one) has closed
            order = next(o for o in chaos.orders if f"payment-{o.order_id}" == workflow_id)
            must_close = status == "abandoned" or order.delivered
            ok = status in PAYMENT_FINAL and (execution == "COMPLETED" if must_close else execution in ("COMPLETED", "RUNNING"))
        elif kind == "refund":
            ok = status in REFUND_FINAL and execution == "COMPLETED"
        else:
            ok = execution == "COMPLETED"
        if not ok:
            bad.append(f"{workflow_id} ({kind}): {execution} / {status or 'no status'}")
    for order in chaos.orders:
        if order.error:
            bad.append(f"{order.order_id}: driver gave up: {order.error}")
    checks.append(("every flow reached a final status", len(chaos.workflow_ids), bad))

    # 2/3. the gateway ledger: money moved exactly once
    ledger = read_ledger(stack.gateway_url)
    captures_by_ref: dict[str, list[dict]] = defaultdict(list)
    for c in ledger["captures"]:
        captures_by_ref[c["reference"]].append(c)
    refunds_by_ref: dict[str, list[dict]] = defaultdict(list)
    for r in ledger["refunds"]:
        refunds_by_ref[r["reference"]].append(r)
    charge_order = {c["id"]: c["reference"] for c in ledger["captures"]}

    bad = []
    known_orders = {o.order_id for o in chaos.orders}
    for order in chaos.orders:
        status = finals.get(f"payment-{order.order_id}", ("", ""))[1]
        n = len(captures_by_ref.get(order.order_id, []))
        want = {"paid": 1, "abandoned": 0}.get(status)
        if want is None:
            bad.append(f"{order.order_id}: payment status {status or '?'}, {n} ledger capture(s)")
        elif n != want:
            bad.append(f"{order.order_id}: {status}, {n} ledger captures (want {want})")
    for ref in captures_by_ref:
        if ref not in known_orders:
            bad.append(f"ledger capture for unknown reference {ref}")
    checks.append(("ledger: one capture per paid order, none per abandoned", len(chaos.orders), bad))

    bad = []
    refund_ids = {rid: o for o in chaos.orders for rid in o.refund_ids}
    for refund_id in refund_ids:
        status = finals.get(f"refund-{refund_id}", ("", ""))[1]
        n = len(refunds_by_ref.get(refund_id, []))
        want = 1 if status == "completed" else 0
        if n != want:
            bad.append(f"{refund_id}: {status or '?'}, {n} ledger refunds (want {want})")
    for ref in refunds_by_ref:
        if ref not in refund_ids:
            bad.append(f"ledger refund for unknown reference {ref}")
    checks.append(("ledger: one refund per completed refund, none otherwise", len(refund_ids), bad))

    # 4. refunded <= captured, and billing's view matches the ledger to the cent
    bad_bound, bad_view = [], []
    for order in chaos.orders:
        captured = sum((Decimal(c["amount"]) for c in captures_by_ref.get(order.order_id, [])), Decimal("0.00"))
        refunded = sum((Decimal(r["amount"]) for r in ledger["refunds"] if charge_order.get(r["charge"]) == order.order_id),
                       Decimal("0.00"))
        if refunded > captured:
            bad_bound.append(f"{order.order_id}: refunded {refunded} > captured {captured}")
        view = order_view(stack.database_url, order.order_id)
        if view is None:
            bad_view.append(f"{order.order_id}: billing has no such order")
            continue
        paid, back = money(view.paid), money(view.refunded)
        if back > paid:
            bad_bound.append(f"{order.order_id}: billing says refunded {back} > paid {paid}")
        if paid != captured or back != refunded:
            bad_view.append(f"{order.order_id}: billing paid {paid} refunded {back}; "
                            f"ledger captured {captured} refunded {refunded}")
    checks.append(("refunded <= captured (ledger and billing)", len(chaos.orders), bad_bound))
    checks.append(("billing view == gateway ledger, to the cent", len(chaos.orders), bad_view))

    # 5. every message sent exactly once
    engine = db.make_engine(stack.database_url)
    with engine.connect() as connection:
        rows = [dict(r) for r in connection.execute(select(notifications.c.id, notifications.c.state)).mappings()]
    folder = Path(stack.mailbox_dir)
    files = sorted(folder.glob("*.json"))
    messages = [json.loads(p.read_text()) for p in files]
    bad = []
    per_id = Counter(m["notification_id"] for m in messages)
    bad += [f"{nid}: {n} mailbox files" for nid, n in per_id.items() if n > 1]
    for path, message in zip(files, messages):
        expected = hashlib.sha256(message["notification_id"].encode()).hexdigest()[:32]
        if path.stem != expected:
            bad.append(f"{path.name}: named for another notification than {message['notification_id']}")
    stray = FileMailbox(folder).half_written()
    bad += [f"half-written mailbox file {p.name}" for p in stray]
    row_ids = {r["id"] for r in rows}
    file_ids = set(per_id)
    bad += [f"notification row without a mailbox file: {i}" for i in sorted(row_ids - file_ids)]
    bad += [f"mailbox file without a notification row: {i}" for i in sorted(file_ids - row_ids)]
    if len(rows) != len(files):
        bad.append(f"{len(rows)} notification rows, {len(files)} mailbox files")
    checks.append(("one mailbox file per notification (rows == files)", max(len(rows), len(files)), bad))

    # every final flow told its customer (at least once; "at most once" is above)
    bad, expected_count = [], 0
    for order in chaos.orders:
        status = finals.get(f"payment-{order.order_id}", ("", ""))[1]
        kind = {"paid": "payment_received", "abandoned": "payment_abandoned"}.get(status)
        if kind:
            expected_count += 1
            nid = f"customer:{order.customer_id}/{kind}/{order.order_id}"
            if per_id.get(nid) != 1:
                bad.append(f"{nid}: {per_id.get(nid, 0)} messages")
        for refund_id in order.refund_ids:
            rstatus = finals.get(f"refund-{refund_id}", ("", ""))[1]
            if rstatus in REFUND_FINAL:
                expected_count += 1
                nid = f"customer:{order.customer_id}/refund_{rstatus}/{refund_id}"
                if per_id.get(nid) != 1:
                    bad.append(f"{nid}: {per_id.get(nid, 0)} messages")
    checks.append(("each final flow's customer message sent exactly once", expected_count, bad))

    # 6. every event in the outbox exactly once
    rows = outbox_rows(engine)
    bad = []
    ids = Counter(r["event_id"] for r in rows)
    bad += [f"event {e} recorded {n} times" for e, n in ids.items() if n > 1]
    triples = Counter((r["causation_id"], r["event_type"], r["aggregate_id"]) for r in rows)
    bad += [f"{c} → {t} on {a}: {n} outbox rows" for (c, t, a), n in triples.items() if n > 1]
    checks.append(("outbox: each event once; one per (command, type, aggregate)", len(rows), bad))

    # 7. reconciliation left no money question open, and billing equals the settlement listing
    checks.append(reconciliation_check(engine))
    checks.append(settlement_check(chaos))

    # 8. duplicate starts of the same refund id are refused
    f = chaos.faults
    checks.append(("duplicate refund starts rejected (REJECT_DUPLICATE)", f.duplicate_starts,
                   [f"{w}: second start was accepted" for w in f.duplicate_accepted]))

    # 9. a command delivered twice is answered with its first outcome
    again = chaos.redelivery
    checks.append(("command delivered twice: answered with its first outcome",
                   len(again.answers) + len(again.refused), again.check(engine)))
    return checks


def reconciliation_check(engine: Any) -> tuple[str, int, list[str]]:
    """After the run and a reconciliation pass: no capture or refund is still unknown, or
    still `sent` without an answer."""
    with SqlUnitOfWork(engine, default_aggregate_types()) as uow:
        waiting = uow.payments.awaiting_answers()
        items = [
            f"{p.id}: {kind} {business_id} {status}"
            for p in waiting
            for kind, business_id, status, _ in p.awaiting_reconciliation(datetime.max.replace(tzinfo=UTC))
        ]
        total = len(uow.payments.changed_since(datetime(1970, 1, 1, tzinfo=UTC)))
    return ("0 unknown or sent captures and refunds (after reconciliation)", total, items)


def settlement_check(chaos: Chaos) -> tuple[str, int, list[str]]:
    """Billing's ledger per order equals the gateway's settlement listing (the days of the run)."""
    today = datetime.now(UTC).date()
    listing = chaos.deps.gateway.settlements(today - timedelta(days=1)) + chaos.deps.gateway.settlements(today)
    settled: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal("0.00"), Decimal("0.00")])
    for line in listing:
        if line.kind == "refund_reversal":  # money that came back: the refund it undoes is listed
            settled[line.order_id][1] -= line.amount.amount
            continue
        settled[line.order_id][0 if line.kind == "capture" else 1] += line.amount.amount
    bad = []
    for order in chaos.orders:
        view = order_view(chaos.stack.database_url, order.order_id)
        paid, back = (money(view.paid), money(view.refunded)) if view else (Decimal("0.00"), Decimal("0.00"))
        captured, refunded = settled.get(order.order_id, [Decimal("0.00"), Decimal("0.00")])
        if (paid, back) != (captured, refunded):
            bad.append(f"{order.order_id}: billing paid {paid} refunded {back}; settlements {captured} / {refunded}")
    return ("billing's ledger == the gateway's settlement listing, to the cent", len(chaos.orders), bad)


def tally(counter: Counter) -> str:
    return ", ".join(f"{key or '?'} {n}" for key, n in sorted(counter.items()))


def print_table(checks: list[tuple[str, int, list[str]]]) -> int:
    width = max(len(name) for name, _, _ in checks)
    print()
    print(f"{'check'.ljust(width)}  {'checked':>8}  {'violations':>10}")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 10}")
    total = 0
    for name, count, bad in checks:
        print(f"{name.ljust(width)}  {count:>8}  {len(bad):>10}")
        total += len(bad)
    for name, _, bad in checks:
        if bad:
            print(f"\n{name}: {len(bad)} violation(s)")
            for line in bad[:25]:
                print(f"  - {line}")
            if len(bad) > 25:
                print(f"  ... and {len(bad) - 25} more")
    return total


# -- main -------------------------------------------------------------------------------------
async def amain(cfg: Config, stack: Stack) -> int:
    started = time.monotonic()
    log(f"stack in {stack.log_dir.parent}: starting the dev server, the gateway simulator, 2 workers")
    chaos_temporal = await asyncio.to_thread(stack.start_temporal)
    await asyncio.to_thread(stack.start_gateway)
    knobs = configure(stack.gateway_url, error_rate=0.1, latency_ms=25, hang_seconds=5, seed=cfg.seed)
    workers = [await asyncio.to_thread(stack.start_worker) for _ in range(2)]
    events = EventFaults(stack, random.Random(cfg.seed + 1), relay_kills=max(2, cfg.kills))  # relay, NATS, reporting
    await events.start()
    # the client's core logs every retried call while the server is down: keep errors only
    quiet = Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(
        filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))))
    client = await Client.connect(stack.temporal_address, namespace=stack.namespace,
                                  data_converter=data_converter(), runtime=quiet, interceptors=[AddressUpdates(), SealsCommands()])
    # the owners' handlers, for second copies of commands (chaos/redelivery.py)
    deps = Dependencies.connect(stack.database_url, stack.gateway_url, stack.mailbox_dir, gateway_timeout_seconds=3.0)
    chaos = Chaos(cfg, stack, client, deps)
    chaos.temporal, chaos.workers = chaos_temporal, workers
    chaos.faults.error_rate, chaos.faults.latency_ms = knobs.get("error_rate", 0.1), knobs.get("latency_ms", 25)
    chaos.deadline = time.monotonic() + cfg.timeout
    chaos.plan()
    log(f"simulator: {knobs}; driving {cfg.orders} orders ({cfg.concurrency} at a time), "
        f"{cfg.kills} worker kills + 1 server restart in {cfg.fault_window[0]:.0f}-{cfg.fault_window[1]:.0f} s")

    drive_started = time.monotonic()
    watchdog = asyncio.create_task(chaos.watchdog())
    injector = asyncio.create_task(chaos.inject(drive_started))
    event_faults = asyncio.create_task(events.inject(drive_started, cfg.fault_window))
    reconciler = asyncio.create_task(chaos.reconcile_continuously())
    try:
        await chaos.drive()
        await asyncio.gather(*chaos.redeliveries)
        await injector  # every planned fault happens, even if the flows were quicker
        await event_faults
    finally:
        injector.cancel()
        event_faults.cancel()
        reconciler.cancel()
    watchdog.cancel()
    await chaos.reconcile_once()  # one more pass after the run, as the issue asks
    drive_seconds = time.monotonic() - drive_started
    log(f"all flows driven in {drive_seconds:.1f} s; reading the final state")
    chaos.deadline = time.monotonic() + 60
    finals = await chaos.final_statuses()

    checks = run_checks(chaos, finals)
    checks += await events.checks([o.order_id for o in chaos.orders])
    f = chaos.faults
    kinds = Counter(chaos.workflow_ids.values())
    pay = Counter(finals.get(f"payment-{o.order_id}", ("", ""))[1] for o in chaos.orders)
    ref = Counter(finals.get(f"refund-{r}", ("", ""))[1] for o in chaos.orders for r in o.refund_ids)
    cards = Counter(o.card for o in chaos.orders)
    print()
    print("faults injected:")
    print(f"  worker SIGKILLs + restarts   {f.kills}")
    print(f"  server restarts              {f.server_restarts} ({f.server_signal})")
    print(f"  workers that exited alone    {f.worker_exits_restarted} (restarted)")
    print(f"  duplicate refund starts      {f.duplicate_starts} ({f.duplicate_rejected} rejected)")
    print(f"  commands delivered twice     {len(chaos.redelivery.answers) + len(chaos.redelivery.refused)} "
          "(RequestRefund racing its workflow; SendRefundToGateway, NotifyCustomer after completion)")
    print(f"  simulator                    error_rate {f.error_rate}, latency {f.latency_ms} ms, "
          f"tok_timeout hang {knobs.get('hang_seconds')} s (client timeout "
          f"{stack.env.get('SETTLEFLOW_GATEWAY_TIMEOUT', '10')} s)")
    print(f"  client calls retried         {f.rpc_retries} (server unavailable)")
    print(f"  fraud reviews decided        {f.reviews_decided} (by the driver, as an analyst)")
    print(f"  cancelled, answer lost       {chaos.cancelled_while_waiting} (Cancel while the gateway's answer was lost)")
    print(f"  reconciliation passes        {chaos.reconciliations}")
    print(f"  relay SIGKILLs + restarts    {events.kills}; NATS restarts {events.nats_restarts} ({events.nats_signal})")
    print(f"events: outbox {events.summary['outbox']} rows, stream {events.summary['stream']} messages, "
          f"reporting {events.summary['reporting']}")
    print(events.summary["report"])
    print("flows run:")
    print(f"  orders {len(chaos.orders)} ({tally(cards)})")
    print(f"  workflows {len(chaos.workflow_ids)} ({tally(kinds)})")
    print(f"  payments: {tally(pay)}")
    print(f"  refunds:  {tally(ref)}")
    print(f"duration: {time.monotonic() - started:.1f} s (driving {drive_seconds:.1f} s)")
    violations = print_table(checks)
    print(f"\n{'FAIL' if violations else 'OK'}: {violations} violation(s)")
    return 1 if violations else 0


def parse(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=None, help="orders to drive (default 200; --quick 20)")
    parser.add_argument("--kills", type=int, default=None, help="worker SIGKILLs (default 5; --quick 2)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time based, printed)")
    parser.add_argument("--quick", action="store_true", help="20 orders, 2 kills, 1 server restart, < 2 min")
    parser.add_argument("--concurrency", type=int, default=None, help="orders driven at once")
    parser.add_argument("--timeout", type=float, default=None, help="overall seconds for every flow to finish")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    if args.quick:
        return Config(orders=args.orders or 20, kills=args.kills if args.kills is not None else 2, seed=seed,
                      concurrency=args.concurrency or 20, fault_window=(1.0, 8.0),
                      timeout=args.timeout or 240.0, keep=args.keep)
    kills = args.kills if args.kills is not None else 5
    return Config(orders=args.orders or 200, kills=kills, seed=seed, concurrency=args.concurrency or 25,
                  fault_window=(5.0, 5.0 + 12.0 * max(kills, 2)), timeout=args.timeout or 900.0, keep=args.keep)


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    # tok_timeout hangs 5 s; workers give up on a gateway answer after 3 s and ask again
    os.environ.setdefault("SETTLEFLOW_GATEWAY_TIMEOUT", "3")
    base = Path(tempfile.mkdtemp(prefix="settleflow-chaos-"))
    stack = Stack.private(base)
    log(f"seed {cfg.seed}; files in {base}")
    code = 1
    try:
        code = asyncio.run(amain(cfg, stack))
    except Exception as failed:
        log(f"run aborted: {type(failed).__name__}: {failed}")
        code = 1
    except KeyboardInterrupt:
        log("interrupted")
        code = 1
    finally:
        stack.stop()
        if cfg.keep or code:
            log(f"kept {base} (logs in {base / 'logs'})")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return code


if __name__ == "__main__":
    stop_on_sigterm()  # the test suite ends an early quick run with SIGTERM: its stack goes too
    sys.exit(main())
