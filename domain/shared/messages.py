"""Commands and events: the messages that cross every boundary.

A command asks one owner for one decision; an event is a fact the owner
recorded. Both are immutable pydantic models so that Temporal, the outbox and
the tests all see exactly the same shape.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domain.shared.actor import Actor, Role
from domain.shared.text import DERIVED_ID_MAX, ID_MAX, TEXT_MAX, DerivedId, Id, Note, Text, storable

__all__ = [
    "DERIVED_ID_MAX", "ID_MAX", "TEXT_MAX", "Command", "DerivedId", "Event", "Id", "Message", "Note", "Text",
]

# A command's ids that say how it travelled, not what it is about (`Command.fingerprint`).
NOT_WHAT_IT_CONCERNS = frozenset({"command_id", "correlation_id", "causation_id"})

EVENT_NAMESPACE = uuid.UUID("6f1d7a52-3f0e-4a55-9d2c-5e7a1c0b9a11")


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1

    @model_validator(mode="after")
    def _times_carry_a_zone(self) -> Message:
        # A time without a zone cannot be compared with one that has it; refuse it
        # at the door rather than crash an owner's decision later.
        for name, value in self.__dict__.items():  # the fields' values (a frozen model has no others)
            if isinstance(value, str):
                # Text is stored verbatim, but no database stores a NUL character (nor a lone
                # surrogate): every text field, typed or not, is held to `storable`.
                try:
                    storable(value)
                except ValueError as bad:
                    raise ValueError(f"{name} {bad}") from None
            elif isinstance(value, datetime) and value.tzinfo is None:
                raise ValueError(f"{name} must carry a time zone")
        return self


class Command(Message):
    """One request for one decision, with who asked and when."""

    owner: ClassVar[str]  # the owner (and task queue) that decides
    issued_by: ClassVar[frozenset[Role]]  # roles that may send it

    # Derived, `{workflow id}/{step}`: both halves may embed ids of up to ID_MAX characters.
    command_id: DerivedId
    actor: Actor
    issued_at: datetime  # decisions use this time, never the clock of the moment
    correlation_id: str = ""  # the business transaction: `order-{order_id}`, shared by all of an order's flows
    causation_id: str = ""  # what caused it: the event a process reacted to, or the request a person made
    # The signed token (JWT) of a person or script, passed on untouched by the workflow from
    # the request that carried it. The owner's activity verifies it against `actor` and drops
    # it before the owner decides: never stored, never shown (repr=False). A workflow's own
    # commands (actor `system`) carry none.
    credential: str | None = Field(default=None, repr=False)

    @field_validator("issued_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("issued_at must carry a time zone")
        return value

    @classmethod
    def name(cls) -> str:
        return cls.__name__

    def fingerprint(self) -> str:
        """What this command id stands for: the command and the ids of what it concerns
        (`order_id`, `refund_id`, ...). The same command sent again — a retry, a replay, a flow
        resumed or reset — has the same, though its `issued_at` or token differ; an id reused
        for another order or refund (a refund id given again after Temporal forgot the first
        flow) has another, and the inbox refuses it rather than answer with the first one's
        facts. Amounts and texts are left out (a resumed flow may word a reason anew), and so is
        the sender: a decision about the same thing taken again by someone else — a review
        decided once more after a reset lost the Update that decided it — gets the first answer."""
        concerns = {
            name: getattr(self, name)
            for name in type(self).model_fields
            if name.endswith("_id") and name not in NOT_WHAT_IT_CONCERNS
        }
        described = json.dumps([type(self).__name__, concerns], sort_keys=True, default=str)
        return hashlib.sha256(described.encode()).hexdigest()[:32]

    @classmethod
    def activity_name(cls) -> str:
        return f"{cls.owner}.{cls.__name__}"


class Event(Message):
    """A fact. Past tense, immutable; the trace fields say why it happened."""

    event_id: str = ""
    occurred_at: datetime | None = None
    correlation_id: str = ""
    causation_id: str = ""  # the command that caused it

    @classmethod
    def name(cls) -> str:
        return cls.__name__

    def caused_by(self, command: Command, key: str) -> Event:
        """Stamp the trace fields. Ids are derived from the command, so a
        command decided again after a lost race records the same event ids."""
        name = f"{command.command_id}#{key}#{type(self).__name__}"
        return self.model_copy(
            update={
                "event_id": str(uuid.uuid5(EVENT_NAMESPACE, name)),
                "occurred_at": command.issued_at,
                "correlation_id": command.correlation_id,
                "causation_id": command.command_id,
            }
        )
