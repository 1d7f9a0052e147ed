"""A stop of the parcel billing asked for (`ShipmentInterceptRequested`) and has no answer to
yet: a value inside the Order aggregate. The flow that asked carries the stop to shipping and
brings its answer back; one that ended on the way (terminated, or a run of the release before
mid-deploy) leaves the question open, and reconciliation asks about it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class StopAskedBecause(StrEnum):
    REFUND = "refund"  # a refund takes all of a parcel's money back while it is on the road
    CANCELLATION = "cancellation"  # the parcel left for an order cancelled meanwhile


class ParcelStop(BaseModel):
    model_config = ConfigDict(frozen=True)

    refund_id: str  # the refund paying the order back
    tracking: str
    asked_at: datetime
    because: StopAskedBecause
