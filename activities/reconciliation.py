"""The reconciliation owner's activities: what reconciliation reads (payments' open
requests, the ledgers against the gateway's settlement listing, reservations whose flow is
gone, money owed with no refund on its way, stops of a parcel nobody answered, refunds paid out
with no credit note), and the discrepancies it records for support.

Reads decide nothing and change nothing. Recording a discrepancy is a decision of the
Discrepancy owner (load → call one method → save); it never touches money.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.handling import decide
from activities.ports import PaymentGateway
from domain.contracts import Outcome, UntoldAnswer
from domain.payments.gateway import GatewayUnavailable
from domain.reconciliation.commands import RecordDiscrepancy, ResolveDiscrepancy
from domain.reconciliation.discrepancy import Discrepancy
from domain.reconciliation.owed import money_owed, owed_before
from domain.billing.parcel_stop import StopAskedBecause
from domain.reconciliation.queries import MoneyOwed, OpenGatewayRequest, ReconciliationScan, SettlementDay, StrandedRefund
from domain.reconciliation.queries import OPEN_REQUESTS_PER_READ
from domain.reconciliation.queries import RefundToCredit, UnansweredParcelStop
from domain.reconciliation.uncredited import CREDITS_PER_PASS, left_to_support_by, refunds_to_credit
from domain.reconciliation.settlement import Finding, compare, ledger_entries
from domain.reconciliation.stranded import reservations_to_check, reserved_before
from domain.reconciliation.unanswered_stop import asked_before, unanswered_stop

log = logging.getLogger("settleflow.reconciliation")

READ_OPEN_REQUESTS = "reconciliation.FindOpenGatewayRequests"
COMPARE_SETTLEMENTS = "reconciliation.CompareSettlements"
FIND_STRANDED_REFUNDS = "reconciliation.FindStrandedRefunds"
FIND_UNTOLD_ANSWERS = "reconciliation.FindUntoldAnswers"
FIND_MONEY_OWED = "reconciliation.FindMoneyOwed"
FIND_UNANSWERED_PARCEL_STOPS = "reconciliation.FindUnansweredParcelStops"
FIND_REFUNDS_TO_CREDIT = "reconciliation.FindRefundsToCredit"
ORDERS_PER_PAGE = 200  # orders loaded at a time while looking for refunds to credit
PAYMENTS_PER_PAGE = 500  # payments loaded at a time while looking for open gateway requests
# The flow that carries a stop of a parcel to shipping and its answer back to billing.
STOP_CARRIED_BY = {StopAskedBecause.REFUND: "refund-{refund_id}", StopAskedBecause.CANCELLATION: "ship-{order_id}"}
UNTOLD_AT_ONCE = 8  # flows asked (queried, described) at a time
# What Temporal answers when it cannot answer now: one such flow is asked about again next pass.
PASSING_TROUBLE = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED,
                             RPCStatusCode.RESOURCE_EXHAUSTED})
QUERY_WITHIN = timedelta(seconds=3)  # a flow that cannot answer sooner (its worker down) is asked next pass
# Running flows resting on reconciliation's word (their FlowStatus search attribute).
WAITING_FLOWS = "FlowStatus = 'awaiting_reconciliation' AND ExecutionStatus = 'Running'"


def answers_found_by_reconciliation(uow_factory: Callable[[], Any], order_id: str, refund_id: str | None) -> list[Outcome]:
    """Payments' record of the answer reconciliation found for what a flow waits on: its refund
    (`refund_id`), or else the order's latest capture attempt. What a waiting flow is told."""
    with uow_factory() as uow:
        payment = uow.payments.find(order_id)
        found = payment.answers_found_by_reconciliation(refund_id) if payment is not None else []
        return [Outcome.model_validate(r) for c in found if (r := uow.processed_result(c)) is not None]


class ReconciliationActivities:
    def __init__(self, uow_factory: Callable[[], Any], gateway: PaymentGateway, client: Client | None = None) -> None:
        self.uow = uow_factory
        self.gateway = gateway
        self.client = client

    # -- the discrepancy owner ---------------------------------------------------------------
    @activity.defn(name=RecordDiscrepancy.activity_name())
    def record_discrepancy(self, command: RecordDiscrepancy) -> Outcome:
        """New: recorded. Known: the discrepancy decides (open again only when support resolved
        it before this pass was issued; otherwise nothing new)."""

        def found(uow: Any) -> None:
            known = uow.discrepancies.find(command.discrepancy_id)
            if known is None:
                uow.discrepancies.add(Discrepancy.found(command))
            else:
                known.found_again(command)

        return decide(self.uow, command, found)

    @activity.defn(name=ResolveDiscrepancy.activity_name())
    def resolve_discrepancy(self, command: ResolveDiscrepancy) -> Outcome:
        return decide(self.uow, command, lambda uow: uow.discrepancies.get(command.discrepancy_id).resolve(command))

    # -- reads ---------------------------------------------------------------------------------------
    @activity.defn(name=READ_OPEN_REQUESTS)
    def find_open_gateway_requests(self, scan: ReconciliationScan) -> list[OpenGatewayRequest]:
        """Payments' unknown and long-sent captures and refunds (payments says which are due), the
        longest waiting first, at most OPEN_REQUESTS_PER_READ (read a page of payments at a time,
        past ones whose requests are not due yet): the rest are read by a later pass."""
        found: list[OpenGatewayRequest] = []
        after = None
        with self.uow() as uow:
            while len(found) < OPEN_REQUESTS_PER_READ and (
                payments := uow.payments.awaiting_answers(after=after, limit=PAYMENTS_PER_PAGE)
            ):
                found += [
                    OpenGatewayRequest(kind=kind, order_id=payment.id, business_id=business_id, status=status,
                                       amount=amount)
                    for payment in payments
                    for kind, business_id, status, amount in payment.awaiting_reconciliation(scan.as_of)
                ]
                after = (payments[-1].open_since, payments[-1].id)
        return found[:OPEN_REQUESTS_PER_READ]

    @activity.defn(name=COMPARE_SETTLEMENTS)
    def compare_settlements(self, day: SettlementDay) -> list[Finding]:
        """Billing's ledger and payments' records against the gateway's listing of `day`
        (and the next day's: a movement sent just before midnight settles after it)."""
        try:
            listed_by = self.gateway.account()
            listed = self.gateway.settlements(day.day) + self.gateway.settlements(day.day + timedelta(days=1))
        except GatewayUnavailable as trouble:
            raise ApplicationError(f"gateway unavailable: {trouble}", type="GatewayUnavailable") from trouble
        since = datetime.combine(day.day, time(0), tzinfo=UTC)
        with self.uow() as uow:
            payments = {payment.id: payment for payment in uow.payments.changed_since(since)}
            # And the orders the listing names, however long ago they changed: a movement under
            # an old business id (a second charge days after the first) is compared with its record.
            payments.update(uow.payments.find_all({line.order_id for line in listed if line.order_id} - payments.keys()))
            orders = uow.orders.find_all(payments)
            entries = [entry for payment in payments.values() for entry in ledger_entries(payment, orders.get(payment.id))]
        return compare(day.day, listed, entries, listed_by)

    @activity.defn(name=FIND_STRANDED_REFUNDS)
    async def find_stranded_refunds(self, scan: ReconciliationScan) -> list[StrandedRefund]:
        """Refunds whose money billing holds reserved while their flow (`refund-{id}`) no longer
        runs: terminated, failed, timed out, or reset away from and gone. A flow Temporal cannot
        describe now is left for the next daily pass; the others are found."""
        assert self.client is not None, "finding stranded refunds needs the Temporal client"
        # The database is read in a thread: this activity runs on the worker's event loop.
        candidates = await asyncio.to_thread(self._reserved_refunds, scan.as_of)
        statuses = await self._flow_statuses([f"refund-{refund_id}" for _, refund_id, _, _ in candidates])
        stranded = []
        for order_id, refund_id, amount, requested_at in candidates:
            workflow_id = f"refund-{refund_id}"
            if (found := statuses.get(workflow_id)) is None:
                continue  # running, or not describable now
            status, run_id = found
            stranded.append(
                StrandedRefund(
                    order_id=order_id,
                    refund_id=refund_id,
                    amount=amount,
                    requested_at=requested_at,
                    workflow_id=workflow_id,
                    workflow_status=status.name.lower() if status is not None else "not found",
                    workflow_run_id=run_id,
                )
            )
        return stranded

    async def _flow_statuses(
        self, workflow_ids: list[str]
    ) -> dict[str, tuple[WorkflowExecutionStatus | None, str]]:
        """The flows of `workflow_ids` that no longer run, with their status and run (None, ""
        when Temporal knows no such flow), asked a few at a time. One Temporal cannot describe
        now (a frontend blip) is left out, to be asked next pass: it holds up no other."""
        at_once = asyncio.Semaphore(UNTOLD_AT_ONCE)
        unread: list[str] = []

        async def one(workflow_id: str) -> tuple[str, tuple[WorkflowExecutionStatus | None, str] | None]:
            async with at_once:
                try:
                    found = await self._flow_status(workflow_id)
                except RPCError as trouble:
                    if trouble.status not in PASSING_TROUBLE:
                        raise  # not a blip (a permission refused): the whole read fails, and is noted
                    log.warning("reconciliation: could not describe %s, asked again next pass: %s", workflow_id,
                                trouble.message)
                    unread.append(workflow_id)
                    return workflow_id, None
                return workflow_id, None if found[0] is WorkflowExecutionStatus.RUNNING else found

        wanted = list(dict.fromkeys(workflow_ids))
        found = await asyncio.gather(*map(one, wanted))
        if wanted and len(unread) == len(wanted):
            # Temporal is down, not blipping: "nothing found" would read as a clean answer.
            raise ApplicationError(f"Temporal could describe none of the {len(wanted)} flow(s) asked about",
                                   type="TemporalUnavailable")
        return {wid: gone for wid, gone in found if gone is not None}

    async def _flow_status(self, workflow_id: str) -> tuple[WorkflowExecutionStatus | None, str]:
        """The status and run of a flow's latest run (None, "" when Temporal knows no such flow)."""
        assert self.client is not None
        try:
            description = await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise
            return None, ""
        return description.status, description.run_id

    @activity.defn(name=FIND_UNANSWERED_PARCEL_STOPS)
    async def find_unanswered_parcel_stops(self, scan: ReconciliationScan) -> list[UnansweredParcelStop]:
        """Stops of a parcel billing asked for over an hour ago, with no answer of shipping
        recorded, whose flow (the refund's, or the shipment's for a cancelled order) no longer
        runs: it ended on the way, or was a run of a release that did not carry such stops."""
        assert self.client is not None, "finding unanswered stops needs the Temporal client"
        candidates = await asyncio.to_thread(self._unanswered_stops, scan.as_of)
        carried_by = {order_id: STOP_CARRIED_BY[stop.because].format(refund_id=stop.refund_id, order_id=order_id)
                      for order_id, stop in candidates}
        statuses = await self._flow_statuses(list(carried_by.values()))
        found = []
        for order_id, stop in candidates:
            workflow_id = carried_by[order_id]
            if (gone := statuses.get(workflow_id)) is None:
                continue  # running, or not describable now
            status = gone[0]
            found.append(
                UnansweredParcelStop(
                    order_id=order_id, refund_id=stop.refund_id, tracking=stop.tracking, asked_at=stop.asked_at,
                    because=stop.because.value, workflow_id=workflow_id,
                    workflow_status=status.name.lower() if status is not None else "not found",
                )
            )
        return found

    def _unanswered_stops(self, as_of: datetime) -> list[tuple[str, Any]]:
        with self.uow() as uow:
            return [
                (order.id, stop)
                for order in uow.orders.asking_a_stop_since(asked_before(as_of))
                if (stop := unanswered_stop(order, as_of)) is not None
            ]

    @activity.defn(name=FIND_MONEY_OWED)
    def find_money_owed(self, scan: ReconciliationScan) -> list[MoneyOwed]:
        """Orders (cancelled, or their parcel back) that have owed their customer money for over
        an hour with no refund on its way for it (billing's `owed_since`)."""
        with self.uow() as uow:
            found = (money_owed(order, scan.as_of) for order in uow.orders.owing_since(owed_before(scan.as_of)))
            return [owed for owed in found if owed is not None]

    @activity.defn(name=FIND_REFUNDS_TO_CREDIT)
    def find_refunds_to_credit(self, scan: ReconciliationScan) -> list[RefundToCredit]:
        """Refunds billing paid out that the order's invoice holds no credit note for, leaving
        out those support already has in hand (invoicing refused them: their flow told support,
        or an earlier pass flagged them). Orders are read a page at a time, and the read stops
        at CREDITS_PER_PASS refunds: a long backlog is worked off over several passes."""
        found: list[RefundToCredit] = []
        after = ""
        with self.uow() as uow:
            while len(found) < CREDITS_PER_PASS and (
                orders := uow.orders.paid_out_beyond_their_credit_notes(after=after, limit=ORDERS_PER_PAGE)
            ):
                found += self._to_credit(uow, orders)
                after = orders[-1].id
        return found[:CREDITS_PER_PASS]

    @staticmethod
    def _to_credit(uow: Any, orders: list[Any]) -> list[RefundToCredit]:
        invoices = uow.invoices.for_orders([order.id for order in orders])
        held_by_support: dict[str, str] = {}  # a notification or discrepancy id -> its refund
        for order in orders:
            for refund in order.refunds_paid_out:
                held_by_support.update(dict.fromkeys(left_to_support_by(refund.refund_id), refund.refund_id))
        records = [*uow.notifications.find_all(held_by_support), *uow.discrepancies.find_all(held_by_support)]
        left_to_support = {held_by_support[id] for id in records}
        return [item for order in orders for item in refunds_to_credit(order, invoices.get(order.id), left_to_support)]

    @activity.defn(name=FIND_UNTOLD_ANSWERS)
    async def find_untold_answers(self, scan: ReconciliationScan) -> list[UntoldAnswer]:
        """Running flows still waiting for reconciliation's word whose request payments has an
        answer for, found by reconciliation: telling them was lost on the way. Payments lists an
        answered request no more, so without this they would wait for ever, money held. A flow
        that cannot be read now (a query unanswered, a history that does not decode) is left for
        the next pass; the others are told."""
        assert self.client is not None, "finding flows to tell needs the Temporal client"
        try:
            waiting = [flow async for flow in self.client.list_workflows(WAITING_FLOWS)]
        except RPCError as error:
            if error.status is not RPCStatusCode.UNIMPLEMENTED:
                raise
            # A server without visibility queries (Temporal's time-skipping test server).
            raise ApplicationError(f"this Temporal server cannot list flows: {error.message}",
                                   type="VisibilityUnavailable", non_retryable=True) from error
        at_once = asyncio.Semaphore(UNTOLD_AT_ONCE)

        async def untold_of(flow: Any) -> list[UntoldAnswer]:
            async with at_once:
                try:
                    return await self._untold(flow.id, flow.run_id)
                except Exception as trouble:  # noqa: BLE001 - one flow unread holds up no other
                    log.warning("reconciliation: could not tell whether %s waits for an answer: %s", flow.id, trouble)
                    return []

        return [answer for found in await asyncio.gather(*map(untold_of, waiting)) for answer in found]

    async def _untold(self, workflow_id: str, run_id: str | None) -> list[UntoldAnswer]:
        assert self.client is not None
        handle = self.client.get_workflow_handle(workflow_id, run_id=run_id)
        if not await handle.query("waits_for_reconciliation", rpc_timeout=QUERY_WITHIN):  # else it is finishing
            return []
        started = await anext(aiter(handle.fetch_history_events(page_size=1)))
        [request] = await self.client.data_converter.decode(
            started.workflow_execution_started_event_attributes.input.payloads, [dict]
        )
        answers = await asyncio.to_thread(
            answers_found_by_reconciliation, self.uow, request.get("order_id", ""), request.get("refund_id")
        )
        return [UntoldAnswer(workflow_id=workflow_id, answer=answer) for answer in answers]

    def _reserved_refunds(self, as_of: datetime) -> list[tuple[str, str, Any, datetime]]:
        with self.uow() as uow:
            return [
                (order.id, refund.refund_id, refund.amount, refund.requested_at)
                for order in uow.orders.reserving_since(reserved_before(as_of))
                for refund in reservations_to_check(order, as_of)
            ]
