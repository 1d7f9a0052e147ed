"""Which activities each task queue serves. One task queue per owner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from activities.billing import BillingActivities
from activities.fraud import FraudActivities
from activities.invoicing import InvoicingActivities
from activities.notifications import NotificationsActivities
from activities.payments import PaymentsActivities
from activities.ports import Mailbox, PaymentGateway
from activities.reconciliation import ReconciliationActivities
from activities.shipping import ShippingActivities

OWNER_QUEUES = ("billing", "payments", "fraud", "shipping", "invoicing", "notifications", "reconciliation")


def activities_for(
    queue: str, uow_factory: Callable[[], Any], gateway: PaymentGateway, mailbox: Mailbox, client: Any = None
) -> list[Callable[..., Any]]:
    owner: object = {
        "billing": lambda: BillingActivities(uow_factory),
        "payments": lambda: PaymentsActivities(uow_factory, gateway),
        "fraud": lambda: FraudActivities(uow_factory),
        "shipping": lambda: ShippingActivities(uow_factory),
        "invoicing": lambda: InvoicingActivities(uow_factory),
        "notifications": lambda: NotificationsActivities(uow_factory, mailbox),
        # The client: to ask Temporal whether a refund's flow still runs.
        "reconciliation": lambda: ReconciliationActivities(uow_factory, gateway, client),
    }[queue]()
    return [
        getattr(owner, name)
        for name in dir(type(owner))
        if hasattr(getattr(type(owner), name), "__temporal_activity_definition")
    ]
