"""The reconciliation owner's handler (`RecordDiscrepancy`): a flow gone again after support
resumed it and resolved its discrepancy is reported again, and listed open; a discrepancy found
again while open, or the same command delivered twice, changes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta

from activities.reconciliation import ReconciliationActivities
from domain.reconciliation.commands import RecordDiscrepancy, ResolveDiscrepancy, discrepancy_id
from tests.fakes import FakeDatabase, FakeUnitOfWork
from tests.unit.builders import SUPPORT, T0, command, eur, names

FOUND = "flow_gone:r-42"


def found_by(pass_id: str, issued_at: datetime, run: str = "run-1") -> RecordDiscrepancy:
    """The command a daily pass (`reconciliation-{pass_id}`) sends for refund r-42's reservation,
    held by the gone run `run` of its flow."""
    return command(
        RecordDiscrepancy,
        command_id=f"reconciliation-{pass_id}/discrepancy-{FOUND}",
        issued_at=issued_at,
        discrepancy_id=discrepancy_id("flow_gone", "r-42"),
        kind="flow_gone",
        order_id="o-42",
        business_id="r-42",
        ours=eur("30.00"),
        detail=f"billing holds 30.00 EUR reserved for refund r-42; its flow refund-r-42 is terminated (run {run}).",
    )


def open_ids(database: FakeDatabase) -> list[str]:
    with FakeUnitOfWork(database) as uow:
        return [d.id for d in uow.discrepancies.with_status("open")]


def owner() -> tuple[ReconciliationActivities, FakeDatabase]:
    database = FakeDatabase()
    return ReconciliationActivities(lambda: FakeUnitOfWork(database), gateway=None), database  # type: ignore[arg-type]


def test_a_gone_flow_found_again_after_support_resolved_its_discrepancy_is_recorded_and_listed_again():
    recon, database = owner()
    recon.record_discrepancy(found_by("day-1", T0))
    recon.resolve_discrepancy(
        command(ResolveDiscrepancy, actor=SUPPORT, issued_at=T0 + timedelta(hours=2), discrepancy_id=FOUND,
                note="resumed refund-r-42, ticket 881")
    )
    assert open_ids(database) == []

    same_run = recon.record_discrepancy(found_by("day-2", T0 + timedelta(days=1)))  # support dealt with that run
    assert (same_run.events, open_ids(database)) == ([], [])
    again = recon.record_discrepancy(found_by("day-3", T0 + timedelta(days=2), run="run-2"))  # resumed, gone again

    assert names(again.events) == ["DiscrepancyRecorded"]  # the fact the flow tells support on
    assert open_ids(database) == [FOUND]
    assert names(database.outbox) == ["DiscrepancyRecorded", "DiscrepancyResolved", "DiscrepancyRecorded"]


def test_a_discrepancy_found_again_while_open_or_delivered_twice_changes_nothing():
    recon, database = owner()
    first = recon.record_discrepancy(found_by("day-1", T0))

    twice = recon.record_discrepancy(found_by("day-1", T0))  # the same command again (a retry)
    next_day = recon.record_discrepancy(found_by("day-2", T0 + timedelta(days=1)))  # not resolved yet

    assert names(first.events) == ["DiscrepancyRecorded"]
    assert twice == first
    assert next_day.events == []
    assert open_ids(database) == [FOUND]
    assert names(database.outbox) == ["DiscrepancyRecorded"]
