"""Finding refunds whose money is held by a flow that no longer runs (`FindStrandedRefunds`):
a flow Temporal cannot describe now holds up no other; it is asked about again next pass."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import WorkflowExecutionStatus
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

    def get_workflow_handle(self, workflow_id: str) -> "TemporalWithABlip.Handle":
        return TemporalWithABlip.Handle(self, workflow_id)

    @dataclass
    class Handle:
        temporal: "TemporalWithABlip"
        workflow_id: str

        async def describe(self) -> Described:
            if self.workflow_id in self.temporal.unavailable:
                raise RPCError("frontend unavailable", RPCStatusCode.UNAVAILABLE, b"")
            if self.workflow_id not in self.temporal.statuses:
                raise RPCError("not found", RPCStatusCode.NOT_FOUND, b"")
            return Described(self.temporal.statuses[self.workflow_id], f"run-of-{self.workflow_id}")


def test_a_flow_temporal_cannot_describe_now_holds_up_no_other_stranded_refund():
    orders = []
    for n in range(1, 5):
        order = delivered_order("100.00")
        order.id = f"o-{n}"
        approve(order, f"r-{n}", "10.00")
        orders.append(order)
    database = FakeDatabase()
    with FakeUnitOfWork(database) as uow:
        for order in orders:
            uow.orders.add(order)
        uow.commit()
    temporal = TemporalWithABlip(
        {"refund-r-1": WorkflowExecutionStatus.TERMINATED, "refund-r-2": WorkflowExecutionStatus.RUNNING,
         "refund-r-3": WorkflowExecutionStatus.TERMINATED},
        unavailable={"refund-r-3"},
    )  # refund-r-4: Temporal knows no such flow
    finder = ReconciliationActivities(lambda: FakeUnitOfWork(database), gateway=None, client=temporal)  # type: ignore[arg-type]

    found = asyncio.run(finder.find_stranded_refunds(ReconciliationScan(as_of=AFTER_DELIVERY + timedelta(hours=2))))

    assert sorted((s.refund_id, s.workflow_status, s.workflow_run_id) for s in found) == [
        ("r-1", "terminated", "run-of-refund-r-1"),
        ("r-4", "not found", ""),
    ]  # r-2 still runs; r-3 is asked about again next pass
