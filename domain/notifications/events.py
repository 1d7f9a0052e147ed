"""Facts the notifications owner records."""

from __future__ import annotations

from typing import Literal

from domain.shared.messages import Event


class MessageSent(Event):
    type: Literal["MessageSent"] = "MessageSent"
    notification_id: str
    recipient: str  # "customer:c-1" or "team:fraud"
    kind: str
    subject: str
    title: str
    body: str
