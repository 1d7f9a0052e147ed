"""The Temporal Schedules that run ReconciliationWorkflow, created idempotently.

`ensure_schedules` runs at every worker start-up (so `make demo`/devstack have them too):
a schedule that exists already is left exactly as it is — an operator's pause or changed
interval survives restarts. `starter.py schedule ...` (cli/reconciliation.py) changes them.

Not a workflow module: it is imported by the worker and the command line, never by the sandbox.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
)

from workflows.messages import ReconciliationRun
from workflows.process import FLOWS_QUEUE
from workflows.reconciliation import ReconciliationWorkflow

FREQUENT = "reconciliation"  # schedule id: every few minutes
DAILY = "reconciliation-daily"  # schedule id: once a day, with the settlement comparison
DEFAULT_INTERVAL = timedelta(minutes=5)
DAILY_AT_HOUR_UTC = 2  # yesterday's settlement listing is complete by then


def frequent_schedule(interval: timedelta = DEFAULT_INTERVAL) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReconciliationWorkflow.run,
            ReconciliationRun(),
            id="reconciliation",  # Temporal appends the scheduled time: one id per run
            task_queue=FLOWS_QUEUE,
            static_summary="Reconciliation: ask the gateway about unknown and long-sent captures and refunds",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)]),
        # A run still going when the next is due: skip the next one (they would ask the same).
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note="created by the worker at start-up"),
    )


def daily_schedule() -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReconciliationWorkflow.run,
            ReconciliationRun(daily=True),
            id="reconciliation-daily",
            task_queue=FLOWS_QUEUE,
            static_summary="Daily reconciliation: ledgers against the gateway's settlements; stranded reservations",
        ),
        spec=ScheduleSpec(calendars=[ScheduleCalendarSpec(hour=[ScheduleRange(DAILY_AT_HOUR_UTC)])]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note="created by the worker at start-up"),
    )


async def ensure_schedules(client: Client) -> list[str]:
    """Create the reconciliation schedules that do not exist yet; return the ids created."""
    created = []
    for schedule_id, schedule in ((FREQUENT, frequent_schedule()), (DAILY, daily_schedule())):
        try:
            await client.create_schedule(schedule_id, schedule)
            created.append(schedule_id)
        except ScheduleAlreadyRunningError:
            pass  # exists: leave it as the operators set it
    return created
