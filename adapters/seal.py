"""Seals: an owner decides only commands settleflow's own workflows sent it.

An owner's activity runs whatever its task queue hands it. Anyone who can reach the Temporal
namespace — schedule an activity from a workflow of their own on another worker — could hand
billing a `CancelOrder`, or payments a `SendRefundToGateway`, naming the `system` actor, which
carries no token (workflows' own commands need none). So every command a settleflow workflow
sends carries a seal: a Temporal header (`settleflow-seal`) holding HMAC-SHA256 over the
activity's name, the command id and what the command concerns (`Command.fingerprint`), under a
key derived from the payload key ring (HKDF: no new setting, and only processes that hold the
payload keys — settleflow's workers — can seal). The owner's activity checks the seal before
anything else; a command without a valid one is refused (`NotAuthorized`, `unsealed_command`)
and nothing is decided. A seal lifted from a history (headers are not secret) is bound to its
own command id: sending that command again gets the inbox's first answer, nothing more.

Rollout (`SETTLEFLOW_COMMAND_SEALS`): `require` (the default) refuses unsealed commands. An
activity scheduled by a build before this one carries no seal, and keeps none on its retries:
deploy this build with `log` (unsealed commands are decided, and logged) until no activity
scheduled before it is still retrying, then switch to `require`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from temporalio import activity, client
from temporalio.api.common.v1 import Payload
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    StartActivityInput,
    StartLocalActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from adapters.codec import KeyRing
from adapters.identity import load_trust
from domain.shared.messages import Command

log = logging.getLogger("settleflow.seal")

SEAL_HEADER = "settleflow-seal"
_INFO = b"settleflow command seal v1"


class Seals:
    """Seal and check commands with keys derived from the payload key ring."""

    def __init__(self, ring: KeyRing, require: bool = True) -> None:
        self.active = ring.active
        self.require = require
        self._keys = {
            kid: HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(key)
            for kid, key in ring.keys.items()
        }

    @classmethod
    def from_settings(cls) -> Seals:
        trust = load_trust()
        return cls(KeyRing.from_settings(trust), require=trust.command_seals == "require")

    def _mac(self, kid: str, activity_name: str, command: Command) -> str:
        message = "\n".join((activity_name, command.command_id, command.fingerprint())).encode()
        return hmac.new(self._keys[kid], message, hashlib.sha256).hexdigest()

    def seal(self, activity_name: str, command: Command) -> Payload:
        return Payload(metadata={"encoding": b"binary/plain"},
                       data=f"{self.active}:{self._mac(self.active, activity_name, command)}".encode())

    def why_refused(self, activity_name: str, command: Command, headers: Mapping[str, Payload]) -> str:
        """"" when the command carries a valid seal for this activity; else why not. A seal under
        a key this worker does not hold yet raises a retryable failure (UnknownSealKey)."""
        sealed = headers.get(SEAL_HEADER)
        if sealed is None:
            return f"{activity_name} {command.command_id} carries no seal: it was not sent by a settleflow workflow"
        kid, _, mac = sealed.data.decode("ascii", errors="replace").partition(":")
        if kid not in self._keys:
            # A key newer than this worker's ring (a rotation rolling out): not a refusal. The
            # activity fails and is retried, until a worker that holds the key takes it.
            raise ApplicationError(
                f"{activity_name} {command.command_id} is sealed with key {kid!r}, which this worker does not hold",
                type="UnknownSealKey",
            )
        if not hmac.compare_digest(mac, self._mac(kid, activity_name, command)):
            return f"{activity_name} {command.command_id}: its seal does not match the command"
        return ""

    def check(self, activity_name: str, command: Command, headers: Mapping[str, Payload]) -> None:
        """Refuse (a non-retryable NotAuthorized, as an owner's refusal) an unsealed command."""
        refused = self.why_refused(activity_name, command, headers)
        if not refused:
            return
        if not self.require:
            log.warning("decided although unsealed (SETTLEFLOW_COMMAND_SEALS=log): %s", refused)
            return
        raise ApplicationError(refused, "unsealed_command", type="NotAuthorized", non_retryable=True,
                               category=ApplicationErrorCategory.BENIGN)


class SealsCommands(client.Interceptor, Interceptor):
    """On a worker: its workflows seal every command they send, and its activities decide only
    sealed ones. On a client that runs no worker (the starter) it does nothing."""

    def __init__(self, seals: Seals | None = None) -> None:
        self.seals = seals or Seals.from_settings()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CheckingInbound(next, self.seals)

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        return type("SealingInbound", (_SealingInbound,), {"seals": self.seals})


class _CheckingInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, seals: Seals) -> None:
        super().__init__(next)
        self.seals = seals

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        command = input.args[0] if input.args else None
        if isinstance(command, Command):  # checked before the activity's thread is taken
            self.seals.check(activity.info().activity_type, command, input.headers)
        return await super().execute_activity(input)


class _SealingInbound(WorkflowInboundInterceptor):
    seals: Seals

    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_SealingOutbound(outbound, self.seals))


class _SealingOutbound(WorkflowOutboundInterceptor):
    def __init__(self, next: WorkflowOutboundInterceptor, seals: Seals) -> None:
        super().__init__(next)
        self.seals = seals

    def _sealed(self, activity_name: str, args: Any, headers: Mapping[str, Payload]) -> Mapping[str, Payload]:
        command = args[0] if args else None
        if not isinstance(command, Command):
            return headers  # a read of an owner's records (`look_up`): decides nothing
        return {**headers, SEAL_HEADER: self.seals.seal(activity_name, command)}

    def start_activity(self, input: StartActivityInput) -> Any:
        input.headers = self._sealed(input.activity, input.args, input.headers)
        return super().start_activity(input)

    def start_local_activity(self, input: StartLocalActivityInput) -> Any:
        input.headers = self._sealed(input.activity, input.args, input.headers)
        return super().start_local_activity(input)
