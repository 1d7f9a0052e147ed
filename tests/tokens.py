"""Signed tokens for tests, from the dev issuer the suite configures (tests/conftest.py:
a key pair of its own under a temporary directory, shared with every process it starts).

Test tokens are valid from a day before they are minted for 500 years: the time-skipping
server leaps years ahead (awaiting a closed flow), and expiry is judged at each command's issued_at.
The token table (tests/workflows/test_tokens.py) mints the short-lived and the bad ones.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.identity import load_trust, mint
from domain.shared.actor import Actor, Role

SINCE = datetime(2020, 1, 1, tzinfo=UTC)  # before every fixed time the unit tests use


def token_for(actor: Actor | str, *, lifetime: timedelta = timedelta(days=365 * 500)) -> str:
    """A valid token proving this actor (`Actor` or `role:id`)."""
    actor = Actor.parse(actor) if isinstance(actor, str) else actor
    return mint(load_trust(), actor.role, actor.id, now=SINCE, lifetime=lifetime)


def signed(actor: Actor | str) -> dict:
    """Keyword arguments for a request or Update from this actor: who, and the proof."""
    actor = Actor.parse(actor) if isinstance(actor, str) else actor
    return {"token": None if actor.role is Role.SYSTEM else token_for(actor)}
