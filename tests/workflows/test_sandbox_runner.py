"""worker.py runs its flows in `adapters.sandbox.SandboxRunner`: Temporal's sandbox with
its entry code compiled once. It must still be the sandbox — the same restrictions, a fresh
module per run — on the pinned temporalio version it reaches into."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError

from adapters.sandbox import SandboxRunner, compiled

RUNS: list[int] = []  # module state: a sandboxed run sees a fresh copy, never this one


@workflow.defn(sandboxed=True)
class ReadsTheClock:
    @workflow.run
    async def run(self) -> str:
        return datetime.now().isoformat()  # non-deterministic: the sandbox refuses it


@workflow.defn(sandboxed=True)
class CountsRuns:
    @workflow.run
    async def run(self) -> int:
        RUNS.append(1)
        return len(RUNS)


async def run_in(env, workflow_type, **options):
    queue = f"sandbox-{uuid.uuid4().hex[:8]}"
    async with Worker(env.client, task_queue=queue, workflows=[workflow_type], workflow_runner=SandboxRunner(),
                      **options):
        return await env.client.execute_workflow(workflow_type.run, id=f"{queue}-wf", task_queue=queue)


async def test_a_workflow_reading_the_clock_is_still_refused(env):
    with pytest.raises(WorkflowFailureError) as failed:
        await run_in(env, ReadsTheClock, workflow_failure_exception_types=[RestrictedWorkflowAccessError])
    assert "datetime.datetime.now" in str(failed.value.cause)


async def test_every_run_still_gets_its_own_copy_of_the_workflow_module(env):
    assert await run_in(env, CountsRuns) == 1
    assert await run_in(env, CountsRuns) == 1
    assert RUNS == []


async def test_its_entry_code_is_compiled_once_and_reused_by_later_runs(env):
    await run_in(env, CountsRuns)
    before = compiled.cache_info()
    await run_in(env, CountsRuns)
    after = compiled.cache_info()
    assert after.hits > before.hits and after.misses == before.misses
