"""Which refunds reconciliation asks invoicing to credit: refunds billing paid out whose
order's invoice holds no credit note for them. A refund's own flow credits the invoice right
after billing records the money paid back (from release flows-2026-12-07b); a refund paid out
before that release, or by a flow that ended between the two steps, has no note, and the daily
pass asks invoicing for one. Invoicing decides (one note per refund, never beyond the invoice),
so asking again is safe. A refund whose credit invoicing refused once is flagged for support
(`refund_not_credited`) and left to them, not asked about every day."""

from __future__ import annotations

from collections.abc import Collection

from domain.billing.order import Order
from domain.invoicing.invoice import Invoice
from domain.reconciliation.queries import RefundToCredit


def refunds_to_credit(order: Order, invoice: Invoice | None, left_to_support: Collection[str]) -> list[RefundToCredit]:
    """`order`'s refunds paid out (for billing's amount) with no credit note on `invoice`,
    leaving out those in `left_to_support` (refund ids flagged `refund_not_credited`)."""
    credited = invoice.credited_refunds if invoice is not None else frozenset()
    return [
        RefundToCredit(order_id=order.id, refund_id=refund.refund_id, amount=refund.amount)
        for refund in order.refunds_paid_out
        if refund.amount is not None and refund.refund_id not in credited and refund.refund_id not in left_to_support
    ]
