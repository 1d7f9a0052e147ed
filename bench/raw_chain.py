"""The same-shape raw chain: the bare engine doing the steps a happy-path refund does.

`RawChainWorkflow(shape)` runs, in order, one no-op activity per letter of `shape`:
"L" a local activity with the refund's DECIDE settings, "R" a regular activity on
its own task queue with the refund's GATEWAY settings. The bench reads the shape from
a recorded refund history (`shape_of`), so the chain follows the refund when the
refund changes. No database, no gateway, no domain code: what a refund costs beyond
this chain is settleflow's own work.

The engine shape (`engine_shape_of`) adds the two engine features a refund also uses,
in history order: "P" a patch marker (`workflow.patched`, which records the marker and
upserts TemporalChangeVersion) and "U" an upsert of a search attribute (FlowStatus).
A chain of that shape splits settleflow's cost in two: what the engine charges for the
release marker and the searchable statuses, and what settleflow's own code costs.
"""

from __future__ import annotations

from collections import Counter

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType

with workflow.unsafe.imports_passed_through():
    from workflows.process import FLOW_STATUS
    from workflows.refund import DECIDE, GATEWAY

RAW_FLOWS_QUEUE = "raw-flows"
RAW_ACTIVITY_QUEUE = "raw-activities"
LOCAL_ACTIVITY_MARKER = "core_local_activity"  # the SDK's marker for a local activity's result
PATCH_MARKER = "core_patch"  # the SDK's marker for workflow.patched()
CHANGE_VERSION = "TemporalChangeVersion"  # the search attribute the SDK upserts with a patch marker


@activity.defn(name="raw_noop")
def noop(step: int) -> int:
    """Does nothing: a sync activity run in the thread pool, like settleflow's."""
    return step


@workflow.defn(name="RawChainWorkflow")
class RawChainWorkflow:
    @workflow.run
    async def run(self, shape: str) -> int:
        done = 0
        for step, kind in enumerate(shape):
            if kind == "L":
                answer = await workflow.execute_local_activity(
                    "raw_noop", step, result_type=int, start_to_close_timeout=DECIDE.start_to_close,
                    schedule_to_close_timeout=DECIDE.schedule_to_close, retry_policy=DECIDE.retry,
                )
            elif kind == "P":
                answer = step if workflow.patched(f"raw-chain-{step}") else -1
            elif kind == "U":
                workflow.upsert_search_attributes([FLOW_STATUS.value_set(f"step-{step}")])
                answer = step
            else:
                answer = await workflow.execute_activity(
                    "raw_noop", step, task_queue=RAW_ACTIVITY_QUEUE, result_type=int,
                    start_to_close_timeout=GATEWAY.start_to_close,
                    schedule_to_close_timeout=GATEWAY.schedule_to_close, retry_policy=GATEWAY.retry,
                )
            done += answer == step
        return done


def shape_of(events) -> str:
    """"L" per local-activity marker, "R" per scheduled activity, in history order."""
    return "".join(letter for letter in engine_shape_of(events) if letter in "LR")


def beyond_the_shortest(histories: list[list]) -> Counter:
    """The event types the longer histories hold beyond the shortest one's, summed over them:
    what "history events constant in N" loses under load (e.g. a workflow task's heartbeat
    while local activities wait, or a task timed out and scheduled again)."""
    kinds = [Counter(EventType.Name(event.event_type).removeprefix("EVENT_TYPE_") for event in events)
             for events in histories]
    if not kinds:
        return Counter()
    shortest = min(kinds, key=lambda k: sum(k.values()))
    extra: Counter = Counter()
    for k in kinds:
        extra.update(k - shortest)
    return extra


def engine_shape_of(events) -> str:
    """The shape with the engine's other work: also "P" per patch marker (its
    TemporalChangeVersion upsert goes with it) and "U" per other search-attribute upsert."""
    shape = ""
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            shape += "R"
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes.marker_name
            shape += {LOCAL_ACTIVITY_MARKER: "L", PATCH_MARKER: "P"}.get(marker, "")
        elif event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            shape += "" if set(fields) == {CHANGE_VERSION} else "U"
    return shape
