"""worker.py runs its flows in `adapters.sandbox.SandboxRunner`: Temporal's sandbox with
its entry code compiled once. It must still be the sandbox — the same restrictions, a fresh
module per run, the same serialization context for every payload — on the pinned
temporalio version it reaches into."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError, SandboxedWorkflowRunner

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


# -- serialization contexts, answered without entering the sandbox ----------------------
@activity.defn(name="sandbox_echo")
async def echo(text: str) -> str:
    return text


@workflow.defn(sandboxed=True)
class AsksAnActivity:
    @workflow.run
    async def run(self, text: str) -> str:
        remote = await workflow.execute_activity(echo, text, start_to_close_timeout=timedelta(seconds=10))
        local = await workflow.execute_local_activity(echo, remote, start_to_close_timeout=timedelta(seconds=10))
        return local


@dataclass(frozen=True)
class RecordingCodec(PayloadCodec, WithSerializationContext):
    """Passes payloads through unchanged, writing down the context each one was given."""

    seen: list = field(default_factory=list)
    context: object = None

    def with_context(self, context: SerializationContext) -> RecordingCodec:
        return RecordingCodec(self.seen, context)

    async def encode(self, payloads):
        self.seen.append(("encode", self.context))
        return list(payloads)

    async def decode(self, payloads):
        self.seen.append(("decode", self.context))
        return list(payloads)


async def contexts_seen(env, runner, queue: str) -> list:
    codec = RecordingCodec()
    client = Client(**{**env.client.config(), "data_converter": DataConverter(payload_codec=codec)})
    async with Worker(client, task_queue=queue, workflows=[AsksAnActivity], activities=[echo],
                      workflow_runner=runner):
        assert await client.execute_workflow(AsksAnActivity.run, "hello", id=f"{queue}-{uuid.uuid4().hex[:8]}", task_queue=queue) == "hello"
    # The workflow ids differ between the two runs; everything else must be the same.
    return [(op, replace(ctx, workflow_id="wf") if ctx is not None and hasattr(ctx, "workflow_id") else ctx)
            for op, ctx in codec.seen]


async def test_every_payload_gets_the_serialization_context_the_sdks_own_sandbox_gives_it(env):
    queue = f"contexts-{uuid.uuid4().hex[:8]}"
    ours = await contexts_seen(env, SandboxRunner(), queue)
    sdks = await contexts_seen(env, SandboxedWorkflowRunner(), queue)

    assert ours == sdks
    assert any(isinstance(ctx, ActivitySerializationContext) and ctx.is_local for _, ctx in ours)
    assert any(isinstance(ctx, ActivitySerializationContext) and not ctx.is_local for _, ctx in ours)
