"""Which of payments' recorded facts answer a flow that waits for the gateway's answer.

A flow whose capture or refund answer was lost waits for reconciliation, which tells it
(the signal `gateway_answer`) which of payments' commands found the answer. Anyone who may
signal a workflow could send that signal, with any facts in it. So a waiting flow takes no
fact from the signal: it asks payments for the outcome that command really recorded, and
takes it only when those facts answer its own question — a settlement, decline or
confirmed absence of *this* refund, a capture or decline of *this* attempt.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from domain.payments.events import (
    GatewayRefundDeclined,
    GatewayRefundNotFound,
    GatewayRefundNotSent,
    GatewayRefundSettled,
    PaymentCaptured,
    PaymentDeclined,
)
from domain.shared.messages import Event

# Facts that end a refund's or a capture's unknown state: money moved, or confirmed not.
REFUND_ANSWERS = (GatewayRefundSettled, GatewayRefundDeclined, GatewayRefundNotFound, GatewayRefundNotSent)
CAPTURE_ANSWERS = (PaymentCaptured, PaymentDeclined)


class GatewayQuestion(BaseModel):
    """What a waiting flow asks payments: did `command_id` record the answer to my refund
    (`business_id` = the refund id) or my capture attempt (`business_id` = the attempt id)?"""

    model_config = ConfigDict(frozen=True)
    activity_name: ClassVar[str] = "payments.RecordedAnswer"  # a read of payments' inbox

    kind: Literal["capture", "refund"]
    order_id: str
    business_id: str
    command_id: str  # the command reconciliation says found the answer

    def is_answered_by(self, events: list[Event]) -> bool:
        """Whether these facts (one command's recorded outcome) answer this question."""
        if self.kind == "refund":
            return any(
                isinstance(e, REFUND_ANSWERS) and e.order_id == self.order_id and e.refund_id == self.business_id
                for e in events
            )
        return any(
            isinstance(e, CAPTURE_ANSWERS) and e.order_id == self.order_id and e.attempt_id == self.business_id
            for e in events
        )


class FoundByReconciliation(BaseModel):
    """Payments' answer to a flow that asks it to send a refund or capture attempt whose answer
    reconciliation has already found (the flow was gone meanwhile, and is resumed): not a second
    request, but the command whose recorded outcome is the answer."""

    model_config = ConfigDict(frozen=True)

    command_id: str
