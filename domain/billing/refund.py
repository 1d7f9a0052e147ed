"""A refund as billing sees it: an entity inside the Order aggregate."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel

from domain.shared.money import Money


class RefundStatus(StrEnum):
    APPROVED = "approved"  # in flight: its amount is reserved
    REJECTED = "rejected"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Refund(BaseModel):
    refund_id: str
    requested_by: str
    requested_at: datetime
    reason: str
    status: RefundStatus
    amount: Money | None = None  # None only for a rejection without a usable amount
    outcome: str = ""  # rejection code, failure or cancellation reason, gateway reference

    @property
    def in_flight(self) -> bool:
        return self.status is RefundStatus.APPROVED

    @property
    def paid_out(self) -> bool:
        return self.status is RefundStatus.COMPLETED
