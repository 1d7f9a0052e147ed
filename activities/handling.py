"""How every activity handles a command: guard, load, call one method, save.

`decide` runs the owner inside one database transaction that also writes the
outbox rows and the processed-command record. A command id seen before returns
its first result and decides nothing anew, even once its token has expired. A lost
optimistic-concurrency race reloads and lets the owner decide again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.authorization import authorize
from adapters import tracing
from adapters.metrics import count_decision
from domain.contracts import Outcome
from domain.payments.answers import FoundByReconciliation
from domain.shared.errors import ConcurrencyConflict, DomainError, NotAuthorized
from domain.shared.messages import Command

T = TypeVar("T")
log = logging.getLogger(__name__)
RACE_RETRIES = 20  # in-process reloads before handing the conflict to Temporal's retry


def decide(uow_factory: Callable[[], Any], command: Command, owner_decides: Callable[[Any], object]) -> Outcome:
    """Run one decision to the end and record the command as processed."""
    outcome, _ = _in_transaction(uow_factory, command, owner_decides, final=True)
    assert outcome is not None
    return outcome


def prepare(uow_factory: Callable[[], Any], command: Command, owner_decides: Callable[[Any], T]) -> Outcome | T:
    """First half of a decision around an external call: save what the owner
    decided to ask, without marking the command processed. Returns the stored
    Outcome instead if the command was already handled."""
    outcome, value = _in_transaction(uow_factory, command, owner_decides, final=False)
    return outcome if outcome is not None else value  # type: ignore[return-value]


def _processed(uow_factory: Callable[[], Any], command: Command) -> dict | None:
    with uow_factory() as uow:
        return uow.answer_to(command)


def _in_transaction(uow_factory, command, owner_decides, *, final: bool):
    try:
        tracing.annotate(command.correlation_id, command.command_id)
        try:
            command = authorize(command)  # verified, its token dropped: what the owner sees
        except NotAuthorized as refused:
            # A command decided before, sent again by a resumed or reset flow (issued then),
            # after its token expired: answered from the inbox, since answering again decides
            # nothing. Only an expiry: every other check of the token must still hold.
            if refused.code != "token_expired":
                raise
            authorize(command, expired_ok=True)  # every other check of the token still holds
            stored = _processed(uow_factory, command)
            if stored is None:
                raise
            return Outcome.model_validate(stored), None
        return _decided(uow_factory, command, owner_decides, final=final)
    except DomainError as refused:
        # The owner refused the command outright: nothing changed, and asking again
        # cannot help, so Temporal must not retry it. A refusal is an answer, not a fault:
        # BENIGN keeps the SDK from logging it, message and ids and amounts, at WARNING with
        # its traceback in every worker's log (the flow reads it from the encrypted failure).
        raise ApplicationError(
            refused.message, refused.code, type=refused.kind, non_retryable=True,
            category=ApplicationErrorCategory.BENIGN,
        ) from refused


def _decided(uow_factory, command, owner_decides, *, final: bool):
    """The owner's decision on an authorized command, once. A copy of the same command decided
    meanwhile (a timed-out local activity's retry runs beside its first attempt) is answered
    with that first decision: on PostgreSQL (READ COMMITTED) the later copy sees the state the
    first one committed after its inbox check, and the owner would refuse it (`already_exists`,
    `duplicate_refund`) — so a refusal looks in the inbox once more before it stands."""
    try:
        for attempt in range(RACE_RETRIES):
            try:
                with uow_factory() as uow:
                    stored = uow.answer_to(command)
                    if stored is not None:
                        return Outcome.model_validate(stored), None
                    value = owner_decides(uow)
                    outcome = Outcome(command_id=command.command_id, events=uow.pending_events())
                    found = final and isinstance(value, FoundByReconciliation)
                    if found:
                        # Answered meanwhile by reconciliation's command: its record is this
                        # command's answer too (kept as such, so a redelivery gets the same).
                        outcome = Outcome.model_validate(uow.processed_result(value.command_id))
                    if final:
                        uow.commit(command, outcome)
                        if not found:  # reconciliation's events were counted when it decided them
                            count_decision(outcome.events)  # once: a duplicate returned above
                        return outcome, value
                    uow.commit()
                    return None, value
            except ConcurrencyConflict:
                log.info("lost a race on %s; reloading and deciding again", command.command_id)
                # A short random pause, growing with each loss, so that racing writers
                # spread out instead of colliding again in lockstep.
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise ApplicationError(
            f"{command.name()} kept losing concurrency races; retrying later", type="ConcurrencyConflict"
        )
    except DomainError:
        stored = _processed(uow_factory, command)
        if stored is None:
            raise
        return Outcome.model_validate(stored), None
