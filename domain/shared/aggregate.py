"""Base for aggregates: the owners. They decide, change state and record events."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, PrivateAttr

from domain.shared.messages import Command, Event


class AggregateRoot(BaseModel):
    model_config = ConfigDict(validate_assignment=False, extra="forbid")

    id: str
    version: int = 0  # persisted version; the repository checks it on save

    _pending: list[Event] = PrivateAttr(default_factory=list)

    def record(self, command: Command, *events: Event) -> None:
        """Record the facts a command produced, stamped with its trace."""
        for event in events:
            key = f"{self.id}#{len(self._pending)}"
            self._pending.append(event.caused_by(command, key))

    @property
    def pending_events(self) -> list[Event]:
        return list(self._pending)

    def clear_events(self) -> list[Event]:
        events, self._pending = self._pending, []
        return events
