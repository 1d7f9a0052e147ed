"""The demo scenarios (`python starter.py demo`, run by `make demo`).

Each scenario is what a user would do from the command line: place an order,
ship it, deliver it, ask for a refund; the workflows and owners do the rest.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowQueryFailedError
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from adapters import db
from adapters.temporal import ui_link
from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types
from cli.resume import reset_reason, resume
from domain.fraud.commands import ReviewDecision
from domain.shared.actor import Actor, Role
from domain.shared.money import Money
from workflows.payment import CancellationRequest, NewPaymentMethod, OrderRequest, PaymentWorkflow
from workflows.process import CUSTOMER_ID, FLOWS_QUEUE, ORDER_ID, REFUND_ID
from workflows.messages import DiscrepancyResolution, ReconciliationRun
from workflows.reconciliation import ReconciliationWorkflow, ResolveDiscrepancyWorkflow
from workflows.refund import RefundRequest, RefundWorkflow, ReviewResolution
from workflows.shipping import ConfirmDeliveryWorkflow, DeliveryRequest, ShipmentRequest, ShipOrderWorkflow
from adapters.identity import signed

WAREHOUSE = Actor(role=Role.WAREHOUSE, id="demo-warehouse")
SCENARIO_TIMEOUT = 120.0  # seconds; each takes one or two when a worker is running


class Demo:
    def __init__(self, client: Client, run: str, uow_factory: Callable[[], Any]) -> None:
        self.client = client
        self.run = run
        self.uow_factory = uow_factory  # the owners' database, for `resume` (cli/resume.py)
        # Customers of this run only: fraud screening counts a customer's recent refunds,
        # so a shared customer would send the next run's refunds to a review.
        self.customer = f"c-{run}"
        self.as_customer = Actor(role=Role.CUSTOMER, id=self.customer)
        self.settled_when: dict[str, set[str]] = {}
        self.notes: dict[str, str] = {}  # workflow id -> what a person did along the way

    async def _start(
        self, workflow, request, workflow_id: str, summary: str, attrs: dict[SearchAttributeKey[str], str]
    ) -> WorkflowHandle:
        return await self.client.start_workflow(
            workflow,
            request,
            id=workflow_id,
            task_queue=FLOWS_QUEUE,
            static_summary=summary,
            search_attributes=TypedSearchAttributes([SearchAttributePair(k, v) for k, v in attrs.items()]),
        )

    async def order(
        self, name: str, amount: str, card: str = "tok_visa", customer: str | None = None, at: datetime | None = None
    ) -> str:
        order_id = f"{self.run}-{name}"
        customer = customer or self.customer
        total = Money.of(amount, "EUR")
        handle = await self._start(
            PaymentWorkflow,
            OrderRequest(
                order_id=order_id,
                customer_id=customer,
                amount=total,
                card_token=card,
                placed_by=Actor(role=Role.CUSTOMER, id=customer), **signed(Actor(role=Role.CUSTOMER, id=customer)),
                placed_at=at,
            ),
            f"payment-{order_id}",
            f"Order {order_id}: capture {total} from {customer}",
            {ORDER_ID: order_id, CUSTOMER_ID: customer},
        )
        await status_when(handle, lambda status: status != "capturing")  # it stays open until delivery
        return order_id

    async def ship(self, order_id: str, at: datetime | None = None) -> None:
        handle = await self._start(
            ShipOrderWorkflow,
            ShipmentRequest(order_id=order_id, tracking=f"TRK-{order_id}", shipped_at=at, requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            f"ship-{order_id}",
            f"Ship order {order_id}",
            {ORDER_ID: order_id},
        )
        await handle.result()

    async def deliver(self, order_id: str, at: datetime | None = None) -> None:
        handle = await self._start(
            ConfirmDeliveryWorkflow,
            DeliveryRequest(order_id=order_id, delivered_at=at, requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            f"deliver-{order_id}",
            f"Confirm delivery of order {order_id}",
            {ORDER_ID: order_id},
        )
        await handle.result()

    async def refund(self, order_id: str, amount: str | None, reason: str, by: Actor) -> WorkflowHandle:
        refund_id = f"{order_id}-r"
        return await self._start(
            RefundWorkflow,
            RefundRequest(
                refund_id=refund_id,
                order_id=order_id,
                amount=Money.of(amount, "EUR") if amount else None,
                reason=reason,
                requested_by=by, **signed(by),
            ),
            f"refund-{refund_id}",
            f"Refund {refund_id} of order {order_id}: {amount or 'everything'} EUR, asked by {by}",
            {ORDER_ID: order_id, REFUND_ID: refund_id},
        )

    # -- the scenarios ----------------------------------------------------------------
    async def completed_refund(self) -> WorkflowHandle:
        order_id = await self.order("completed", "120.00")
        await self.ship(order_id)
        await self.deliver(order_id)
        return await self.refund(order_id, "20.00", "one item arrived damaged", self.as_customer)

    async def rejected_refund(self) -> WorkflowHandle:
        now = datetime.now(timezone.utc)
        order_id = await self.order("late", "80.00", at=now - timedelta(days=50))  # nothing ships before it is placed
        await self.ship(order_id, at=now - timedelta(days=45))
        await self.deliver(order_id, at=now - timedelta(days=40))  # the 30-day window has closed
        return await self.refund(order_id, None, "changed my mind", self.as_customer)

    async def reviewed_refund(self) -> WorkflowHandle:
        order_id = await self.order("reviewed", "1500.00", customer=f"c-big-{self.run}")
        await self.ship(order_id)
        await self.deliver(order_id)
        handle = await self.refund(order_id, None, "wrong model delivered", Actor.parse("support:sam"))
        await self._until_under_review(handle)
        reviewer = Actor.parse("fraud_analyst:alice")
        await handle.execute_update(
            RefundWorkflow.resolve_review,
            ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=reviewer, **signed(reviewer), note="photos check out"),
        )
        self.notes[handle.id] = f"reviewed: approved by {reviewer}"
        return handle

    async def declined_refund(self) -> WorkflowHandle:
        order_id = await self.order("declined", "60.00", card="tok_refund_declined")
        await self.ship(order_id)  # still on the road: billing also asks shipping to intercept it
        return await self.refund(order_id, "60.00", "parcel lost", Actor.parse("support:sam"))

    async def recovered_payment(self) -> WorkflowHandle:
        order_id = await self.order("recovered", "45.00", card="tok_capture_declined")
        handle = self.client.get_workflow_handle(f"payment-{order_id}")
        await handle.execute_update(
            PaymentWorkflow.update_payment_method,
            NewPaymentMethod(card_token="tok_visa", given_by=self.as_customer, **signed(self.as_customer)),
        )
        self.notes[handle.id] = "declined, then paid with a new card"
        return handle

    async def abandoned_payment(self) -> WorkflowHandle:
        order_id = await self.order("stolen-card", "75.00", card="tok_card_stolen")
        return self.client.get_workflow_handle(f"payment-{order_id}")

    async def resumed_refund(self) -> WorkflowHandle:
        order_id = await self.order("answer-lost", "70.00", card="tok_refund_answer_lost")
        await self.ship(order_id)
        await self.deliver(order_id)
        handle = await self.refund(order_id, "70.00", "never arrived", self.as_customer)
        refund_id = f"{order_id}-r"
        await self._until_sent_to_gateway(order_id, refund_id)  # the gateway pays; its answers are lost
        await handle.cancel()  # an operator's Cancel: the refund is unknown, the flow waits for reconciliation
        await status_when(handle, lambda status: status == "awaiting_reconciliation", timeout=30)
        await handle.terminate("terminated by mistake (demo)")  # the flow is gone, the money question open
        reconciliation = await self.client.start_workflow(
            ReconciliationWorkflow.run, ReconciliationRun(), id=f"reconciliation-{self.run}", task_queue=FLOWS_QUEUE,
            static_summary="Reconciliation run by the demo",
        )
        await reconciliation.result()  # the gateway paid it; with its flow gone, a discrepancy for support
        support = Actor.parse("support:sam")
        await resume(self.client, self.uow_factory, handle.id, reset_reason(support, "terminated by mistake (demo)"))
        await status_when(handle, lambda status: status == "completed", timeout=30)
        discrepancy = f"flow_gone:{refund_id}"
        resolved = await self.client.start_workflow(
            ResolveDiscrepancyWorkflow.run,
            DiscrepancyResolution(
                discrepancy_id=discrepancy, note="flow resumed, refund completed", resolved_by=support, **signed(support)
            ),
            id=f"resolve-discrepancy-{discrepancy}", task_queue=FLOWS_QUEUE,
            static_summary=f"Support resolves discrepancy {discrepancy}",
        )
        await resolved.result()
        self.notes[handle.id] = (
            f"gateway answer lost, Cancel, terminated; reconciliation found it paid ({discrepancy}); "
            f"resumed by {support}, discrepancy resolved"
        )
        return handle

    async def _until_sent_to_gateway(self, order_id: str, refund_id: str, timeout: float = 30) -> None:
        """Until payments has recorded the request (the flow shows `sending` just before)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            with self.uow_factory() as uow:
                payment = uow.payments.find(order_id)
            if payment is not None and refund_id in payment.refunds:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"refund {refund_id} never reached payments")
            await asyncio.sleep(0.1)

    async def cancelled_and_refunded(self) -> WorkflowHandle:
        order_id = await self.order("cancelled", "90.00", customer=f"c-mover-{self.run}")
        await self.ship(order_id)
        handle = self.client.get_workflow_handle(f"payment-{order_id}")
        await handle.execute_update(
            PaymentWorkflow.cancel_order,
            CancellationRequest(requested_by=Actor.parse("support:sam"), **signed(Actor.parse("support:sam")), reason="customer moved abroad"),
        )
        self.notes[handle.id] = f"refund-{order_id}-cancellation paid it back"
        self.settled_when[handle.id] = {"refunded"}  # its story ends once the child refund is done
        return handle

    @staticmethod
    async def _until_under_review(handle: WorkflowHandle) -> None:
        view = await status_when(handle, lambda status: status != "requested", timeout=30)
        if view["status"] != "under_review":
            raise RuntimeError(f"{handle.id} never reached a fraud review: it is {view['status']}")


async def status_when(
    handle: WorkflowHandle, done: Callable[[str], bool], timeout: float | None = None, interval: float = 0.1
) -> dict:
    """Poll a workflow's `status` query until `done(status)`, or until it closes.

    For processes that stay open after the part a user waits for (a paid order's
    PaymentWorkflow stays open for cancellations until delivery).
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    unanswered_until = loop.time() + 10  # how long a query may fail before that is an error
    while True:
        try:
            view = await handle.query("status")
        except (RPCError, WorkflowQueryFailedError) as unanswered:  # its first workflow task may not have run yet
            if loop.time() > unanswered_until:
                raise RuntimeError(
                    f"{handle.id} does not answer its status query ({unanswered}); "
                    "is a worker running, and are its workflow tasks failing (see the worker's log)?"
                ) from None
            view = None
        if view is not None:
            if done(view["status"]):
                return view
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                # closed between the query and now: ask again for its final status
                return await handle.query("status")
        if deadline is not None and loop.time() > deadline:
            raise TimeoutError(f"{handle.id} is still {view['status'] if view else 'starting'} after {timeout:.0f} s")
        await asyncio.sleep(interval)


SCENARIOS = [
    ("completed refund", Demo.completed_refund),
    ("rejected refund (30-day window closed)", Demo.rejected_refund),
    ("refund held for fraud review, approved by an analyst", Demo.reviewed_refund),
    ("refund declined by the gateway, compensated", Demo.declined_refund),
    ("payment declined, recovered with a new card", Demo.recovered_payment),
    ("payment abandoned after a hard decline, order cancelled", Demo.abandoned_payment),
    ("paid order cancelled in transit, refunded and intercepted", Demo.cancelled_and_refunded),
    ("refund whose gateway answer was lost, terminated by mistake, resumed by support", Demo.resumed_refund),
]

# Where a scenario's story ends (payment processes stay open for cancellations).
SETTLED = {"completed", "rejected", "failed", "cancelled", "paid", "abandoned", "refunded"}


async def run_demo(cli: Any) -> list[dict]:
    client = await cli.client()
    engine = db.make_engine(cli.settings.database_url)
    try:
        return await _run_scenarios(cli, client, lambda: SqlUnitOfWork(engine, default_aggregate_types()))
    finally:
        engine.dispose()


async def _run_scenarios(cli: Any, client: Client, uow_factory: Callable[[], Any]) -> list[dict]:
    demo = Demo(client, f"demo-{datetime.now(timezone.utc):%m%d%H%M%S}-{uuid.uuid4().hex[:4]}", uow_factory)
    results = []
    for title, scenario in SCENARIOS:
        try:
            handle = await asyncio.wait_for(scenario(demo), SCENARIO_TIMEOUT)
            settled = demo.settled_when.get(handle.id, SETTLED)
            outcome = await status_when(handle, lambda status: status in settled, timeout=SCENARIO_TIMEOUT)
        except TimeoutError:
            raise RuntimeError(
                f"demo scenario {title!r} did not finish within {SCENARIO_TIMEOUT:.0f} s "
                "(is a worker running? see its log)"
            ) from None
        row = {
            "scenario": title,
            "workflow_id": handle.id,
            "status": outcome["status"],
            "reason": outcome.get("reason", ""),
            "note": demo.notes.get(handle.id, ""),
            "ui": ui_link(cli.settings, handle.id),
        }
        results.append(row)
        why = ", ".join(part for part in (row["reason"], row["note"]) if part)
        why = f" ({why})" if why else ""
        cli.out(f"{title}\n  {handle.id}: {row['status']}{why}\n  {row['ui']}", **row)
    return results
