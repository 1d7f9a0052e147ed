"""The same command delivered twice: what an at-least-once queue does on a bad day.

The chaos driver hands a command the workflows already send (same command id, same
content; only `issued_at` is the moment of the second delivery) straight to its owner's
activity handler, as a second copy of the message would arrive. RequestRefund is
redelivered while its workflow is delivering it too (the two race); SendRefundToGateway
and the customer's NotifyCustomer after the refund completed. The owner must answer
each copy with the outcome of the first: the same events, no new decision, no second
gateway call, no second message. `check` compares each answer with the outcome stored
for the command and with the outbox; the ledger, mailbox and outbox checks of the run
see any second effect.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

from activities.billing import BillingActivities
from activities.notifications import NotificationsActivities
from activities.payments import PaymentsActivities
from adapters.inspection import outbox_rows
from domain.billing.commands import RequestRefund
from domain.contracts import Outcome
from domain.notifications.commands import NotifyCustomer
from domain.payments.commands import SendRefundToGateway
from domain.shared.actor import Actor
from domain.shared.money import Money


class Redelivery:
    def __init__(self, deps: Any) -> None:
        self.uow_factory = deps.uow_factory
        self.billing = BillingActivities(deps.uow_factory)
        self.payments = PaymentsActivities(deps.uow_factory, deps.gateway)
        self.notifications = NotificationsActivities(deps.uow_factory, deps.mailbox)
        self.answers: dict[str, list[str]] = {}  # command id -> event ids the second copy got back
        self.refused: list[str] = []  # a copy the owner refused (it must not: the first was accepted)
        self._lock = threading.Lock()

    def request_refund(self, workflow_id: str, refund_id: str, order_id: str, amount: Money | None,
                       reason: str, customer: Actor, token: str | None) -> None:
        # The same command as the workflow's, signed token and all (the owner verifies it).
        self._deliver(self.billing.request_refund, RequestRefund(
            command_id=f"{workflow_id}/request", actor=customer, credential=token, issued_at=now(),
            correlation_id=workflow_id,
            order_id=order_id, refund_id=refund_id, amount=amount, reason=reason,
        ))

    def completed_refund(self, workflow_id: str, refund_id: str, order_id: str, amount: Money,
                         customer_id: str) -> None:
        system = Actor.system("refund")
        self._deliver(self.payments.send_refund_to_gateway, SendRefundToGateway(
            command_id=f"{workflow_id}/send-to-gateway", actor=system, issued_at=now(), correlation_id=workflow_id,
            order_id=order_id, refund_id=refund_id, amount=amount,
        ))
        self._deliver(self.notifications.notify_customer, NotifyCustomer(
            command_id=f"{workflow_id}/notify-refund_completed", actor=system, issued_at=now(),
            correlation_id=workflow_id, customer_id=customer_id, kind="refund_completed", subject=refund_id,
            facts={"refund_id": refund_id, "order_id": order_id, "amount": str(amount)},
        ))

    def _deliver(self, handler, command) -> None:
        try:
            outcome: Outcome = handler(command)
        except Exception as refused:  # noqa: BLE001 - recorded, reported as a violation
            with self._lock:
                self.refused.append(f"{command.command_id}: {type(refused).__name__}: {refused}")
            return
        with self._lock:
            self.answers[command.command_id] = sorted(e.event_id for e in outcome.events)

    def check(self, engine: Any) -> list[str]:
        """A copy's answer must be the outcome stored for its command (what the first copy
        was answered), and every event in it must be in the outbox."""
        caused: dict[str, set[str]] = defaultdict(set)
        for row in outbox_rows(engine):
            caused[row["causation_id"]].add(row["event_id"])
        bad = list(self.refused)
        for command_id, events in self.answers.items():
            with self.uow_factory() as uow:
                stored = uow.processed_result(command_id)
            first = sorted(e.event_id for e in Outcome.model_validate(stored).events) if stored else None
            if events != first:
                bad.append(f"{command_id}: the second copy got {events}, the first {first}")
            elif not set(events) <= caused[command_id]:
                bad.append(f"{command_id}: answered with events not in the outbox: {set(events) - caused[command_id]}")
        return bad


def now() -> datetime:
    return datetime.now(timezone.utc)
