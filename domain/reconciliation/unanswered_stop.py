"""Which stops of a parcel reconciliation asks about: one billing asked for (`Order.parcel_stop`)
over an hour ago with no answer of shipping recorded. The flow that carries it takes seconds; one
still unanswered an hour later was left by a flow that ended on the way. Whether that flow still
runs is Temporal's to say (the activity asks); this says which stops are worth the question."""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.billing.order import Fulfilment, Order
from domain.billing.parcel_stop import ParcelStop

# A stop younger than this is left alone: the flow carrying it may be waiting for shipping.
UNANSWERED_AFTER = timedelta(hours=1)


def asked_before(as_of: datetime) -> datetime:
    """Stops asked for before this moment, still unanswered, are asked about."""
    return as_of - UNANSWERED_AFTER


def unanswered_stop(order: Order, as_of: datetime) -> ParcelStop | None:
    """The order's stop asked for before `asked_before(as_of)` with no answer yet, while billing
    still knows its parcel on the road; None if there is none."""
    stop = order.parcel_stop
    if stop is None or stop.asked_at > asked_before(as_of) or order.fulfilment is not Fulfilment.SHIPPED:
        return None
    return stop
