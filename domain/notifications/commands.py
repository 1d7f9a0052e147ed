"""Commands the notifications owner decides: whether a message goes out (once)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from domain.shared.actor import Role
from domain.shared.messages import DERIVED_ID_MAX, Command, Id


class NotificationsCommand(Command):
    owner: ClassVar[str] = "notifications"
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    kind: str = Field(min_length=1, max_length=100)  # which message, e.g. "refund_completed"
    subject: str = Field(min_length=1, max_length=DERIVED_ID_MAX)  # what it is about, e.g. the refund id
    facts: dict[str, str] = {}  # what the message says (amounts already formatted)


class NotifyCustomer(NotificationsCommand):
    customer_id: Id


class NotifyTeam(NotificationsCommand):
    team: str = Field(min_length=1, max_length=100)  # "fraud", "support"
