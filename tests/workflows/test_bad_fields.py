"""One bad field never poisons a flow. Start requests and Updates are validated with the
very types the owners' commands use (domain/shared/text.py): a NUL character, an
over-long or an empty field in any of them is refused at the door — the workflow fails
at once with InvalidRequest, the Update is refused — and the flow stays usable. Whatever
a workflow still cannot turn into a command fails it with a clear reason, never a
workflow task retried forever."""

from __future__ import annotations

from tests.tokens import token_for

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from domain.shared.text import DERIVED_ID_MAX, ID_MAX, TEXT_MAX
from tests.workflows.flows import delivered_order, new_id, place_order, real_time, start_refund, wait_for_status
from tests.workflows.test_bad_requests import GOOD, row_counts
from workflows.payment import PaymentWorkflow
from workflows.process import FLOWS_QUEUE
from workflows.refund import RefundWorkflow

# Every text field of every start request, with the limit its command holds it to.
FIELDS = {
    "RefundWorkflow": {"refund_id": DERIVED_ID_MAX, "order_id": ID_MAX, "reason": TEXT_MAX,
                       "requested_by.id": ID_MAX},
    "PaymentWorkflow": {"order_id": ID_MAX, "customer_id": ID_MAX, "card_token": ID_MAX, "placed_by.id": ID_MAX},
    "ShipOrderWorkflow": {"order_id": ID_MAX, "tracking": ID_MAX, "requested_by.id": ID_MAX},
    "ConfirmDeliveryWorkflow": {"order_id": ID_MAX, "requested_by.id": ID_MAX},
}
CASES = [(workflow_type, field, limit) for workflow_type, fields in FIELDS.items() for field, limit in fields.items()]


def with_field(payload: dict, field: str, value: str) -> dict:
    payload = {k: dict(v) if isinstance(v, dict) else v for k, v in payload.items()}
    head, _, tail = field.partition(".")
    if tail:
        payload[head][tail] = value
    else:
        payload[head] = value
    return payload


async def start_and_fail(harness, workflow_type: str, payload: dict) -> ApplicationError:
    handle = harness.track(await harness.client.start_workflow(
        workflow_type, payload, id=new_id("bad"), task_queue=FLOWS_QUEUE))
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert isinstance(failed.value.cause, ApplicationError)
    return failed.value.cause


@pytest.mark.parametrize(("workflow_type", "field", "limit"), CASES, ids=[f"{w}.{f}" for w, f, _ in CASES])
async def test_a_nul_an_over_long_or_an_empty_field_in_any_start_request_fails_the_workflow_at_once(
    harness, workflow_type, field, limit
):
    before = row_counts(harness)
    async with real_time(harness.env):
        for value, words in (("a\x00b", "NUL"), ("x" * (limit + 1), "at most"), ("", "at least"), ("   ", "blank")):
            reason = await start_and_fail(harness, workflow_type, with_field(GOOD[workflow_type], field, value))
            assert reason.type == "InvalidRequest", reason
            assert field.split(".")[0] in reason.message and words in reason.message, reason.message
    assert row_counts(harness) == before
    assert harness.messages() == []


async def test_a_command_the_workflow_cannot_build_ends_the_flow_with_its_reason(harness):
    """A workflow id so long that the command id `{workflow_id}/{step}` is over its limit:
    the flow ends at once naming the command, instead of retrying its task forever."""
    long_id = "x" * (DERIVED_ID_MAX - 8)  # outside settleflow's ids (SETTLEFLOW_IDS), which derive from requests
    async with real_time(harness.env):
        ship = harness.track(await harness.client.start_workflow(
            "ShipOrderWorkflow", GOOD["ShipOrderWorkflow"], id=f"ship_{long_id}", task_queue=FLOWS_QUEUE))
        with pytest.raises(WorkflowFailureError) as failed:
            await ship.result()
        refund = harness.track(await harness.client.start_workflow(
            "RefundWorkflow", GOOD["RefundWorkflow"], id=f"refund_{long_id}", task_queue=FLOWS_QUEUE))
        ended = await refund.result()

    reason = failed.value.cause
    assert isinstance(reason, ApplicationError) and reason.type == "InvalidCommand", reason
    assert "invalid ClearOrderForShipping: command_id" in reason.message  # billing is asked first
    assert ended["status"] == "rejected" and "invalid RequestRefund: command_id" in ended["reason"]


BAD_REVIEWS = {
    "a NUL in the reviewer's id": {"reviewer": {"role": "fraud_analyst", "id": "al\x00ice"}},
    "an over-long reviewer id": {"reviewer": {"role": "fraud_analyst", "id": "a" * (ID_MAX + 1)}},
    "an empty reviewer id": {"reviewer": {"role": "fraud_analyst", "id": ""}},
    "a NUL in the note": {"note": "looks\x00fine"},
    "an over-long note": {"note": "n" * (TEXT_MAX + 1)},
}


async def test_a_bad_field_in_a_review_decision_is_refused_and_a_later_valid_decision_still_works(harness):
    order_id = await delivered_order(harness, amount="1500.00")
    handle = await start_refund(harness, order_id)
    await wait_for_status(handle, "under_review")
    good = {"decision": "approve", "reviewer": {"role": "fraud_analyst", "id": "alice"}, "note": "",
            "token": token_for("fraud_analyst:alice"), "to_flow": handle.id}  # JSON, as from the web UI

    for case, bad in BAD_REVIEWS.items():
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("resolve_review", {**good, **bad})
        assert "invalid ReviewResolution: " + next(iter(bad)) in str(refused.value.cause), case
        assert (await handle.query(RefundWorkflow.status_view)).status == "under_review", case
    with harness.uow_factory() as uow:
        assert uow.fraud_reviews.get(handle.id.removeprefix("refund-")).status == "open"

    await handle.execute_update("resolve_review", good)
    assert (await handle.result()).status == "completed"


async def test_a_bad_new_card_or_cancellation_is_refused_and_the_flow_still_takes_a_good_one(harness):
    order_id, _ = await place_order(harness, card="tok_capture_declined")
    handle = harness.client.get_workflow_handle(f"payment-{order_id}")
    customer = {"role": "customer", "id": "c-1"}
    token = token_for("customer:c-1")

    for card in ("tok\x00visa", "t" * (ID_MAX + 1), "", "  "):
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("update_payment_method", {"card_token": card, "given_by": customer, "token": token})
        assert "invalid NewPaymentMethod: card_token" in str(refused.value.cause)
    for given_by in ({"role": "customer", "id": "c\x001"}, {"role": "customer", "id": "c" * (ID_MAX + 1)}):
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("update_payment_method", {"card_token": "tok_visa", "given_by": given_by, "token": token})
        assert "invalid NewPaymentMethod: given_by.id" in str(refused.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as wrong_role:
        await handle.execute_update(
            "update_payment_method", {"card_token": "tok_visa", "given_by": {"role": "warehouse", "id": "w"},
                                      "token": token_for("warehouse:w"), "to_flow": handle.id})
    assert "a warehouse cannot give a new payment method" in str(wrong_role.value.cause)
    for bad in ({"reason": "moved\x00away"}, {"reason": "r" * (TEXT_MAX + 1)}, {"reason": ""},
                {"requested_by": {"role": "customer", "id": "c\x001"}},
                {"requested_by": {"role": "warehouse", "id": "w"}}):
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("cancel_order", {"requested_by": customer, "reason": "changed my mind", "token": token,
                                                         "to_flow": handle.id, **bad})
    assert (await handle.query(PaymentWorkflow.status_view)).status == "recovering"

    answer = await handle.execute_update(
        "cancel_order", {"requested_by": customer, "reason": "changed my mind", "token": token, "to_flow": handle.id}
    )
    assert answer == "cancelled"
    assert harness.order(order_id).cancelled


async def test_a_refund_asked_from_outside_under_a_cancelled_orders_refund_id_fails_at_once_and_decides_nothing(harness):
    """`refund-{order}-cancellation` is the refund settleflow starts for a cancelled order. A
    refund someone else started under that id first would later answer the cancellation's
    steps from the owners' inboxes with its own facts (another order's money), and the
    cancelled order's money would never move: such an id is refused at the door."""
    before = row_counts(harness)
    async with real_time(harness.env):
        reason = await start_and_fail(harness, "RefundWorkflow",
                                      {**GOOD["RefundWorkflow"], "refund_id": "o-other-cancellation"})
    assert reason.type == "InvalidRequest" and "-cancellation" in reason.message
    assert row_counts(harness) == before
