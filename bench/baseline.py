"""The baseline: a workflow that makes K sequential activity calls doing no work.

Same shape as a settleflow process manager (workflow on one task queue, its
activities on another, pydantic data converter, 30 s start-to-close with the same
retry policy as a DECIDE step), but the activity does nothing: no database, no
gateway, no domain code. What a refund costs beyond this is settleflow's own work.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

BASELINE_FLOWS_QUEUE = "bench-flows"
BASELINE_ACTIVITY_QUEUE = "bench-activities"

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                    maximum_interval=timedelta(minutes=5))


@activity.defn(name="bench_noop")
def noop(step: int) -> int:
    """Does nothing (a sync activity run in the thread pool, like settleflow's)."""
    return step


@workflow.defn(name="BaselineWorkflow")
class BaselineWorkflow:
    @workflow.run
    async def run(self, calls: int) -> int:
        done = 0
        for step in range(calls):
            done += 1 if await workflow.execute_activity(
                "bench_noop", step, task_queue=BASELINE_ACTIVITY_QUEUE, result_type=int,
                start_to_close_timeout=timedelta(seconds=30), retry_policy=RETRY,
            ) == step else 0
        return done
