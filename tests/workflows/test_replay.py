"""Determinism guard: every recorded history must replay with today's workflow code.

Histories are recorded by running the workflow tests with
SETTLEFLOW_RECORD_HISTORIES=1 (see `make histories`). A change that would make a
running workflow take a different path on replay fails here, before it ships.

`histories/before-local-activities/` holds histories recorded before the owners'
database steps became local activities: workflows started then must still replay
(the `local-decisions` patch keeps them on remote activities).

All of them replay through one Replayer, as `replay_workflows` is meant to be used: one
replay worker for some 300 histories takes a few seconds of CPU, where a worker per history
took a minute of the suite's. A failure names every history that no longer replays.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from adapters.codec import data_converter
from adapters.sandbox import SandboxRunner
from workflows.registry import WORKFLOWS

FOLDER = Path(__file__).parent / "histories"
HISTORIES = sorted(FOLDER.rglob("*.json"))


def name_of(path: Path) -> str:
    """`release-2026-12-06f/refund_completed`, or `refund_completed` for the current release's."""
    return str(path.relative_to(FOLDER).with_suffix(""))


@cache
def recorded() -> tuple[tuple[str, WorkflowHistory], ...]:
    return tuple((name_of(path), WorkflowHistory.from_json(name_of(path), path.read_text())) for path in HISTORIES)


def run_id(history: WorkflowHistory) -> str:
    return history.events[0].workflow_execution_started_event_attributes.original_execution_run_id


def test_every_workflow_has_a_recorded_history():
    types = {h.events[0].workflow_execution_started_event_attributes.workflow_type.name for _, h in recorded()}
    assert types >= {w.__name__ for w in WORKFLOWS}


def test_every_recorded_history_has_a_run_of_its_own():
    """The replay's results are by run id: two files of one run would hide each other's failure."""
    names_by_run: dict[str, list[str]] = {}
    for name, history in recorded():
        names_by_run.setdefault(run_id(history), []).append(name)
    assert {run: names for run, names in names_by_run.items() if len(names) > 1} == {}


async def test_every_recorded_history_replays_with_current_code():
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter(), workflow_runner=SandboxRunner())

    async def each():
        for _, history in recorded():
            yield history

    results = await replayer.replay_workflows(each(), raise_on_replay_failure=False)

    name_by_run = {run_id(history): name for name, history in recorded()}
    no_longer_replay = {name_by_run[run]: str(failure) for run, failure in results.replay_failures.items()}
    assert no_longer_replay == {}, "\n".join(f"{name} no longer replays: {why}" for name, why in no_longer_replay.items())
    assert len(recorded()) > 300
