"""Facts the reconciliation owner records."""

from __future__ import annotations

from typing import Literal

from domain.shared.messages import Event
from domain.shared.money import Money


class DiscrepancyRecorded(Event):
    type: Literal["DiscrepancyRecorded"] = "DiscrepancyRecorded"
    discrepancy_id: str
    kind: str
    order_id: str
    business_id: str
    ours: Money | None = None
    gateway: Money | None = None
    detail: str


class DiscrepancyResolved(Event):
    type: Literal["DiscrepancyResolved"] = "DiscrepancyResolved"
    discrepancy_id: str
    resolved_by: str
    note: str
