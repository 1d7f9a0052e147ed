"""The public contracts: stable, consumer-safe data only.

Each contract is one version of one integration event. It carries ids, amounts
as a decimal string with an ISO currency, reason codes and timestamps -- never
card tokens, message texts, reviewers' notes or any other internal data.

A published version never changes in a way an existing consumer would notice:
fields may be added (optional), never removed, renamed, retyped or made
required. A breaking change is a new class with `version = 2`, published
alongside version 1 (see translation.py). tests/unit/test_integration_contracts.py
compares every class with its committed schema in schemas/.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class Contract(BaseModel):
    """One version of one public event. `owner` and `event` make its subject and type."""

    # Consumers read tolerantly (a field added later is ignored, not an error).
    model_config = ConfigDict(frozen=True, extra="ignore")

    owner: ClassVar[str]  # billing, payments, fraud, shipping, invoicing
    event: ClassVar[str]  # snake_case name, e.g. refund_approved
    version: ClassVar[int] = 1

    @classmethod
    def subject(cls) -> str:
        """The NATS subject: `settleflow.<owner>.<event>` (every version on the same subject)."""
        return f"settleflow.{cls.owner}.{cls.event}"

    @classmethod
    def type_name(cls) -> str:
        """The CloudEvents `type`: `settleflow.<owner>.<event>.v<N>`."""
        return f"{cls.subject()}.v{cls.version}"

    @classmethod
    def schema_file(cls) -> str:
        return f"{cls.type_name()}.json"


Amount = Field(pattern=r"^-?\d+(\.\d+)?$", description="decimal string, e.g. '12.30'")
Currency = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")


# -- billing -------------------------------------------------------------------------------------------------
class OrderPlacedV1(Contract):
    owner: ClassVar[str] = "billing"
    event: ClassVar[str] = "order_placed"
    order_id: str
    customer_id: str
    amount: str = Amount
    currency: str = Currency


class OrderPaidV1(Contract):
    owner: ClassVar[str] = "billing"
    event: ClassVar[str] = "order_paid"
    order_id: str
    amount: str = Amount
    currency: str = Currency


class OrderCancelledV1(Contract):
    owner: ClassVar[str] = "billing"
    event: ClassVar[str] = "order_cancelled"
    order_id: str
    customer_id: str
    reason: str  # a code: settleflow's own (payment_failed) or requested_by_customer / _support -- never their words
    cancelled_by_role: str  # customer, support or system -- never the person's id


class RefundApprovedV1(Contract):
    owner: ClassVar[str] = "billing"
    event: ClassVar[str] = "refund_approved"
    refund_id: str
    order_id: str
    customer_id: str
    amount: str = Amount
    currency: str = Currency


class RefundRejectedV1(Contract):
    owner: ClassVar[str] = "billing"
    event: ClassVar[str] = "refund_rejected"
    refund_id: str
    order_id: str
    customer_id: str
    reason_code: str


class RefundCompletedV1(Contract):
    owner: ClassVar[str] = "billing"
    event: ClassVar[str] = "refund_completed"
    refund_id: str
    order_id: str
    customer_id: str
    amount: str = Amount
    currency: str = Currency


class RefundFailedV1(Contract):
    owner: ClassVar[str] = "billing"
    event: ClassVar[str] = "refund_failed"
    refund_id: str
    order_id: str
    customer_id: str
    amount: str = Amount
    currency: str = Currency
    reason: str


class RefundCancelledV1(Contract):
    owner: ClassVar[str] = "billing"
    event: ClassVar[str] = "refund_cancelled"
    refund_id: str
    order_id: str
    customer_id: str
    amount: str = Amount
    currency: str = Currency
    reason: str


# -- payments ------------------------------------------------------------------------------------------------
class PaymentCapturedV1(Contract):
    owner: ClassVar[str] = "payments"
    event: ClassVar[str] = "payment_captured"
    order_id: str
    customer_id: str
    attempt_id: str
    amount: str = Amount
    currency: str = Currency


class PaymentDeclinedV1(Contract):
    owner: ClassVar[str] = "payments"
    event: ClassVar[str] = "payment_declined"
    order_id: str
    customer_id: str
    attempt_id: str
    amount: str = Amount
    currency: str = Currency
    decline_code: str


class PaymentAbandonedV1(Contract):
    owner: ClassVar[str] = "payments"
    event: ClassVar[str] = "payment_abandoned"
    order_id: str
    customer_id: str
    reason_code: str  # "hard_decline:<code>" or "attempts_exhausted"
    attempts: int


class GatewayRefundSettledV1(Contract):
    owner: ClassVar[str] = "payments"
    event: ClassVar[str] = "gateway_refund_settled"
    refund_id: str
    order_id: str
    amount: str = Amount
    currency: str = Currency


class GatewayRefundDeclinedV1(Contract):
    owner: ClassVar[str] = "payments"
    event: ClassVar[str] = "gateway_refund_declined"
    refund_id: str
    order_id: str
    amount: str = Amount
    currency: str = Currency
    decline_code: str


# -- fraud ---------------------------------------------------------------------------------------------------
class FraudReviewOpenedV1(Contract):
    owner: ClassVar[str] = "fraud"
    event: ClassVar[str] = "fraud_review_opened"
    refund_id: str
    order_id: str
    customer_id: str
    amount: str = Amount
    currency: str = Currency
    reason_codes: list[str]


class FraudReviewDecidedV1(Contract):
    """A review's outcome, from a person or from expiry (reviewer and note stay inside)."""

    owner: ClassVar[str] = "fraud"
    event: ClassVar[str] = "fraud_review_decided"
    refund_id: str
    decision: Literal["approved", "rejected"]
    reason_code: str  # "approved_by_analyst", "rejected_by_analyst" or "review_expired"


# -- invoicing -----------------------------------------------------------------------------------------------
class InvoiceCreatedV1(Contract):
    owner: ClassVar[str] = "invoicing"
    event: ClassVar[str] = "invoice_created"
    invoice_number: str
    order_id: str
    customer_id: str
    amount: str = Amount
    currency: str = Currency


class InvoiceCreditedV1(Contract):
    """A credit note against an order's invoice, for a refund paid out."""

    owner: ClassVar[str] = "invoicing"
    event: ClassVar[str] = "invoice_credited"
    credit_note_number: str
    invoice_number: str
    order_id: str
    customer_id: str
    refund_id: str
    amount: str = Amount
    currency: str = Currency


# -- shipping ------------------------------------------------------------------------------------------------
class OrderShippedV1(Contract):
    owner: ClassVar[str] = "shipping"
    event: ClassVar[str] = "order_shipped"
    order_id: str
    tracking: str
    shipped_at: datetime


class OrderDeliveredV1(Contract):
    owner: ClassVar[str] = "shipping"
    event: ClassVar[str] = "order_delivered"
    order_id: str
    delivered_at: datetime


class ShipmentInterceptedV1(Contract):
    owner: ClassVar[str] = "shipping"
    event: ClassVar[str] = "shipment_intercepted"
    order_id: str
    refund_id: str
    tracking: str


class ShipmentInterceptFailedV1(Contract):
    owner: ClassVar[str] = "shipping"
    event: ClassVar[str] = "shipment_intercept_failed"
    order_id: str
    refund_id: str
    reason: str


class ParcelReturnedV1(Contract):
    """A parcel stopped on a refund's request is on its way back to the shop."""

    owner: ClassVar[str] = "billing"
    event: ClassVar[str] = "parcel_returned"
    order_id: str
    refund_id: str
    returned_at: datetime


class GatewayRefundOutcomeUnknownV1(Contract):
    """Nobody knows yet whether the gateway paid this refund: its money stays reserved
    until reconciliation learns the answer (gateway_refund_settled or refund_failed follows)."""

    owner: ClassVar[str] = "payments"
    event: ClassVar[str] = "gateway_refund_outcome_unknown"
    refund_id: str
    order_id: str
    amount: str = Amount
    currency: str = Currency


class CaptureOutcomeUnknownV1(Contract):
    """Nobody knows yet whether this capture attempt charged the card (payment_captured or
    payment_declined follows once reconciliation knows)."""

    owner: ClassVar[str] = "payments"
    event: ClassVar[str] = "capture_outcome_unknown"
    order_id: str
    attempt_id: str
    amount: str = Amount
    currency: str = Currency


class DiscrepancyRecordedV1(Contract):
    """Reconciliation found settleflow and the gateway disagreeing; support looks at it."""

    owner: ClassVar[str] = "reconciliation"
    event: ClassVar[str] = "discrepancy_recorded"
    discrepancy_id: str
    kind: str  # e.g. missing_at_gateway, amount_differs, flow_gone
    order_id: str
    business_id: str


class DiscrepancyResolvedV1(Contract):
    owner: ClassVar[str] = "reconciliation"
    event: ClassVar[str] = "discrepancy_resolved"
    discrepancy_id: str
    resolved_by_role: str


CONTRACTS: tuple[type[Contract], ...] = (
    OrderPlacedV1, OrderPaidV1, OrderCancelledV1,
    RefundApprovedV1, RefundRejectedV1, RefundCompletedV1, RefundFailedV1, RefundCancelledV1,
    PaymentCapturedV1, PaymentDeclinedV1, PaymentAbandonedV1, GatewayRefundSettledV1, GatewayRefundDeclinedV1,
    FraudReviewOpenedV1, FraudReviewDecidedV1,
    InvoiceCreatedV1, InvoiceCreditedV1,
    OrderShippedV1, OrderDeliveredV1, ShipmentInterceptedV1, ShipmentInterceptFailedV1,
    ParcelReturnedV1,
    GatewayRefundOutcomeUnknownV1, CaptureOutcomeUnknownV1, DiscrepancyRecordedV1, DiscrepancyResolvedV1,
)  # fmt: skip

BY_TYPE: dict[str, type[Contract]] = {c.type_name(): c for c in CONTRACTS}
