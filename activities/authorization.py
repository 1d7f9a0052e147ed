"""The guard every activity runs first: may this actor send this command at all?

Finer rules that need the owner's state (a customer refunding *their own*
order) belong to the owner and are checked there.
"""

from domain.shared.errors import NotAuthorized
from domain.shared.messages import Command


def authorize(command: Command) -> None:
    if command.actor.role not in type(command).issued_by:
        allowed = ", ".join(sorted(role.value for role in type(command).issued_by))
        raise NotAuthorized(
            "role_not_allowed",
            f"a {command.actor.role.value} may not send {command.name()} (allowed: {allowed})",
        )
