"""settleflow's command line: start workflows, send Updates, query, list.

    python starter.py place-order --order-id o-1 --customer c-1 --amount 120.00 --currency EUR
    python starter.py ship --order-id o-1 --tracking TRK-1
    python starter.py deliver --order-id o-1
    python starter.py refund --order-id o-1 --amount 20.00 --reason "damaged" --as customer:c-1 --wait
    python starter.py review REFUND_ID approve --as fraud_analyst:alice
    python starter.py status refund-REFUND_ID
    python starter.py order o-1
    python starter.py list --status completed
    python starter.py demo
    python starter.py resume-flow refund-REFUND_ID --note "terminated by mistake" --as support:sam

Every command checks its arguments before anything starts; a bad one exits with
code 2 and a single line saying what is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any, NoReturn

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from adapters import db
from adapters.identity import trust_or_exit_with
from adapters.settings import Settings, load
from cli import reconciliation as reconciliation_verbs
from cli import resume as resume_verb
from adapters.temporal import connect, ui_link
from adapters.views import DatabaseUnavailable, OrderView, order_view
from cli import events as events_cli
from cli import trust as trust_cli
from cli import ops as ops_cli
from adapters import tracing
from demo import run_demo, status_when
from domain.billing.commands import CancelOrder, PlaceOrder, RequestRefund
from domain.fraud.commands import ResolveFraudReview, ReviewDecision
from domain.payments.commands import UpdatePaymentMethod
from domain.shared.actor import Actor, Role
from domain.shared.errors import DomainError
from domain.shared.messages import DERIVED_ID_MAX, ID_MAX, TEXT_MAX, Command
from domain.shared.text import storable
from domain.shared.money import CURRENCY_EXPONENTS, Money, parse_amount
from domain.shipping.commands import ConfirmDelivery, ShipOrder
from workflows.messages import PASSING_STATUSES, SEARCHABLE_STATUSES, InvalidRequest
from workflows.payment import CancellationRequest, NewPaymentMethod, OrderRequest, PaymentWorkflow
from workflows.process import CUSTOMER_ID, FLOW_STATUS, FLOWS_QUEUE, ORDER_ID, REFUND_ID
from workflows.refund import RefundRequest, RefundWorkflow, ReviewResolution
from workflows.shipping import ConfirmDeliveryWorkflow, DeliveryRequest, ShipmentRequest, ShipOrderWorkflow

MAX_ID = ID_MAX  # the domain's limit for ids people give
MAX_DERIVED_ID = DERIVED_ID_MAX  # and for ids made from them (workflow ids, discrepancy ids)
MAX_TEXT = TEXT_MAX  # a reason or a note: what the owners' commands accept
PLAIN_AMOUNT = re.compile(r"[0-9]+(\.[0-9]+)?")

# The command each verb's --as becomes the actor of: who may use the verb is who may
# issue that command (its `issued_by`); `system` is settleflow's own, never given from outside.
ACTS_AS = {
    "place-order": PlaceOrder,
    "ship": ShipOrder,
    "deliver": ConfirmDelivery,
    "refund": RequestRefund,
    "review": ResolveFraudReview,
    "update-payment-method": UpdatePaymentMethod,
    "cancel": CancelOrder,
}


class UsageError(Exception):
    """Bad input: one line, exit code 2, nothing started."""


class CliParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line instead of a usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


# -- argument types: each refuses bad input with a one-line reason --------------------
def stored_as_is(text: str, what: str) -> str:
    """The domain's own rule for text (domain/shared/text.py): a byte that is not UTF-8 on
    the command line arrives as a lone surrogate, which no database can store."""
    try:
        return storable(text)
    except ValueError as bad:
        raise argparse.ArgumentTypeError(f"{what} {bad}") from None


def identifier(text: str, limit: int = MAX_ID) -> str:
    stored_as_is(text, "an id")
    if not text.strip():
        raise argparse.ArgumentTypeError("an id cannot be empty")
    if len(text) > limit:
        raise argparse.ArgumentTypeError(f"an id can have at most {limit} characters")
    # Cc: C0, DEL and C1 controls; Zl, Zp: Unicode line and paragraph separators.
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text):
        raise argparse.ArgumentTypeError("an id cannot contain control characters or line breaks")
    return text


def derived_identifier(text: str) -> str:
    """An id settleflow made from ids people gave (a workflow id `refund-{order}-cancellation`,
    a discrepancy id `capture:payment-{order}/retry-2`): the same rules, the derived limit."""
    return identifier(text, MAX_DERIVED_ID)


def reason(text: str) -> str:
    stored_as_is(text, "a reason")
    if not text.strip():
        raise argparse.ArgumentTypeError("a reason cannot be empty")
    if len(text) > MAX_TEXT:
        raise argparse.ArgumentTypeError(f"a reason can have at most {MAX_TEXT} characters")
    return text


def note(text: str) -> str:
    stored_as_is(text, "a note")
    if len(text) > MAX_TEXT:
        raise argparse.ArgumentTypeError(f"a note can have at most {MAX_TEXT} characters")
    return text


def amount(text: str) -> str:
    try:
        value = parse_amount(text)
    except DomainError as bad:
        raise argparse.ArgumentTypeError(bad.message) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"amount must be greater than zero, got {text}")
    if not PLAIN_AMOUNT.fullmatch(text.strip()):  # "1e2", "+5", "1_000" are numbers, not prices
        raise argparse.ArgumentTypeError(f"write the amount as a plain decimal like 20.00, got {text!r}")
    return text.strip()


def currency(text: str) -> str:
    if text not in CURRENCY_EXPONENTS:
        raise argparse.ArgumentTypeError(f"unknown currency {text!r} (ISO 4217, e.g. EUR, USD, JPY)")
    return text


def flow_status(text: str) -> str:
    # Goes into a visibility query: only the statuses the processes show, never quotes.
    if text in PASSING_STATUSES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is passed within one step and never searchable; ask `status WORKFLOW_ID` instead"
        )
    if text not in SEARCHABLE_STATUSES:
        raise argparse.ArgumentTypeError(
            f"not a flow status: {text!r} (one of: {', '.join(sorted(SEARCHABLE_STATUSES))})"
        )
    return text


def may_act(verb: str, who: Actor | None, customer: str | None = None) -> None:
    """Refuse, before anything starts, a role that may not issue the verb's command, and a
    customer placing an order in another customer's name (billing refuses both as well)."""
    command: type[Command] | None = ACTS_AS.get(verb)
    if command is None or who is None:
        return
    allowed = command.issued_by - {Role.SYSTEM}
    if who.role not in allowed:
        roles = ", ".join(sorted(r.value for r in allowed))
        raise UsageError(f"argument --as: a {who.role.value} may not {verb} (one of: {roles})")
    if customer is not None and who.role is Role.CUSTOMER and who.id != customer:
        raise UsageError(f"argument --customer: {who} may place orders only as {who.id}, not as {customer}")


def actor(text: str) -> Actor:
    _, sep, actor_id = text.partition(":")
    if sep and actor_id:
        identifier(actor_id)  # the same rules as any other id
    try:
        return Actor.parse(text)
    except DomainError as bad:
        raise argparse.ArgumentTypeError(bad.message) from None


def instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if value > datetime.now(timezone.utc):  # the owners refuse it too: a fact has happened
        raise argparse.ArgumentTypeError(f"{text!r} is in the future: --at says when something happened")
    return value


def money_of(value: str, in_currency: str) -> Money:
    try:
        return Money.of(value, in_currency)
    except DomainError as bad:
        raise UsageError(bad.message) from None


# -- the commands ------------------------------------------------------------------------
class Cli:
    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.args = args
        self.settings = settings
        self._client: Client | None = None
        self._started: dict[str, Any] = {}  # what start() did, merged into the --json --wait answer

    async def client(self) -> Client:
        if self._client is None:
            self._client = await connect(self.settings)
        return self._client

    def out(self, text: str, **data: Any) -> None:
        print(json.dumps(data, default=str) if self.args.json else text, flush=True)

    def existing_order(self, order_id: str) -> OrderView:
        view = self.order_view(order_id)
        if view is None:
            raise UsageError(f"no order {order_id!r}")
        return view

    def order_view(self, order_id: str) -> OrderView | None:
        try:
            return order_view(self.settings.database_url, order_id)
        except DatabaseUnavailable as missing:
            raise UsageError(str(missing)) from None

    async def start(
        self,
        workflow: Callable,
        request: Any,
        workflow_id: str,
        summary: str,
        attributes: dict[SearchAttributeKey[str], str],
        again: Callable[[WorkflowHandle, Any], Awaitable[Any]] | None = None,
    ):
        """Start the flow, once per workflow id. With `again`: when the last run of that id
        ended refused or failed, `again(last run, request)` may give a new request (the nth
        ask), started as a new run of the same id — a refused request is asked again, not
        stuck behind its id until the namespace's retention."""
        client = await self.client()
        search = [SearchAttributePair(key, value) for key, value in attributes.items() if value]
        ui = ui_link(self.settings, workflow_id)

        async def start_as(request: Any, policy: WorkflowIDReusePolicy):
            return await client.start_workflow(
                workflow, request, id=workflow_id, task_queue=FLOWS_QUEUE, id_reuse_policy=policy,
                search_attributes=TypedSearchAttributes(search), static_summary=summary,
            )

        try:
            handle = await start_as(request, WorkflowIDReusePolicy.REJECT_DUPLICATE)
            started, text = True, f"started {workflow_id}\n  {ui}"
        except WorkflowAlreadyStartedError:
            handle = client.get_workflow_handle_for(workflow.run, workflow_id)
            started, text = False, f"{workflow_id} already exists; nothing new was started\n  {ui}"
            asked_again = await again(handle, request) if again is not None else None
            if asked_again is not None:
                try:  # a run started meanwhile by someone else is the one to follow
                    handle = await start_as(asked_again, WorkflowIDReusePolicy.ALLOW_DUPLICATE)
                    started = True
                    text = f"started {workflow_id} again (its last run had ended)\n  {ui}"
                except WorkflowAlreadyStartedError:
                    pass
        self._started = {"workflow_id": workflow_id, "started": started, "ui": ui}
        if not (self.args.json and getattr(self.args, "wait", True)):
            self.out(text, **self._started)  # with --json --wait, wait_for prints one document
        return handle, started

    async def wait_for(self, handle, *, unless_status: str | None = None) -> dict:
        """The workflow's result; or, with `unless_status`, its status view as soon as it
        shows that status (a flow that now waits for something else, e.g. a delivery
        confirmed before its shipment, need not hold the command line)."""
        if unless_status is None:
            result = await handle.result()
        else:
            finished = asyncio.ensure_future(handle.result())
            while True:
                done, _ = await asyncio.wait({finished}, timeout=0.5)
                if done:
                    result = finished.result()
                    break
                shown = await handle.query("status")
                if (shown.get("status") if isinstance(shown, dict) else shown.status) == unless_status:
                    finished.cancel()
                    result = shown
                    break
        view = result.model_dump(mode="json") if hasattr(result, "model_dump") else dict(result)
        self.out(_describe(handle.id, view), **{**self._started, "workflow_id": handle.id, **view})
        return view

    # place-order
    async def place_order(self) -> dict | None:
        a = self.args
        total = money_of(a.amount, a.currency)
        if self.order_view(a.order_id) is not None:
            raise UsageError(f"order {a.order_id!r} already exists")
        request = OrderRequest(
            order_id=a.order_id,
            customer_id=a.customer,
            amount=total,
            card_token=a.card,
            placed_by=a.actor,
            token=a.token,
            placed_at=a.at,
        )
        handle, _ = await self.start(
            PaymentWorkflow,
            request,
            f"payment-{a.order_id}",
            f"Order {a.order_id}: capture {total} from {a.customer}",
            {ORDER_ID: a.order_id, CUSTOMER_ID: a.customer, FLOW_STATUS: "capturing"},
            again=self.unplaced_order,
        )
        if not a.wait:
            return None
        # A paid order's process stays open (for cancellations) until delivery: wait
        # for the capture's outcome, not for the workflow to end.
        view = await status_when(handle, lambda status: status != "capturing")
        self.out(_describe(handle.id, view), **{**self._started, **view})
        return view

    async def unplaced_order(self, last: WorkflowHandle, request: OrderRequest) -> OrderRequest | None:
        """A placement billing refused (its flow failed, no order was recorded) may be asked
        again with corrected facts: the refusal was not kept, so the same commands decide anew."""
        failed = (await last.describe()).status is WorkflowExecutionStatus.FAILED
        return request if failed and self.order_view(request.order_id) is None else None

    async def after_a_refusal(self, last: WorkflowHandle, request: ShipmentRequest | DeliveryRequest):
        """The warehouse's next request, when its last one for the order was refused (billing:
        not paid yet, a date before the order) or failed (no shipment within 30 days of a
        delivery): the same facts asked anew, with commands of their own. None while the last
        one runs or after it succeeded (then it is a duplicate, and nothing new starts)."""
        status = (await last.describe()).status
        refused = status is WorkflowExecutionStatus.COMPLETED and (await last.result()).status == "refused"
        if not (refused or status is WorkflowExecutionStatus.FAILED):
            return None
        history = await last.fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        client = await self.client()
        [before] = await client.data_converter.decode(started.input.payloads, [type(request)])
        return request.model_copy(update={"attempt": before.attempt + 1})

    async def ship(self) -> dict:
        a = self.args
        self.existing_order(a.order_id)
        request = ShipmentRequest(order_id=a.order_id, tracking=a.tracking, shipped_at=a.at, requested_by=a.actor, token=a.token)
        handle, _ = await self.start(
            ShipOrderWorkflow, request, f"ship-{a.order_id}", f"Ship order {a.order_id} ({a.tracking})",
            {ORDER_ID: a.order_id}, again=self.after_a_refusal,
        )
        return await self.wait_for(handle)

    async def deliver(self) -> dict:
        a = self.args
        self.existing_order(a.order_id)
        request = DeliveryRequest(order_id=a.order_id, delivered_at=a.at, requested_by=a.actor, token=a.token)
        handle, _ = await self.start(
            ConfirmDeliveryWorkflow, request, f"deliver-{a.order_id}", f"Confirm delivery of order {a.order_id}",
            {ORDER_ID: a.order_id}, again=self.after_a_refusal,
        )
        # A delivery confirmed before its shipment is kept until the shipment arrives: say so and return.
        return await self.wait_for(handle, unless_status="waiting_for_shipment")

    async def refund(self) -> dict | None:
        a = self.args
        order = self.existing_order(a.order_id)
        refund_amount = money_of(a.amount, order.currency) if a.amount else None
        refund_id = a.refund_id or f"r-{uuid.uuid4().hex[:10]}"
        request = RefundRequest(
            refund_id=refund_id, order_id=a.order_id, amount=refund_amount, reason=a.reason, requested_by=a.actor,
            token=a.token,
        )
        what = str(refund_amount) if refund_amount else "everything refundable"
        handle, _ = await self.start(
            RefundWorkflow,
            request,
            f"refund-{refund_id}",
            f"Refund {refund_id} of order {a.order_id}: {what}, asked by {a.actor}",
            {ORDER_ID: a.order_id, REFUND_ID: refund_id, FLOW_STATUS: "requested"},
        )
        return await self.wait_for(handle) if a.wait else None

    async def review(self) -> str:
        a = self.args
        client = await self.client()
        handle = client.get_workflow_handle(f"refund-{a.refund_id}")
        try:
            status = await handle.execute_update(
                RefundWorkflow.resolve_review,
                ReviewResolution(decision=ReviewDecision(a.decision), reviewer=a.actor, note=a.note, token=a.token),
            )
        except WorkflowUpdateFailedError as refused:
            raise UsageError(f"review refused: {refused.cause or refused}") from None
        except RPCError as missing:
            raise UsageError(f"no refund {a.refund_id!r} to review: {missing.message}") from None
        done = {ReviewDecision.APPROVE: "approved", ReviewDecision.REJECT: "rejected"}[ReviewDecision(a.decision)]
        self.out(f"refund-{a.refund_id}: {done} by {a.actor}; refund is now {status}", status=status)
        return status

    async def update_payment_method(self) -> str:
        a = self.args
        order = self.existing_order(a.order_id)
        given_by = a.actor or Actor(role=Role.CUSTOMER, id=order.customer_id)
        token = a.token or trust_cli.dev_token(given_by, UsageError)
        status = await self._update_payment(
            PaymentWorkflow.update_payment_method,
            NewPaymentMethod(card_token=a.card, given_by=given_by, token=token), "new card",
        )
        self.out(f"payment-{a.order_id}: new card taken; the order is now {status}", status=status)
        return status

    async def cancel(self) -> str:
        a = self.args
        self.existing_order(a.order_id)
        status = await self._update_payment(
            PaymentWorkflow.cancel_order, CancellationRequest(requested_by=a.actor, reason=a.reason, token=a.token), "cancellation"
        )
        self.out(f"payment-{a.order_id}: cancelled by {a.actor}; the order is now {status}", status=status)
        return status

    async def _update_payment(self, update, request, what: str) -> str:
        """Send an Update to the order's payment process; its validator and the
        owners behind it answer, and a refusal is one clear line."""
        client = await self.client()
        handle = client.get_workflow_handle(f"payment-{self.args.order_id}")
        try:
            return await handle.execute_update(update, request)
        except WorkflowUpdateFailedError as refused:
            raise UsageError(f"{what} refused: {refused.cause or refused}") from None
        except RPCError as closed:
            if closed.status == RPCStatusCode.NOT_FOUND:
                raise UsageError(
                    f"the payment process of order {self.args.order_id!r} has ended; nothing to change there"
                ) from None
            raise

    async def status(self) -> dict:
        client = await self.client()
        handle = client.get_workflow_handle(self.args.workflow_id)
        try:
            description = await handle.describe()
        except RPCError as missing:
            if missing.status != RPCStatusCode.NOT_FOUND:
                raise
            raise UsageError(f"no workflow {self.args.workflow_id!r}") from None
        try:
            view = (await handle.query("status", rpc_timeout=timedelta(seconds=5))).copy()
        except Exception:  # no worker to answer: fall back to what the server knows
            flow = description.typed_search_attributes.get(FLOW_STATUS)
            view = {"status": flow or description.status.name.lower(), "trail": []}
        view["execution"] = description.status.name if description.status else "UNKNOWN"
        self.out(_describe(self.args.workflow_id, view), workflow_id=self.args.workflow_id, **view)
        return view

    async def order(self) -> dict:
        view = self.existing_order(self.args.order_id)
        data = view.model_dump(mode="json")
        self.out(view.describe(), **data)
        return data

    async def list(self) -> list[dict]:
        client = await self.client()
        query = f"FlowStatus = '{self.args.status}'" if self.args.status else ""
        rows = []
        async for execution in client.list_workflows(query):
            rows.append(
                {
                    "workflow_id": execution.id,
                    "type": execution.workflow_type,
                    "flow_status": execution.typed_search_attributes.get(FLOW_STATUS) or "",
                    "execution": execution.status.name if execution.status else "",
                    "started": execution.start_time.isoformat(timespec="seconds"),
                }
            )
        if self.args.json:
            print(json.dumps(rows))
        else:
            for row in rows:
                print(f"{row['workflow_id']:<40} {row['type']:<24} {row['flow_status']:<14} {row['execution']}")
        return rows

    async def demo(self) -> list[dict]:
        return await run_demo(self)

    async def db_upgrade(self) -> None:
        db.upgrade(self.settings.database_url)
        self.out(f"database at {self.settings.database_url} is up to date", database=self.settings.database_url)


def _describe(workflow_id: str, view: dict) -> str:
    lines = [f"{workflow_id}: {view.get('status')}" + (f" ({view['reason']})" if view.get("reason") else "")]
    if view.get("attempts"):
        lines.append(f"  capture attempts: {view['attempts']}")
    if view.get("next_attempt_at"):
        lines.append(f"  next attempt at: {view['next_attempt_at']}")
    if view.get("invoice_number"):
        lines.append(f"  invoice: {view['invoice_number']}")
    if view.get("refund_workflow_id"):
        lines.append(f"  refund: {view['refund_workflow_id']}")
    lines += [f"  {i}. {step}" for i, step in enumerate(view.get("trail", []), 1)]
    return "\n".join(lines)


# -- the parser ------------------------------------------------------------------------------
def build_parser() -> CliParser:
    common = CliParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--address", help="Temporal address (default: $TEMPORAL_ADDRESS or localhost:7233)")
    common.add_argument("--namespace", help="Temporal namespace (default: $TEMPORAL_NAMESPACE or default)")
    trust_cli.add_token_option(common)

    parser = CliParser(prog="starter.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=CliParser)

    p = verbs.add_parser("place-order", parents=[common], help="place an order and capture its payment")
    p.add_argument("--order-id", required=True, type=identifier)
    p.add_argument("--customer", required=True, type=identifier)
    p.add_argument("--amount", required=True, type=amount)
    p.add_argument("--currency", required=True, type=currency)
    p.add_argument("--card", default="tok_visa", type=identifier, help="card token (default tok_visa)")
    p.add_argument("--at", type=instant, help="when it was placed (ISO-8601; default now)")
    p.add_argument("--wait", action="store_true", help="wait for the payment's outcome")
    p.set_defaults(handler=Cli.place_order)

    p = verbs.add_parser("ship", parents=[common], help="the warehouse ships an order")
    p.add_argument("--order-id", required=True, type=identifier)
    p.add_argument("--tracking", required=True, type=identifier)
    p.add_argument("--at", type=instant, help="when it left (ISO-8601; default now)")
    p.add_argument("--as", dest="actor", type=actor, help="ROLE:ID (default: warehouse:cli)")
    p.set_defaults(handler=Cli.ship)

    p = verbs.add_parser("deliver", parents=[common], help="confirm an order's delivery")
    p.add_argument("--order-id", required=True, type=identifier)
    p.add_argument("--at", type=instant, help="when it arrived (ISO-8601; default now)")
    p.add_argument("--as", dest="actor", type=actor, help="ROLE:ID (default: warehouse:cli)")
    p.set_defaults(handler=Cli.deliver)

    p = verbs.add_parser("refund", parents=[common], help="ask for a refund")
    p.add_argument("--order-id", required=True, type=identifier)
    p.add_argument("--amount", type=amount, help="default: everything still refundable")
    p.add_argument("--reason", required=True, type=reason)
    p.add_argument("--as", dest="actor", type=actor, help="ROLE:ID, e.g. customer:c-1")
    p.add_argument("--refund-id", type=identifier, help="default: a new id")
    p.add_argument("--wait", action="store_true", help="wait for the final status")
    p.set_defaults(handler=Cli.refund)

    p = verbs.add_parser("review", parents=[common], help="decide a fraud review")
    p.add_argument("refund_id", type=identifier)
    p.add_argument("decision", choices=[d.value for d in ReviewDecision])
    p.add_argument("--as", dest="actor", type=actor, help="fraud_analyst:ID")
    p.add_argument("--note", default="", type=note)
    p.set_defaults(handler=Cli.review)

    p = verbs.add_parser("update-payment-method", parents=[common], help="give a recovering order a new card")
    p.add_argument("--order-id", required=True, type=identifier)
    p.add_argument("--card", required=True, type=identifier, help="the new card token")
    p.add_argument("--as", dest="actor", type=actor, help="ROLE:ID (default: the order's customer)")
    p.set_defaults(handler=Cli.update_payment_method)

    p = verbs.add_parser("cancel", parents=[common], help="cancel an order (billing decides)")
    p.add_argument("--order-id", required=True, type=identifier)
    p.add_argument("--as", dest="actor", type=actor, help="ROLE:ID, e.g. customer:c-1 or support:sam")
    p.add_argument("--reason", default="cancelled on request", type=reason)
    p.set_defaults(handler=Cli.cancel)

    p = verbs.add_parser("status", parents=[common], help="a workflow's status and trail")
    p.add_argument("workflow_id", type=derived_identifier)  # refund-{order}-cancellation is longer than an order id
    p.set_defaults(handler=Cli.status)

    p = verbs.add_parser("order", parents=[common], help="billing's view of an order")
    p.add_argument("order_id", type=identifier)
    p.set_defaults(handler=Cli.order)

    p = verbs.add_parser("list", parents=[common], help="list workflows")
    p.add_argument("--status", type=flow_status, help="only this flow status (e.g. completed, under_review)",
                   metavar="STATUS")
    p.set_defaults(handler=Cli.list)

    p = verbs.add_parser("demo", parents=[common], help="run the demo scenarios against a running worker")
    p.set_defaults(handler=Cli.demo)

    p = verbs.add_parser("db", parents=[common], help="database maintenance")
    p.add_argument("action", choices=["upgrade"])
    p.set_defaults(handler=Cli.db_upgrade)
    events_cli.add_verbs(verbs, common, identifier)  # events, outbox, report, map
    reconciliation_verbs.add_verbs(verbs, common, derived_identifier, note, reason, actor)
    resume_verb.add_verb(verbs, common, derived_identifier, reason, actor)
    trust_cli.add_verbs(verbs, common, identifier)  # token
    ops_cli.add_verbs(verbs, common)  # config
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    settings = ops_cli.load_or_exit()
    tracing.setup("settleflow-starter")
    if args.address:
        settings.temporal_address = args.address
    if args.namespace:
        settings.temporal_namespace = args.namespace
    # Each verb carries how it runs: `run(args, settings)` for one that needs no Temporal
    # client (config, token, events, outbox, report, map), `handler(cli)` for the rest.
    if getattr(args, "run", None):
        return args.run(args, settings)
    cli = Cli(args, settings)
    if missing := trust_or_exit_with("starter.py").payload_keys_missing:  # no data converter could be built
        print(f"starter.py: error: {missing}", file=sys.stderr)
        return 2
    try:
        trust_cli.resolve(args, UsageError)  # who acts: a verified token, or a dev token for --as
        may_act(args.verb, getattr(args, "actor", None), getattr(args, "customer", None) if args.verb == "place-order" else None)
        asyncio.run(tracing.within_span(f"starter {args.verb}", args.handler(cli)))
    except (UsageError, reconciliation_verbs.UsageError, InvalidRequest) as bad:  # a request that does not fit
        print(f"starter.py: error: {bad}", file=sys.stderr)
        return 2
    except RPCError as trouble:
        print(f"starter.py: cannot reach Temporal at {settings.temporal_address}: {trouble.message}", file=sys.stderr)
        return 1
    except WorkflowFailureError as failed:
        print(f"starter.py: {failed}: {failed.cause}", file=sys.stderr)
        return 1
    except RuntimeError as trouble:  # e.g. connection refused while connecting
        if str(trouble).startswith("Failed client connect"):
            print(
                f"starter.py: cannot reach Temporal at {settings.temporal_address} "
                "(is it running? `python devstack.py up` starts one)",
                file=sys.stderr,
            )
        else:
            print(f"starter.py: {trouble}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """The script's entry point: main(), then exit without interpreter teardown.

    The Temporal client's Rust threads can outlive asyncio.run(); when CPython then
    finalizes, the process may abort with "PyGILState_Release: thread state ... must
    be current" (exit 134) after all the work is done (temporalio/sdk-python#300).
    Everything is flushed first, so nothing printed is lost.
    """
    code = main()
    tracing.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
