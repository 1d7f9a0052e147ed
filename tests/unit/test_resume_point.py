"""Where `starter.py resume-flow` sends a gone flow back to (cli/resume.py `resume_point`)."""

from __future__ import annotations

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

from cli.resume import NotResumable, resume_point

STARTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
SCHEDULED = EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED
TASK_STARTED = EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
COMPLETED = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
ACTIVITY = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
CANCEL = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
CANCELED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED
TERMINATED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED
TASK = (SCHEDULED, TASK_STARTED, COMPLETED)


def history(*types: int) -> list[HistoryEvent]:
    return [HistoryEvent(event_id=i, event_type=t) for i, t in enumerate(types, 1)]


def test_a_terminated_flow_goes_back_to_its_last_completed_workflow_task():
    events = history(STARTED, *TASK, ACTIVITY, *TASK, ACTIVITY, TERMINATED)
    assert resume_point(events, cancelled=False) == 8


def test_a_cancelled_flow_goes_back_to_before_the_cancel_that_ended_it():
    events = history(STARTED, *TASK, ACTIVITY, CANCEL, *TASK, CANCELED)
    assert resume_point(events, cancelled=True) == 4


def test_a_cancel_the_flow_outlived_is_kept_only_the_last_one_is_left_out():
    events = history(STARTED, *TASK, CANCEL, *TASK, ACTIVITY, CANCEL, *TASK, CANCELED)
    assert resume_point(events, cancelled=True) == 8


def test_a_flow_that_never_completed_a_workflow_task_has_nothing_to_go_back_to():
    with pytest.raises(NotResumable, match="never completed a workflow task"):
        resume_point(history(STARTED, SCHEDULED, TASK_STARTED, TERMINATED), cancelled=False)
