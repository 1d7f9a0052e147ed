"""The bench reads a refund's shape from its recorded history, so the raw chain it compares
with follows the refund when the refund changes (bench/raw_chain.py)."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import WorkflowHistory

from temporalio.api.enums.v1 import EventType

from bench.raw_chain import beyond_the_shortest, engine_shape_of, shape_of

HISTORIES = Path(__file__).parents[1] / "workflows" / "histories"


def events_of(name: str):
    path = HISTORIES / f"{name}.json"
    return WorkflowHistory.from_json("refund", path.read_text()).events


def test_a_completed_refund_is_five_local_activities_around_one_regular_one():
    # RequestRefund, ScreenRefund; SendRefundToGateway (regular); CompleteRefund, CreditInvoice, NotifyCustomer.
    assert shape_of(events_of("refund_completed")) == "LLRLLL"


def test_the_engine_shape_adds_the_release_marker_and_the_two_resting_status_upserts_in_history_order():
    # P: the release's patch marker (with its TemporalChangeVersion upsert); U: FlowStatus written
    # where the flow rests — `sending` (with CustomerId) before the gateway step, and its end.
    assert engine_shape_of(events_of("refund_completed")) == "PLLURLLLU"


def test_what_longer_histories_hold_beyond_the_shortest_is_counted_by_event_type():
    # A workflow task's heartbeat while local activities wait adds a completed task and the next
    # one's scheduling and start: the bench names those events, so "constant in N" is checked.
    shortest = list(events_of("refund_completed"))
    task_events = [e for e in shortest if e.event_type in (
        EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)][:3]
    heartbeat = shortest + task_events

    extra = beyond_the_shortest([shortest, heartbeat, shortest])

    assert extra == {"WORKFLOW_TASK_SCHEDULED": 1, "WORKFLOW_TASK_STARTED": 1, "WORKFLOW_TASK_COMPLETED": 1}
    assert beyond_the_shortest([shortest, shortest]) == {}
