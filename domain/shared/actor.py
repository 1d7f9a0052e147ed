"""Who sent a command. Every command carries one; each command says who may send it."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from domain.shared.errors import InvalidCommand
from domain.shared.text import Id


class Role(StrEnum):
    CUSTOMER = "customer"
    SUPPORT = "support"
    WAREHOUSE = "warehouse"
    FRAUD_ANALYST = "fraud_analyst"
    SYSTEM = "system"  # a policy acting on an event


class Actor(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Role
    id: Id  # the same rule as every other id: not blank, at most ID_MAX, storable

    @classmethod
    def parse(cls, text: str) -> Actor:
        """`role:id`, as typed on the command line (`customer:c-1`)."""
        role, sep, actor_id = text.partition(":")
        if not sep or not actor_id:
            raise InvalidCommand("invalid_actor", f"expected ROLE:ID, got {text!r}")
        if role not in Role.__members__.values():
            roles = ", ".join(r.value for r in Role)
            raise InvalidCommand("unknown_role", f"unknown role {role!r} (one of: {roles})")
        return cls(role=Role(role), id=actor_id)

    @classmethod
    def system(cls, policy: str) -> Actor:
        return cls(role=Role.SYSTEM, id=policy)

    def __str__(self) -> str:
        return f"{self.role.value}:{self.id}"
