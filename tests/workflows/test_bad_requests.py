"""Workflows started with JSON of the wrong shape — as from the web UI's "Start Workflow"
or `temporal workflow start --input` — fail at once with a reason naming every bad field,
before any owner is asked: no activity runs, and nothing is written anywhere."""

from __future__ import annotations

from tests.tokens import token_for

import pytest
from sqlalchemy import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from adapters.tables import metadata
from tests.workflows.flows import new_id, real_time
from workflows.process import FLOWS_QUEUE

CUSTOMER = {"role": "customer", "id": "c-1"}
MONEY = {"amount": "20.00", "currency": "EUR"}
GOOD = {
    "RefundWorkflow": {"refund_id": "r-1", "order_id": "o-1", "amount": MONEY, "reason": "damaged",
                       "requested_by": CUSTOMER},
    "PaymentWorkflow": {"order_id": "o-1", "customer_id": "c-1", "amount": MONEY, "card_token": "tok_visa",
                        "placed_by": CUSTOMER},
    "ShipOrderWorkflow": {"order_id": "o-1", "tracking": "T-1", "requested_by": {"role": "warehouse", "id": "w"}},
    "ConfirmDeliveryWorkflow": {"order_id": "o-1", "requested_by": {"role": "warehouse", "id": "w"}},
}

# case -> (workflow type, the JSON it is started with, words the failure must contain)
BAD_REQUESTS = {
    "an amount given as a bare number": ("RefundWorkflow", {**GOOD["RefundWorkflow"], "amount": 20.5}, ["amount"]),
    "an amount that is not a number": (
        "PaymentWorkflow", {**GOOD["PaymentWorkflow"], "amount": {"amount": "abc", "currency": "EUR"}}, ["amount"]),
    "an unknown currency": (
        "PaymentWorkflow", {**GOOD["PaymentWorkflow"], "amount": {"amount": "5.00", "currency": "XXX"}},
        ["amount"]),
    "the requester as a plain string": (
        "RefundWorkflow", {**GOOD["RefundWorkflow"], "requested_by": "customer:c-1"}, ["requested_by"]),
    "an unknown role": (
        "PaymentWorkflow", {**GOOD["PaymentWorkflow"], "placed_by": {"role": "pirate", "id": "x"}}, ["placed_by"]),
    "an id given as a number": ("RefundWorkflow", {**GOOD["RefundWorkflow"], "order_id": 42}, ["order_id"]),
    "an id of 10,000 characters": (
        "PaymentWorkflow", {**GOOD["PaymentWorkflow"], "order_id": "o" * 10_000}, ["order_id"]),
    "a missing reason": (
        "RefundWorkflow", {k: v for k, v in GOOD["RefundWorkflow"].items() if k != "reason"}, ["reason"]),
    "a date that is not a date": (
        "ShipOrderWorkflow", {**GOOD["ShipOrderWorkflow"], "shipped_at": "last tuesday"}, ["shipped_at"]),
    "a null order id": ("ConfirmDeliveryWorkflow", {**GOOD["ConfirmDeliveryWorkflow"], "order_id": None},
                        ["order_id"]),
    "a list instead of an object": ("RefundWorkflow", ["r-1", "o-1"], ["RefundRequest"]),
}


def row_counts(harness) -> dict[str, int]:
    with harness.engine.connect() as connection:
        return {t.name: connection.execute(select(func.count()).select_from(t)).scalar_one()
                for t in metadata.sorted_tables}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_a_request_of_the_wrong_shape_fails_the_workflow_at_once_and_changes_nothing(harness, case):
    workflow_type, payload, words = BAD_REQUESTS[case]
    before = row_counts(harness)

    async with real_time(harness.env):
        handle = harness.track(await harness.client.start_workflow(
            workflow_type, payload, id=new_id("bad"), task_queue=FLOWS_QUEUE))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        history = await handle.fetch_history()

    reason = failed.value.cause
    assert isinstance(reason, ApplicationError) and reason.type == "InvalidRequest", reason
    assert all(word in reason.message for word in words), reason.message
    assert "\n" not in reason.message
    asked = {EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, EventType.EVENT_TYPE_MARKER_RECORDED,
             EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED}
    assert not [e for e in history.events if e.event_type in asked], "an owner was asked"
    assert row_counts(harness) == before
    assert harness.messages() == []


async def test_a_well_formed_request_through_the_same_path_is_accepted(harness):
    """The JSON above differs from a working request only in the field named: this one,
    started the same way, places and pays the order."""
    payload = {**GOOD["PaymentWorkflow"], "order_id": new_id("o"), "token": token_for("customer:c-1")}
    async with real_time(harness.env):
        handle = harness.track(await harness.client.start_workflow(
            "PaymentWorkflow", payload, id=f"payment-{payload['order_id']}", task_queue=FLOWS_QUEUE))
        for _ in range(200):
            status = await handle.query("status")
            if status["status"] != "capturing":
                break
    assert status["status"] == "paid"
    assert harness.order(payload["order_id"]).paid.amount == 20
