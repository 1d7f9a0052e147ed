"""Which money owed reconciliation flags: what an order owes its customer back (it was
cancelled, or its parcel came back: `Order.owes_back`) and has had no refund on its way for
(`Order.owed_since`). A cancellation's own refund takes it within seconds; money still owed an hour later was left by a person's "no" (a fraud review
rejected or expired), a refund the gateway declined, or a refund that never started. Billing
has told support once (`RefundOwed`); this keeps it in front of support until it is paid."""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.billing.order import Order
from domain.reconciliation.queries import MoneyOwed

# Money owed for less than this is left alone: its cancellation's refund may be starting.
OWED_AFTER = timedelta(hours=1)


def owed_before(as_of: datetime) -> datetime:
    """Money owed since before this moment, with no refund on its way, is flagged."""
    return as_of - OWED_AFTER


def money_owed(order: Order, as_of: datetime) -> MoneyOwed | None:
    """What `order` owes with no refund on its way since before `owed_before(as_of)`; None if nothing."""
    if order.owed_since is None or order.owed_since > owed_before(as_of) or not order.owed.is_positive:
        return None
    return MoneyOwed(order_id=order.id, customer_id=order.customer_id, amount=order.owed, owed_since=order.owed_since)
