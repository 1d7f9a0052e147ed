"""Which reservations reconciliation asks about: money held for a refund for over an hour."""

from __future__ import annotations

from datetime import timedelta

from domain.reconciliation.stranded import STRANDED_AFTER, reservations_to_check
from tests.unit.builders import delivered_order
from tests.unit.test_order_refunds import AFTER_DELIVERY, approve, cancel, complete


def test_only_money_still_reserved_for_over_an_hour_is_asked_about():
    order = delivered_order("100.00")
    for refund_id in ("r-held", "r-paid", "r-cancelled"):
        approve(order, refund_id, "10.00")  # each reserved at AFTER_DELIVERY
    order.complete_refund(complete(order, "r-paid"))
    order.cancel_refund(cancel(order, "r-cancelled"))

    just_under = AFTER_DELIVERY + STRANDED_AFTER - timedelta(seconds=1)
    assert reservations_to_check(order, just_under) == []  # its flow may be starting
    assert [r.refund_id for r in reservations_to_check(order, AFTER_DELIVERY + STRANDED_AFTER)] == ["r-held"]
