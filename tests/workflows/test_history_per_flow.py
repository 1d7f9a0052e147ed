"""What a flow started on this release writes into its history besides its steps: one
patch marker for the release (not one per change it takes), and the FlowStatus search
attribute only where the flow rests — every such write is a history event and a
visibility write on the server, for every refund (README "Performance")."""

from __future__ import annotations

import json

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.converter import decode_search_attributes

from domain.fraud.commands import ReviewDecision
from domain.shared.actor import Actor
from tests.tokens import signed
from tests.workflows.flows import delivered_order, finished, place_order, start_refund, wait_for_status
from workflows.process import RELEASE
from workflows.refund import RefundWorkflow, ReviewResolution

CHANGE_VERSION = "TemporalChangeVersion"  # the server's list of patches a flow took


async def written(handle: WorkflowHandle) -> tuple[list[str], list[dict]]:
    """The patch ids marked and, in order, each search-attribute upsert (the release's own
    TemporalChangeVersion upsert aside) of a flow's history."""
    patches, upserts = [], []
    for event in (await handle.fetch_history()).events:
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == "core_patch":
                patches.append(json.loads(marker.details["patch-data"].payloads[0].data)["id"])
        elif event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            values = decode_search_attributes(event.upsert_workflow_search_attributes_event_attributes.search_attributes)
            if CHANGE_VERSION not in values:
                upserts.append({key: value[0] for key, value in values.items()})
    return patches, upserts


async def test_a_refund_on_this_release_marks_one_patch_and_writes_its_status_only_where_it_rests(harness):
    order_id = await delivered_order(harness)
    handle = await start_refund(harness, order_id, "20.00")
    assert (await finished(harness, handle)).status == "completed"

    patches, upserts = await written(handle)

    assert patches == [RELEASE]
    # "requested" lasts only while billing and fraud decide: it is never written; the
    # customer becomes searchable with the first status the refund rests in.
    assert upserts == [{"CustomerId": "c-1", "FlowStatus": "sending"}, {"FlowStatus": "completed"}]
    status = await handle.query(RefundWorkflow.status_view)
    assert status.trail[0].startswith("RequestRefund → billing")  # the query still shows every step


async def test_a_refund_waiting_for_an_analyst_is_found_by_its_status_and_customer(harness):
    order_id = await delivered_order(harness, amount="1500.00")
    handle = await start_refund(harness, order_id)
    await wait_for_status(handle, "under_review")

    _, upserts = await written(handle)
    assert upserts == [{"CustomerId": "c-1", "FlowStatus": "under_review"}]

    alice = Actor.parse("fraud_analyst:alice")
    await handle.execute_update(
        RefundWorkflow.resolve_review,
        ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=alice, **signed(alice)),
    )
    assert (await finished(harness, handle)).status == "completed"
    _, upserts = await written(handle)
    assert [u["FlowStatus"] for u in upserts] == ["under_review", "sending", "completed"]


async def test_a_payment_on_this_release_marks_one_patch_for_all_its_changes(harness):
    order_id, _ = await place_order(harness)
    handle = harness.client.get_workflow_handle(f"payment-{order_id}")

    patches, upserts = await written(handle)

    assert patches == [RELEASE]
    assert [u["FlowStatus"] for u in upserts] == ["capturing", "paid"]


async def test_a_payment_closed_by_its_delivery_asks_billing_without_a_patch_of_its_own(harness):
    # Checking billing's record of the delivery (the signal names no sender) came after the
    # first release; a flow started on this one takes it under the release's one marker.
    order_id = await delivered_order(harness)
    handle = harness.client.get_workflow_handle(f"payment-{order_id}")

    patches, upserts = await written(handle)

    assert patches == [RELEASE]
    assert [u["FlowStatus"] for u in upserts] == ["capturing", "paid"]
    assert (await local_activities(handle))[-1] == "billing.RecordedFulfilment"


async def local_activities(handle: WorkflowHandle) -> list[str]:
    """The activity types of a flow's local activities, in history order."""
    return [
        json.loads(event.marker_recorded_event_attributes.details["data"].payloads[0].data)["activity_type"]
        for event in (await handle.fetch_history()).events
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and event.marker_recorded_event_attributes.marker_name == "core_local_activity"
    ]
