"""The inbox's one rule: a command id answers only the command it was first decided for.

Owners answer a command id they saw with its first answer, so a retry, a replay or a resumed
flow changes nothing twice. The same id given to another command (a refund id used again for
another order once Temporal forgot the first flow) must not get that answer: it would report
another order's facts as its own and leave its own request undecided."""

from __future__ import annotations

from domain.shared.errors import InvalidCommand
from domain.shared.messages import Command


def refuse_if_reused(command: Command, recorded: str | None) -> None:
    """Refuse `command` when its id was decided for a command with another fingerprint
    (`recorded`; None: recorded before fingerprints were kept, taken as the same)."""
    if recorded is not None and recorded != command.fingerprint():
        raise InvalidCommand(
            "command_id_reused",
            f"{command.command_id} was decided before for another command (another order or refund "
            f"than this {command.name()}'s): ask again under a new id",
        )
