"""Domain event → public contract: the one table that says what leaves settleflow.

Every domain event type appears exactly once: either with the contract(s) it
becomes, or as NOT_PUBLISHED with the reason it stays inside. A type missing from
the table cannot be published: the relay parks its outbox rows with a reason
(tests/unit/test_integration_contracts.py checks that every domain event is listed).

The input is an outbox row as stored (payload with money in minor units); the
output is the envelopes to publish, each with its NATS subject.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain import contracts as domain
from domain.shared.messages import Event
from domain.shared.money import Money
from integration import contracts as public
from integration.envelope import CloudEvent


class Unpublishable(Exception):
    """An outbox row that can never be published as it is (the relay parks it)."""


@dataclass(frozen=True)
class NotPublished:
    reason: str


Translate = Callable[[Any], public.Contract]


def _money(money: Money) -> dict[str, str]:
    return {"amount": str(money.amount), "currency": money.currency}


def _role(actor: str) -> str:
    return actor.split(":", 1)[0]


def _cancellation_reason(e: domain.OrderCancelled) -> str:
    """A reason code: settleflow's own (`payment_failed`) as it is; a person's words (a
    customer's or support's text, which may hold anything) never leave, only who asked."""
    role = _role(e.cancelled_by)
    return e.reason if role == "system" else f"requested_by_{role}"


# domain event type -> ((contract, translate), ...) or NotPublished(reason)
TABLE: dict[type[Event], tuple[tuple[type[public.Contract], Translate], ...] | NotPublished] = {
    # billing
    domain.OrderPlaced: ((public.OrderPlacedV1, lambda e: public.OrderPlacedV1(
        order_id=e.order_id, customer_id=e.customer_id, **_money(e.total))),),
    domain.OrderPaid: ((public.OrderPaidV1, lambda e: public.OrderPaidV1(order_id=e.order_id, **_money(e.amount))),),
    domain.OrderCancelled: ((public.OrderCancelledV1, lambda e: public.OrderCancelledV1(
        order_id=e.order_id, customer_id=e.customer_id, reason=_cancellation_reason(e),
        cancelled_by_role=_role(e.cancelled_by))),),
    domain.RefundApproved: ((public.RefundApprovedV1, lambda e: public.RefundApprovedV1(
        refund_id=e.refund_id, order_id=e.order_id, customer_id=e.customer_id, **_money(e.amount))),),
    domain.RefundRejected: ((public.RefundRejectedV1, lambda e: public.RefundRejectedV1(
        refund_id=e.refund_id, order_id=e.order_id, customer_id=e.customer_id, reason_code=e.reason_code)),),
    domain.RefundCompleted: ((public.RefundCompletedV1, lambda e: public.RefundCompletedV1(
        refund_id=e.refund_id, order_id=e.order_id, customer_id=e.customer_id, **_money(e.amount))),),
    domain.RefundFailed: ((public.RefundFailedV1, lambda e: public.RefundFailedV1(
        refund_id=e.refund_id, order_id=e.order_id, customer_id=e.customer_id, reason=e.reason,
        **_money(e.amount))),),
    domain.RefundCancelled: ((public.RefundCancelledV1, lambda e: public.RefundCancelledV1(
        refund_id=e.refund_id, order_id=e.order_id, customer_id=e.customer_id, reason=e.reason,
        **_money(e.amount))),),
    domain.ShipmentRecorded: NotPublished("billing's copy of shipping's fact: shipping publishes order_shipped"),
    domain.DeliveryRecorded: NotPublished("billing's copy of shipping's fact: shipping publishes order_delivered"),
    domain.ShipmentInterceptRequested: NotPublished("a request between owners; shipment_intercepted is the fact"),
    domain.ParcelReturned: ((public.ParcelReturnedV1, lambda e: public.ParcelReturnedV1(
        order_id=e.order_id, refund_id=e.refund_id, returned_at=e.returned_at)),),
    domain.ParcelStillInTransit: NotPublished("billing's note of shipping's answer: shipment_intercept_failed is the fact"),
    domain.DeliveryHeld: NotPublished("billing keeps an early delivery until its shipment; order_delivered is the fact"),
    domain.CancelledOrderDelivered: NotPublished("a question for support, told by the delivery flow; order_delivered is the fact"),
    domain.ReturnedParcelDelivered: NotPublished("a question for support, told by the flow that learns it; order_delivered is the fact"),
    domain.OrderClearedForShipping: NotPublished("billing's answer to the warehouse's flow; order_shipped is the fact"),
    domain.ShippingRefused: NotPublished("the answer to the warehouse's own request, shown in its workflow"),
    domain.RefundOwed: NotPublished("internal trigger of the cancellation's refund; refund_approved follows"),
    # payments
    domain.PaymentCaptured: ((public.PaymentCapturedV1, lambda e: public.PaymentCapturedV1(
        order_id=e.order_id, customer_id=e.customer_id, attempt_id=e.attempt_id, **_money(e.amount))),),
    domain.PaymentDeclined: ((public.PaymentDeclinedV1, lambda e: public.PaymentDeclinedV1(
        order_id=e.order_id, customer_id=e.customer_id, attempt_id=e.attempt_id, decline_code=e.decline_code,
        **_money(e.amount))),),
    domain.PaymentAbandoned: ((public.PaymentAbandonedV1, lambda e: public.PaymentAbandonedV1(
        order_id=e.order_id, customer_id=e.customer_id, reason_code=e.reason, attempts=e.attempts)),),
    domain.GatewayRefundSettled: ((public.GatewayRefundSettledV1, lambda e: public.GatewayRefundSettledV1(
        refund_id=e.refund_id, order_id=e.order_id, **_money(e.amount))),),
    domain.GatewayRefundDeclined: ((public.GatewayRefundDeclinedV1, lambda e: public.GatewayRefundDeclinedV1(
        refund_id=e.refund_id, order_id=e.order_id, decline_code=e.decline_code, **_money(e.amount))),),
    domain.GatewayRefundOutcomeUnknown: ((public.GatewayRefundOutcomeUnknownV1,
        lambda e: public.GatewayRefundOutcomeUnknownV1(refund_id=e.refund_id, order_id=e.order_id, **_money(e.amount))),),
    domain.CaptureOutcomeUnknown: ((public.CaptureOutcomeUnknownV1, lambda e: public.CaptureOutcomeUnknownV1(
        order_id=e.order_id, attempt_id=e.attempt_id, **_money(e.amount))),),
    domain.GatewayRefundNotFound: NotPublished("reconciliation's finding: refund_failed is the fact"),
    domain.GatewayRefundNotSent: NotPublished("payments never asked the gateway: refund_failed is the fact"),
    domain.CaptureAttempted: NotPublished("an attempt in progress; payment_captured or payment_declined is the fact"),
    domain.GatewayRefundRequested: NotPublished("a request in progress; gateway_refund_settled or _declined follows"),
    domain.PaymentMethodUpdated: NotPublished("carries a card token"),
    # fraud
    domain.FraudReviewOpened: ((public.FraudReviewOpenedV1, lambda e: public.FraudReviewOpenedV1(
        refund_id=e.refund_id, order_id=e.order_id, customer_id=e.customer_id, reason_codes=list(e.reasons),
        **_money(e.amount))),),
    domain.ReviewApproved: ((public.FraudReviewDecidedV1, lambda e: public.FraudReviewDecidedV1(
        refund_id=e.refund_id, decision="approved", reason_code="approved_by_analyst")),),
    domain.ReviewRejected: ((public.FraudReviewDecidedV1, lambda e: public.FraudReviewDecidedV1(
        refund_id=e.refund_id, decision="rejected", reason_code=e.reason)),),
    domain.RefundWithdrawn: NotPublished("fraud's bookkeeping: refund_cancelled or refund_failed is the fact"),
    domain.RefundCleared: NotPublished("screening found nothing: an internal step of the refund flow"),
    # invoicing
    domain.InvoiceCreated: ((public.InvoiceCreatedV1, lambda e: public.InvoiceCreatedV1(
        invoice_number=e.invoice_number, order_id=e.order_id, customer_id=e.customer_id, **_money(e.total))),),
    domain.InvoiceCredited: ((public.InvoiceCreditedV1, lambda e: public.InvoiceCreditedV1(
        credit_note_number=e.credit_note_number, invoice_number=e.invoice_number, order_id=e.order_id,
        customer_id=e.customer_id, refund_id=e.refund_id, **_money(e.amount))),),
    # shipping
    domain.OrderShipped: ((public.OrderShippedV1, lambda e: public.OrderShippedV1(
        order_id=e.order_id, tracking=e.tracking, shipped_at=e.shipped_at)),),
    domain.OrderDelivered: ((public.OrderDeliveredV1, lambda e: public.OrderDeliveredV1(
        order_id=e.order_id, delivered_at=e.delivered_at)),),
    domain.ShipmentIntercepted: ((public.ShipmentInterceptedV1, lambda e: public.ShipmentInterceptedV1(
        order_id=e.order_id, refund_id=e.refund_id, tracking=e.tracking)),),
    domain.ShipmentInterceptFailed: ((public.ShipmentInterceptFailedV1, lambda e: public.ShipmentInterceptFailedV1(
        order_id=e.order_id, refund_id=e.refund_id, reason=e.reason)),),
    # reconciliation
    domain.DiscrepancyRecorded: ((public.DiscrepancyRecordedV1, lambda e: public.DiscrepancyRecordedV1(
        discrepancy_id=e.discrepancy_id, kind=e.kind, order_id=e.order_id, business_id=e.business_id)),),
    domain.DiscrepancyResolved: ((public.DiscrepancyResolvedV1, lambda e: public.DiscrepancyResolvedV1(
        discrepancy_id=e.discrepancy_id, resolved_by_role=_role(e.resolved_by))),),
    # notifications
    domain.MessageSent: NotPublished("a message's text and recipient are personal data"),
}  # fmt: skip

BY_NAME = {event_type.__name__: entry for event_type, entry in TABLE.items()}
EVENT_CLASSES = {event_type.__name__: event_type for event_type in TABLE}


def _translation_code() -> str:
    """The code that turns a row into its messages: this module (the table's translations) and
    the public contracts (their fields and checks). A fix of either is a new table: rows the old
    code parked (a translation that raised, a contract that refused a value) are tried again."""
    import inspect

    return "\n".join(inspect.getsource(module) for module in (sys.modules[__name__], public))


def table_version(table: Mapping[type[Event], Any]) -> str:
    """Which table this is: what it publishes each event type as, the fields it reads each
    type's payload with, and the code that translates them. A row parked under another table
    (another relay's, in a rolling deploy: a new type, or a field added, renamed or dropped; or
    the same relay's before a fix) is tried again by this one (relay.py)."""
    def fields(event_type: type[Event]) -> str:
        return ",".join(f"{name}:{field.annotation}" for name, field in sorted(event_type.model_fields.items()))

    return hashlib.sha256(
        _translation_code().encode() + b"\n" + "\n".join(
            f"{event_type.__name__}:"
            f"{'-' if isinstance(entry, NotPublished) else ','.join(c.type_name() for c, _ in entry)}:"
            f"{fields(event_type)}"
            for event_type, entry in sorted(table.items(), key=lambda item: item[0].__name__)
        ).encode()
    ).hexdigest()[:12]


TABLE_VERSION = table_version(TABLE)


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: its subject, its dedupe id and its envelope."""

    subject: str
    envelope: CloudEvent

    @property
    def message_id(self) -> str:
        return self.envelope.id


def message_id(event_id: str, version: int) -> str:
    """Version 1 keeps the event id; a later version published alongside it gets its own id,
    or the broker's dedupe would drop it as a copy of version 1."""
    return event_id if version == 1 else f"{event_id}.v{version}"


def translate(row: Mapping[str, Any]) -> list[Outgoing]:
    """The messages an outbox row becomes: none for a NOT_PUBLISHED type.
    Raises Unpublishable for a type this table does not know or a payload that does not fit."""
    name = row["event_type"]
    entry = BY_NAME.get(name)
    if entry is None:
        raise Unpublishable(f"unknown event type {name!r}: not in integration/translation.py TABLE")
    if isinstance(entry, NotPublished):
        return []
    event_type = EVENT_CLASSES[name]
    # A field this table does not know (a newer worker's, in a rolling deploy) is none of what it
    # publishes: it is left aside, not a reason to hold the aggregate. A field it needs and does
    # not find parks the row, for a relay whose table reads it (its table version differs).
    payload = {key: value for key, value in row["payload"].items() if key in event_type.model_fields}
    try:
        event = event_type.model_validate(payload)
    except ValueError as error:
        raise Unpublishable(f"payload does not fit {name}: {error}".splitlines()[0]) from error
    when: datetime = row["occurred_at"] or row["recorded_at"]
    outgoing = []
    for contract, make in entry:
        try:
            data = make(event)
        except ValueError as error:  # a value the contract refuses: this row is parked, the relay goes on
            raise Unpublishable(f"{name} does not fit {contract.type_name()}: {error}".splitlines()[0]) from error
        outgoing.append(
            Outgoing(
                subject=contract.subject(),
                envelope=CloudEvent(
                    id=message_id(row["event_id"], contract.version),
                    source=f"settleflow/{contract.owner}",
                    type=contract.type_name(),
                    subject=row["aggregate_id"],
                    time=when,
                    correlationid=row["correlation_id"],
                    causationid=row["causation_id"],
                    aggregatetype=row["aggregate_type"],
                    aggregateversion=row["aggregate_version"],
                    data=data.model_dump(mode="json"),
                ),
            )
        )
    return outgoing
