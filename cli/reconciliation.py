"""starter.py's reconciliation verbs: the schedules, the open discrepancies, and support
resolving one.

    starter.py schedule pause|unpause|trigger [--daily] [--note TEXT]
    starter.py schedule interval MINUTES          # how often the frequent pass runs
    starter.py schedule lookups N [--daily]       # gateway look-ups a pass makes at most
    starter.py discrepancies [--all]              # open ones (all: resolved too)
    starter.py resolve-discrepancy ID --note TEXT --as support:ID
    starter.py compare-settlements DAY            # a day's settlements again (a run that failed)

Registered from starter.py's build_parser() with `add_verbs`; each verb carries its handler.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import inspect
from temporalio.client import (
    ScheduleIntervalSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
    WorkflowHandle,
)

from adapters import db
from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types
from domain.shared.actor import Role
from workflows.messages import MAX_LOOKUPS_PER_PASS, DiscrepancyResolution, ReconciliationRun
from workflows.reconciliation import ReconciliationWorkflow, ResolveDiscrepancyWorkflow
from workflows.schedules import DAILY, FREQUENT

MAX_INTERVAL_MINUTES = 24 * 60


class UsageError(Exception):
    """Bad input found after parsing: one line on stderr, exit code 2 (starter.py's UsageError)."""


def minutes(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_INTERVAL_MINUTES:
        raise argparse.ArgumentTypeError(f"the interval is a whole number of minutes, 1 to {MAX_INTERVAL_MINUTES}, got {text!r}")
    return int(text)


def past_day(text: str) -> date:
    """A UTC day that is over (its settlements are complete only then), as YYYY-MM-DD."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a day is YYYY-MM-DD, got {text!r}") from None
    if day >= datetime.now(UTC).date():
        raise argparse.ArgumentTypeError(f"{day} is not over yet (UTC): its settlements are compared once it is")
    return day


def add_verbs(verbs: Any, common: argparse.ArgumentParser, derived_id: Any, note: Any, reason: Any, actor: Any) -> None:
    """Add the verbs, reusing starter.py's argument checkers (`derived_id`: an id settleflow made,
    e.g. `capture:payment-{order}/retry-2`, longer than any id a person gives)."""
    p = verbs.add_parser("schedule", parents=[common], help="pause, unpause, trigger or re-time reconciliation")
    p.add_argument("action", choices=["pause", "unpause", "trigger", "interval", "lookups"])
    p.add_argument("number", nargs="?", help="with `interval`: run every NUMBER minutes; with `lookups`: "
                   f"ask the gateway about at most NUMBER open requests a pass (1 to {MAX_LOOKUPS_PER_PASS})")
    p.add_argument("--daily", action="store_true", help="the daily pass's schedule instead of the frequent one")
    p.add_argument("--note", default="", type=note, help="why (shown on the schedule in the UI)")
    p.set_defaults(handler=schedule)

    p = verbs.add_parser("discrepancies", parents=[common], help="what reconciliation found for support")
    p.add_argument("--all", action="store_true", help="resolved ones too")
    p.set_defaults(handler=discrepancies)

    p = verbs.add_parser("resolve-discrepancy", parents=[common], help="support closes a discrepancy with a note")
    p.add_argument("discrepancy_id", type=derived_id)
    p.add_argument("--note", required=True, type=reason, help="what was done about it")
    p.add_argument("--as", dest="actor", type=actor, help="support:ID (or --token, or $SETTLEFLOW_TOKEN)")
    p.set_defaults(handler=resolve_discrepancy)

    p = verbs.add_parser(
        "compare-settlements", parents=[common],
        help="the daily pass for one day again (its settlements could not be read, or were listed late)",
    )
    p.add_argument("day", type=past_day, help="YYYY-MM-DD (UTC), a day that is over")
    p.set_defaults(handler=compare_settlements)


async def schedule(cli: Any) -> None:
    args = cli.args
    if args.action == "interval" and args.number is None:
        raise UsageError("give MINUTES with `interval`: how often the frequent pass runs")
    if args.action == "lookups" and args.number is None:
        raise UsageError("give the number of look-ups with `lookups`: how many open requests a pass asks about")
    if args.action not in ("interval", "lookups") and args.number is not None:
        raise UsageError(f"`{args.action}` takes no number (MINUTES goes with `interval`, look-ups with `lookups`)")
    if args.action == "interval" and args.daily:
        raise UsageError("the daily pass runs once a day; `interval` re-times the frequent one")
    try:
        every = timedelta(minutes=minutes(args.number)) if args.action == "interval" else None
    except argparse.ArgumentTypeError as bad:
        raise UsageError(str(bad)) from None
    if args.action == "lookups" and not (args.number.isdigit() and 1 <= int(args.number) <= MAX_LOOKUPS_PER_PASS):
        raise UsageError(f"the look-ups a pass makes are a whole number, 1 to {MAX_LOOKUPS_PER_PASS}, "
                         f"got {args.number!r}")
    schedule_id = DAILY if args.daily else FREQUENT
    handle = (await cli.client()).get_schedule_handle(schedule_id)
    note = args.note or f"{args.action} from starter.py"
    if args.action == "pause":
        await handle.pause(note=note)
    elif args.action == "unpause":
        await handle.unpause(note=note)
    elif args.action == "trigger":
        await handle.trigger()
    elif args.action == "lookups":
        converter = (await cli.client()).data_converter

        async def reset_lookups(update: ScheduleUpdateInput) -> ScheduleUpdate:
            # The run the schedule starts keeps what else it asks (daily or not): only its
            # look-ups change, from the next run on.
            current = update.description.schedule
            [run] = await converter.decode(list(current.action.args), [ReconciliationRun])
            current.action.args = [run.model_copy(update={"lookups_per_pass": int(args.number)})]
            current.state.note = note
            return ScheduleUpdate(schedule=current)

        await handle.update(reset_lookups)
    else:

        def retime(update: ScheduleUpdateInput) -> ScheduleUpdate:
            current = update.description.schedule
            current.spec.intervals = [ScheduleIntervalSpec(every=every)]
            current.state.note = note
            return ScheduleUpdate(schedule=current)

        await handle.update(retime)
    described = await handle.describe()
    state = described.schedule.state
    cli.out(
        f"{schedule_id}: {args.action} done; {'paused' if state.paused else 'running'}"
        + (f" ({state.note})" if state.note else ""),
        schedule_id=schedule_id,
        action=args.action,
        paused=state.paused,
        note=state.note,
    )


async def discrepancies(cli: Any) -> list[dict]:
    rows = [d.model_dump(mode="json", exclude={"version"}) for d in _discrepancies(cli, include_resolved=cli.args.all)]
    if cli.args.json:
        print(json.dumps(rows))
        return rows
    if not rows:
        print("no open discrepancies" if not cli.args.all else "no discrepancies")
    for row in rows:
        amounts = ", ".join(f"{side}: {_money(row[side])}" for side in ("ours", "gateway") if row.get(side))
        order = f"order {row['order_id']}" if row["order_id"] else "no single order"
        print(f"{row['id']}  [{row['status']}]  {order}" + (f"  ({amounts})" if amounts else ""))
        print(f"    {row['detail']}")
        if row["status"] == "resolved":
            print(f"    resolved by {row['resolved_by']}: {row['note']}")
        elif row["resolved_by"]:  # found again after support resolved it
            print(f"    found again on {row['found_at']}; resolved before by {row['resolved_by']}: {row['note']}")
    return rows


async def resolve_discrepancy(cli: Any) -> dict:
    args = cli.args
    if args.actor.role is not Role.SUPPORT:
        raise UsageError(f"only support resolves a discrepancy, not a {args.actor.role.value}")
    known = {d.id: d for d in _discrepancies(cli, include_resolved=True)}
    if args.discrepancy_id not in known:
        raise UsageError(f"no discrepancy {args.discrepancy_id!r} (see `starter.py discrepancies`)")
    discrepancy = known[args.discrepancy_id]
    if discrepancy.status.value == "resolved":
        raise UsageError(f"discrepancy {args.discrepancy_id!r} is already resolved")
    handle, _ = await cli.start(
        ResolveDiscrepancyWorkflow,
        DiscrepancyResolution(
            discrepancy_id=args.discrepancy_id, note=args.note, resolved_by=args.actor, token=args.token
        ),
        resolution_workflow_id(discrepancy),
        f"Support resolves discrepancy {args.discrepancy_id}",
        {},
    )
    return await cli.wait_for(handle)


async def compare_settlements(cli: Any) -> dict:
    """The daily pass for one day, as its schedule runs it (the frequent pass, the day's
    settlements, stranded reservations): once per day at a time, asked again once the last
    run of that day has ended."""
    day = cli.args.day
    handle, _ = await cli.start(
        ReconciliationWorkflow,
        ReconciliationRun(daily=True, settlement_day=day),
        f"reconciliation-settlements-{day}",
        f"Settlements of {day} compared again",
        {},
        again=_once_ended,
    )
    return await cli.wait_for(handle)


async def _once_ended(last: WorkflowHandle, request: Any) -> Any:
    return None if (await last.describe()).status is WorkflowExecutionStatus.RUNNING else request


def resolution_workflow_id(discrepancy: Any) -> str:
    """One resolution per time a discrepancy is open: its commands' ids derive from this id, so
    a discrepancy found again after a resolution needs a new one (the first run's would be
    answered from the inbox, resolving nothing). Its first opening keeps the plain id."""
    workflow_id = f"resolve-discrepancy-{discrepancy.id}"
    if discrepancy.resolved_at is None:
        return workflow_id
    return f"{workflow_id}-found-{discrepancy.found_at.astimezone(UTC):%Y%m%dT%H%M%S%fZ}"


def _discrepancies(cli: Any, include_resolved: bool) -> list[Any]:
    engine = db.make_engine(cli.settings.database_url)
    try:
        if not inspect(engine).has_table("discrepancies"):
            return []  # not migrated this far: reconciliation has recorded nothing here
        with SqlUnitOfWork(engine, default_aggregate_types()) as uow:
            found = uow.discrepancies.with_status("open")
            if include_resolved:
                found += uow.discrepancies.with_status("resolved")
            return found
    finally:
        engine.dispose()


def _money(value: dict) -> str:
    return f"{value['amount']} {value['currency']}"

