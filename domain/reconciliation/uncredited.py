"""Which refunds reconciliation asks invoicing to credit: refunds billing paid out whose
order's invoice holds no credit note for them. A refund's own flow credits the invoice right
after billing records the money paid back (from release flows-2026-12-07b); a refund paid out
before that release, or by a flow that ended between the two steps, has no note, and the daily
pass asks invoicing for one. Invoicing decides (one note per refund, never beyond the invoice),
so asking again is safe. A refund whose credit invoicing refused is support's and is not asked
about again: its flow told them (`invoice_not_credited_support`), or an earlier pass flagged it
(`refund_not_credited`)."""

from __future__ import annotations

from collections.abc import Collection

from domain.billing.order import Order
from domain.invoicing.invoice import Invoice
from domain.notifications.notification import team_notification_id
from domain.reconciliation.commands import discrepancy_id
from domain.reconciliation.discrepancy import DiscrepancyKind
from domain.reconciliation.queries import RefundToCredit

# The kind of message a refund's flow sends support when invoicing refuses its credit note
# (workflows/refund.py): the record that support has it in hand.
INVOICE_NOT_CREDITED_NOTICE = "invoice_not_credited_support"
# What the daily pass flags when invoicing refuses the note it asked for.
FLAGGED = DiscrepancyKind.REFUND_NOT_CREDITED
# Refunds asked about in one pass: the first pass after credit notes came may find every refund
# ever paid out, and each is a step in the run's history. The rest are asked about the next day.
CREDITS_PER_PASS = 1000


def left_to_support_by(refund_id: str) -> tuple[str, str]:
    """The record that says support has a refund's missing credit note in hand: its flow's
    message to support (a notification id), or an earlier pass's flag (a discrepancy id)."""
    return team_notification_id("support", INVOICE_NOT_CREDITED_NOTICE, refund_id), discrepancy_id(FLAGGED, refund_id)


def refunds_to_credit(order: Order, invoice: Invoice | None, left_to_support: Collection[str]) -> list[RefundToCredit]:
    """`order`'s refunds paid out (for billing's amount) with no credit note on `invoice`,
    leaving out those in `left_to_support` (refund ids flagged `refund_not_credited`)."""
    credited = invoice.credited_refunds if invoice is not None else frozenset()
    return [
        RefundToCredit(order_id=order.id, refund_id=refund.refund_id, amount=refund.amount)
        for refund in order.refunds_paid_out
        if refund.amount is not None and refund.refund_id not in credited and refund.refund_id not in left_to_support
    ]
