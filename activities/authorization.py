"""The guard every activity runs first: who really sent this command, and may they?

A command from outside carries the sender's signed token (`Command.credential`); it is
verified here (adapters/identity.py: signature, issuer, audience, expiry at the command's
`issued_at`, role claim, subject) and must prove exactly the command's actor. A command
whose actor is `system` is one of settleflow's own workflows' and carries no token; the
workflows refuse a request from outside that claims `system` (workflows/process.py
`from_outside`). The owner then sees the verified command, its token dropped.

Finer rules that need the owner's state (a customer refunding *their own* order, an
analyst deciding a refund they requested) belong to the owner and are checked there.
"""

from __future__ import annotations

from typing import TypeVar

from adapters.identity import verifier
from domain.shared.actor import Role
from domain.shared.errors import NotAuthorized
from domain.shared.messages import Command

C = TypeVar("C", bound=Command)


def authorize(command: C, *, expired_ok: bool = False) -> C:
    """The command as its owner may see it, or NotAuthorized (nothing is decided).
    `expired_ok`: every check but the token's expiry (a command decided before, re-sent)."""
    if command.actor.role is Role.SYSTEM:
        if command.credential is not None:
            raise NotAuthorized("system_from_outside", "system is settleflow's workflows alone: no token acts as system")
    else:
        proven = verifier().verify(command.credential, command.issued_at, expired_ok=expired_ok)
        if proven != command.actor:
            raise NotAuthorized(
                "actor_mismatch", f"the token is {proven}'s, but the command names {command.actor}"
            )
    if command.actor.role not in type(command).issued_by:
        allowed = ", ".join(sorted(role.value for role in type(command).issued_by))
        raise NotAuthorized(
            "role_not_allowed",
            f"a {command.actor.role.value} may not send {command.name()} (allowed: {allowed})",
        )
    return command.model_copy(update={"credential": None})
