"""Workflow-side CPU of a refund, replayed in this process: `python -m bench.sandbox_replay [--n 200]`.

Replays the recorded happy-path refund (`tests/workflows/histories/refund_completed.json`,
encrypted with the test suite's key) N times through each workflow runner, in one run,
alternating: the SDK's own `SandboxedWorkflowRunner` (the baseline) and settleflow's
`adapters.sandbox.SandboxRunner`. Prints CPU milliseconds per replayed refund (process
time: the server is not involved, so this is the worker's workflow side alone: sandbox,
payload visiting and codec, the workflow's own code) and the ratio. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import time
from pathlib import Path

# The key the suite recorded its histories with (tests/conftest.py), before the codec loads.
os.environ.setdefault("SETTLEFLOW_PAYLOAD_KEYS", "test-1=" + base64.b64encode(b"settleflow-test-payload-key-0001").decode())
os.environ.setdefault("SETTLEFLOW_PAYLOAD_KEY_ID", "test-1")

from temporalio.client import WorkflowHistory  # noqa: E402
from temporalio.worker import Replayer, WorkflowRunner  # noqa: E402
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner  # noqa: E402

import workflows  # noqa: E402
from adapters.bytecode import write_bytecode  # noqa: E402
from adapters.codec import data_converter  # noqa: E402
from adapters.sandbox import SandboxRunner  # noqa: E402
from workflows.registry import WORKFLOWS  # noqa: E402

HISTORY = Path(__file__).parents[1] / "tests" / "workflows" / "histories" / "refund_completed.json"
ROUNDS = 5  # alternating rounds per runner; the median is printed (the machine's load drifts)


async def cpu_ms_per_replay(runner: WorkflowRunner, history: WorkflowHistory, n: int) -> float:
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter(), workflow_runner=runner)

    async def histories():
        for i in range(n):
            yield WorkflowHistory(f"replay-{i}", history.events)

    started = time.process_time()
    async with replayer.workflow_replay_iterator(histories()) as results:
        async for result in results:
            if result.replay_failure is not None:
                raise SystemExit(f"the refund history no longer replays: {result.replay_failure}")
    return 1000 * (time.process_time() - started) / n


async def main(n: int) -> None:
    write_bytecode(workflows)  # as worker.py does at start
    history = WorkflowHistory.from_json("refund", HISTORY.read_text())
    runners = {"SDK SandboxedWorkflowRunner": SandboxedWorkflowRunner(), "settleflow SandboxRunner": SandboxRunner()}
    for runner in runners.values():
        await cpu_ms_per_replay(runner, history, 20)  # warm-up
    figures: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(ROUNDS):
        for name, runner in runners.items():
            figures[name].append(await cpu_ms_per_replay(runner, history, n))
    print(f"refund history replayed {n} times x {ROUNDS} rounds per runner ({len(history.events)} events)")
    for name, values in figures.items():
        print(f"  {name:<30} {statistics.median(values):6.2f} ms CPU per refund (median; rounds "
              f"{', '.join(f'{v:.2f}' for v in values)})")
    baseline, ours = (statistics.median(v) for v in figures.values())
    print(f"ratio SandboxRunner/SDK runner = {ours / baseline:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="replays per round (default 200)")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be at least 1")
    asyncio.run(main(args.n))
