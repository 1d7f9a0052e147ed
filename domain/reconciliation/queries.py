"""What reconciliation reads from the owners and the gateway, in plain messages that can
cross Temporal: the items whose gateway answer is missing, reservations whose flow
is gone, money owed with no refund on its way, stops of a parcel nobody answered, and refunds
paid out that no credit note answers.
Reading decides nothing; the owners decide when the commands arrive."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from domain.shared.money import Money


# Open gateway requests one read returns at most, the longest waiting first: a backlog after a
# long gateway outage must not outgrow one activity result (Temporal refuses payloads over 2 MB;
# one request is about 200 bytes). A pass asks about fewer still (`ReconciliationRun`).
OPEN_REQUESTS_PER_READ = 2000


class OpenGatewayRequest(BaseModel):
    """A capture attempt or gateway refund whose answer payments does not have."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["capture", "refund"]
    order_id: str
    business_id: str  # the attempt id or the refund id
    status: str  # "unknown", or "sent" (long ago)
    amount: Money


class StrandedRefund(BaseModel):
    """Money billing holds reserved for a refund whose flow no longer runs."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    refund_id: str
    amount: Money
    requested_at: datetime
    workflow_id: str
    workflow_status: str  # "terminated", "failed", "not found" ...
    workflow_run_id: str = ""  # the run that is gone ("" when none is found): a later one gone again differs


class MoneyOwed(BaseModel):
    """Money an order owes its customer back (cancelled, or its parcel came back), with no refund on its way for it."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    customer_id: str
    amount: Money
    owed_since: datetime


class UnansweredParcelStop(BaseModel):
    """A stop of a parcel billing asked for long ago whose answer nobody recorded, and the flow
    that was to carry it, which no longer runs."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    refund_id: str
    tracking: str
    asked_at: datetime
    because: str  # "refund" | "cancellation" (domain/billing/parcel_stop.py)
    workflow_id: str
    workflow_status: str  # "terminated", "completed" (a run of a release before), "not found" ...

    @property
    def resumable(self) -> bool:
        """Whether its flow can be sent on (`starter.py resume-flow`): it ended, it did not finish."""
        return self.workflow_status not in ("completed", "not found")


class RefundToCredit(BaseModel):
    """A refund billing paid out (for `amount`) whose order's invoice has no credit note for it."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    refund_id: str
    amount: Money


class ReconciliationScan(BaseModel):
    as_of: datetime  # the reconciliation run's own time: decisions never read the clock


class SettlementDay(BaseModel):
    day: date

