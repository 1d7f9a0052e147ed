"""The message contracts every process sees: all commands, all events, and the
Outcome an owner returns. Workflows import this module and nothing else of the
domain, so they can react to event types without touching any owner's state."""

from __future__ import annotations

from typing import Annotated, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field

from domain.billing.commands import (  # noqa: F401  (re-exported contracts)
    CancelOrder,
    CancelRefund,
    ClearOrderForShipping,
    CompleteRefund,
    FailRefund,
    MarkOrderPaid,
    OrderLine,
    PlaceOrder,
    RecordDelivery,
    RecordInterceptOutcome,
    RecordShipment,
    RequestRefund,
)
from domain.billing.events import (
    CancelledOrderDelivered,
    DeliveryHeld,
    DeliveryRecorded,
    OrderCancelled,
    OrderClearedForShipping,
    OrderPaid,
    OrderPlaced,
    ParcelReturned,
    ParcelStillInTransit,
    RefundApproved,
    RefundCancelled,
    RefundCompleted,
    RefundFailed,
    RefundOwed,
    RefundRejected,
    ReturnedParcelDelivered,
    ShipmentInterceptRequested,
    ShipmentRecorded,
    ShippingRefused,
)
from domain.billing.fulfilment import RecordedFulfilment  # noqa: F401
from domain.fraud.commands import (  # noqa: F401
    ExpireFraudReview,
    ResolveFraudReview,
    ReviewDecision,
    ScreenRefund,
    WithdrawRefund,
)
from domain.fraud.events import FraudReviewOpened, RefundCleared, RefundWithdrawn, ReviewApproved, ReviewRejected
from domain.invoicing.commands import CreateInvoice, CreditInvoice  # noqa: F401
from domain.invoicing.events import InvoiceCreated, InvoiceCredited
from domain.notifications.commands import NotifyCustomer, NotifyTeam  # noqa: F401
from domain.notifications.events import MessageSent
from domain.payments.commands import (  # noqa: F401
    CapturePayment,
    MarkCaptureUnknown,
    MarkRefundUnknown,
    ReconcileCapture,
    ReconcileGatewayRefund,
    RetryPaymentCapture,
    SendRefundToGateway,
    UpdatePaymentMethod,
)
from domain.payments.answers import GatewayQuestion  # noqa: F401
from domain.payments.events import (
    CaptureAttempted,
    CaptureOutcomeUnknown,
    GatewayRefundDeclined,
    GatewayRefundNotFound,
    GatewayRefundNotSent,
    GatewayRefundOutcomeUnknown,
    GatewayRefundRequested,
    GatewayRefundSettled,
    PaymentAbandoned,
    PaymentCaptured,
    PaymentDeclined,
    PaymentMethodUpdated,
)
from domain.reconciliation.commands import RecordDiscrepancy, ResolveDiscrepancy  # noqa: F401
from domain.reconciliation.events import DiscrepancyRecorded, DiscrepancyResolved
from domain.reconciliation.queries import (  # noqa: F401
    OPEN_REQUESTS_PER_READ,
    MoneyOwed,
    OpenGatewayRequest,
    ReconciliationScan,
    RefundToCredit,
    SettlementDay,
    StrandedRefund,
    UnansweredParcelStop,
)
from domain.reconciliation.settlement import Finding  # noqa: F401
from domain.reconciliation.uncredited import INVOICE_NOT_CREDITED_NOTICE  # noqa: F401
from domain.shared.actor import Actor, Role  # noqa: F401
from domain.shared.errors import refusal_kinds
from domain.shared.messages import Command, Event  # noqa: F401
from domain.shared.money import Money  # noqa: F401
from domain.shipping.commands import ConfirmDelivery, InterceptShipment, ShipOrder  # noqa: F401
from domain.shipping.events import OrderDelivered, OrderShipped, ShipmentIntercepted, ShipmentInterceptFailed

EVENT_TYPES: tuple[type[Event], ...] = (
    OrderPlaced, OrderPaid, ShipmentRecorded, DeliveryRecorded, RefundApproved, RefundRejected,
    ShipmentInterceptRequested, RefundCancelled, RefundCompleted, RefundFailed, OrderCancelled, RefundOwed,
    DeliveryHeld, OrderClearedForShipping, ShippingRefused, ParcelReturned, ParcelStillInTransit,
    CancelledOrderDelivered, ReturnedParcelDelivered,
    CaptureAttempted, PaymentCaptured, PaymentDeclined, PaymentAbandoned, PaymentMethodUpdated,
    GatewayRefundRequested, GatewayRefundSettled, GatewayRefundDeclined,
    CaptureOutcomeUnknown, GatewayRefundOutcomeUnknown, GatewayRefundNotFound, GatewayRefundNotSent,
    DiscrepancyRecorded, DiscrepancyResolved,
    InvoiceCreated,
    InvoiceCredited,
    RefundCleared, FraudReviewOpened, ReviewApproved, ReviewRejected, RefundWithdrawn,
    OrderShipped, OrderDelivered, ShipmentIntercepted, ShipmentInterceptFailed,
    MessageSent,
)

AnyEvent = Annotated[Union[EVENT_TYPES], Field(discriminator="type")]  # noqa: UP007

E = TypeVar("E", bound=Event)


class Outcome(BaseModel):
    """What an owner decided for one command: the events it recorded (maybe none)."""

    model_config = ConfigDict(frozen=True)

    command_id: str
    events: list[AnyEvent] = []

    def first(self, event_type: type[E]) -> E | None:
        return next((e for e in self.events if isinstance(e, event_type)), None)

    def has(self, event_type: type[Event]) -> bool:
        return self.first(event_type) is not None

    @property
    def event_names(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


class UntoldAnswer(BaseModel):
    """A flow still waiting for reconciliation whose answer payments already holds: the signal
    that should have told it was lost (a pass cut short, a look-up that committed after its
    step gave up). `answer` is payments' record of the command that found it."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    answer: Outcome


# The failure types of an owner's outright refusals (every DomainError's kind): workflows
# never retry them.
REFUSALS: list[str] = refusal_kinds()
