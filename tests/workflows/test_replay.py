"""Determinism guard: every recorded history must replay with today's workflow code.

Histories are recorded by running the workflow tests with
SETTLEFLOW_RECORD_HISTORIES=1 (see `make histories`). A change that would make a
running workflow take a different path on replay fails here, before it ships.

`histories/before-local-activities/` holds histories recorded before the owners'
database steps became local activities: workflows started then must still replay
(the `local-decisions` patch keeps them on remote activities).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from adapters.codec import data_converter
from adapters.sandbox import SandboxRunner
from temporalio.worker import Replayer

from workflows.registry import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").rglob("*.json"))


def test_every_workflow_has_a_recorded_history():
    recorded = {WorkflowHistory.from_json("x", p.read_text()).events[0].workflow_execution_started_event_attributes.workflow_type.name for p in HISTORIES}
    assert recorded >= {w.__name__ for w in WORKFLOWS}


@pytest.mark.parametrize("path", HISTORIES, ids=[str(p.relative_to(p.parents[1] if p.parent.name != "histories" else p.parent).with_suffix("")) for p in HISTORIES])
async def test_recorded_history_replays_with_current_code(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter(), workflow_runner=SandboxRunner())

    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)

    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure}"
