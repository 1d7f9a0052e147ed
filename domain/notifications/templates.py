"""What each kind of message says. Facts are filled in; unknown kinds are refused."""

from __future__ import annotations

from domain.shared.errors import InvalidCommand

TEMPLATES: dict[str, tuple[str, str]] = {
    # refunds, to the customer
    "refund_rejected": ("Your refund request", "We could not accept refund {refund_id} for order {order_id}: {detail}"),
    "refund_completed": ("Your refund is on its way", "We refunded {amount} for order {order_id} (refund {refund_id})."),
    "refund_cancelled": ("Your refund request", "Refund {refund_id} for order {order_id} was not approved after review."),
    "refund_failed": (
        "We could not pay your refund",
        "Refund {refund_id} of {amount} for order {order_id} could not be paid out; our support team will contact you.",
    ),
    # refunds, to teams
    "fraud_review_reminder": (
        "Fraud review waiting",
        "The review of refund {refund_id} ({amount}, order {order_id}) has waited 24 hours.",
    ),
    "refund_failed_support": (
        "Refund needs attention",
        "Refund {refund_id} of {amount} for order {order_id} failed: {reason}.",
    ),
    "cancelled_order_delivered_support": (
        "A cancelled order was delivered",
        "Order {order_id} was cancelled, but its parcel reached the customer ({delivered_at}): its delivery "
        "became known only after the cancellation, or it could not be stopped in time. The customer has the "
        "goods, and the order's money is owed or went back. Decide whether to ask for the goods back.",
    ),
    "returned_parcel_delivered_support": (
        "A stopped parcel was delivered",
        "The parcel of order {order_id} was stopped for a refund of all of its money ({returned_at}), but it "
        "reached the customer all the same ({delivered_at}): the carrier's scan of it came late, the stop did "
        "not take, or it was carried out after the parcel had arrived. The customer has the goods and the "
        "refund. Decide whether to ask for the goods back.",
    ),
    "delivery_without_shipment_support": (
        "A delivery still has no shipment",
        "A delivery of order {order_id} (delivered at {delivered_at}) reached settleflow on {confirmed_at}, and no "
        "shipment of the order has been recorded in the {waited_days} days since. The delivery is kept and waits "
        "for it: record the shipment (starter.py ship --order-id {order_id} --at <when it left>), and the delivery "
        "is recorded with it. Until then billing counts the order as not delivered.",
    ),
    "cancelled_order_not_stopped_support": (
        "A cancelled order's parcel was not stopped",
        "Order {order_id} was cancelled and its money is going back (refund {refund_id}), but its parcel "
        "{tracking} left and was not stopped: a delivery of it was already being confirmed (it reached "
        "settleflow before the shipment). Check whether the customer has the goods.",
    ),
    "invoice_not_credited_support": (
        "A refund has no credit note",
        "Refund {refund_id} of {amount} for order {order_id} was paid out, but invoicing issued no credit note "
        "against the order's invoice: {reason}. Issue one by hand for accounting.",
    ),
    "refund_owed_support": (
        "Money owed to a customer",
        "Order {order_id} was cancelled after it was paid, or its parcel came back, and {owed} is still owed to the customer "
        "(refund {refund_id} ended {reason}). Decide how to pay it back.",
    ),
    # reconciliation, to support
    "discrepancy_found": (
        "Reconciliation found a discrepancy",
        "{kind} on {business_id} (order {order_id}): {detail} Resolve it with "
        "`starter.py resolve-discrepancy {discrepancy_id} --note ...` once it is dealt with.",
    ),
    # payments
    "payment_received": ("Payment received", "We received {amount} for order {order_id}. Invoice {invoice_number}."),
    "payment_declined": (
        "Your payment did not go through",
        "Your card was declined ({reason}) for order {order_id}. You can give us another card at any time.",
    ),
    "payment_abandoned": (
        "Your order was cancelled",
        "We could not take the payment for order {order_id} ({reason}), so the order is cancelled.",
    ),
    "order_cancelled": ("Your order was cancelled", "Order {order_id} is cancelled: {reason}."),
}


def render(kind: str, facts: dict[str, str]) -> tuple[str, str]:
    if kind not in TEMPLATES:
        raise InvalidCommand("unknown_message_kind", f"no message of kind {kind!r}")
    title, body = TEMPLATES[kind]
    try:
        return title, body.format(**facts)
    except KeyError as missing:
        raise InvalidCommand("missing_fact", f"message {kind!r} needs the fact {missing}") from None
