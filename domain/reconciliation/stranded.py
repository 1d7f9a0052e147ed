"""Which reservations reconciliation asks about: money billing has held for a refund long
enough that its flow should be under way. Whether that flow still runs is Temporal's to say
(the activity asks); this says which reservations are worth the question."""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.billing.order import Order
from domain.billing.refund import Refund

# A reservation younger than this is left alone: its flow may be starting, or waiting for a
# person (a fraud review lasts up to 72 h, and its flow runs meanwhile).
STRANDED_AFTER = timedelta(hours=1)


def reserved_before(as_of: datetime) -> datetime:
    """Reservations made before this moment are old enough to be asked about."""
    return as_of - STRANDED_AFTER


def reservations_to_check(order: Order, as_of: datetime) -> list[Refund]:
    """The order's refunds whose money is still reserved (in flight) and was reserved before
    `reserved_before(as_of)`."""
    cutoff = reserved_before(as_of)
    return [refund for refund in order.refunds.values() if refund.in_flight and refund.requested_at <= cutoff]
