"""Finding refunds whose money is held by a flow that no longer runs (`FindStrandedRefunds`):
a flow Temporal cannot describe now holds up no other; it is asked about again next pass."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.reconciliation import ReconciliationActivities
from domain.reconciliation.queries import ReconciliationScan
from tests.fakes import FakeDatabase, FakeUnitOfWork
from tests.unit.builders import delivered_order
from tests.unit.test_order_refunds import AFTER_DELIVERY, approve


@dataclass
class Described:
    status: WorkflowExecutionStatus
    run_id: str


class TemporalWithABlip:
    """Temporal's client as the finder uses it: one flow cannot be described right now."""

    def __init__(self, statuses: dict[str, WorkflowExecutionStatus], unavailable: set[str]) -> None:
        self.statuses, self.unavailable = statuses, unavailable
        self.refusal: RPCStatusCode | None = None  # every describe refused so, when set

    def get_workflow_handle(self, workflow_id: str) -> "TemporalWithABlip.Handle":
        return TemporalWithABlip.Handle(self, workflow_id)

    @dataclass
    class Handle:
        temporal: "TemporalWithABlip"
        workflow_id: str

        async def describe(self) -> Described:
            if self.temporal.refusal is not None:
                raise RPCError("refused", self.temporal.refusal, b"")
            if self.workflow_id in self.temporal.unavailable:
                raise RPCError("frontend unavailable", RPCStatusCode.UNAVAILABLE, b"")
            if self.workflow_id not in self.temporal.statuses:
                raise RPCError("not found", RPCStatusCode.NOT_FOUND, b"")
            return Described(self.temporal.statuses[self.workflow_id], f"run-of-{self.workflow_id}")


def finder_over(refunds: int, temporal: TemporalWithABlip) -> ReconciliationActivities:
    """The finder, with `refunds` orders each holding a refund (r-1, r-2, ...) reserved since long ago."""
    database = FakeDatabase()
    with FakeUnitOfWork(database) as uow:
        for n in range(1, refunds + 1):
            order = delivered_order("100.00")
            order.id = f"o-{n}"
            approve(order, f"r-{n}", "10.00")
            uow.orders.add(order)
        uow.commit()
    return ReconciliationActivities(lambda: FakeUnitOfWork(database), gateway=None, client=temporal)  # type: ignore[arg-type]


SCAN = ReconciliationScan(as_of=AFTER_DELIVERY + timedelta(hours=2))


def test_a_flow_temporal_cannot_describe_now_holds_up_no_other_stranded_refund():
    temporal = TemporalWithABlip(
        {"refund-r-1": WorkflowExecutionStatus.TERMINATED, "refund-r-2": WorkflowExecutionStatus.RUNNING,
         "refund-r-3": WorkflowExecutionStatus.TERMINATED},
        unavailable={"refund-r-3"},
    )  # refund-r-4: Temporal knows no such flow

    found = asyncio.run(finder_over(4, temporal).find_stranded_refunds(SCAN))

    assert sorted((s.refund_id, s.workflow_status, s.workflow_run_id) for s in found) == [
        ("r-1", "terminated", "run-of-refund-r-1"),
        ("r-4", "not found", ""),
    ]  # r-2 still runs; r-3 is asked about again next pass


@pytest.mark.parametrize("why", ["all unavailable", "permission refused"])
def test_temporal_down_or_refusing_fails_the_read_rather_than_answer_that_nothing_is_stranded(why):
    # "Nothing found" would read as a clean answer; a failed read is noted by the daily pass.
    temporal = TemporalWithABlip({}, unavailable={"refund-r-1", "refund-r-2"})
    failure: type[Exception] = ApplicationError  # TemporalUnavailable
    if why == "permission refused":
        temporal = TemporalWithABlip({"refund-r-1": WorkflowExecutionStatus.TERMINATED}, unavailable=set())
        temporal.refusal, failure = RPCStatusCode.PERMISSION_DENIED, RPCError

    with pytest.raises(failure):
        asyncio.run(finder_over(2, temporal).find_stranded_refunds(SCAN))
