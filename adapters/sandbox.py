"""Temporal's workflow sandbox, entered without compiling its entry code every time.

The SDK's sandbox runs each activation, and each payload's serialization context, by
`exec` of a short fixed snippet of source inside the sandbox — compiled again on every
call: about a hundred compiles per refund, a tenth of the worker's Python CPU (README
"Performance"). `SandboxRunner` is the SDK's `SandboxedWorkflowRunner` with the same
restrictions and the same isolation; it hands `exec` those snippets compiled once.

It also answers "which serialization (and external-store) context does this payload
get?" without entering the sandbox. The SDK asks that for every payload it encodes or
decodes (48 times per refund) and enters the sandbox each time — swapping `sys.modules`,
`__import__` and the builtins there and back — only to read two fields of the workflow
instance's own state (its id, and which pending activity or child a command is). No
workflow code runs for it, nothing is imported, no clock is read: the answer is the same
object either way, and the sandbox still guards every activation.

It reaches into the SDK's (private) sandbox instance, so it is tied to the pinned
temporalio version: `tests/workflows/test_sandbox_runner.py` checks both still fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from types import CodeType
from typing import Any

from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance


@lru_cache(maxsize=64)
def compiled(snippet: str) -> CodeType:
    """The SDK's fixed entry snippets, compiled once per process."""
    return compile(snippet, "<string>", "exec")


class _CompiledEntryInstance(_Instance):
    def _run_code(self, code: Any, **extra_globals: Any) -> None:
        super()._run_code(compiled(code) if isinstance(code, str) else code, **extra_globals)

    def _in_sandbox(self) -> Any:
        return self.globals_and_locals["__temporal_in_sandbox"]  # set by _create_instance

    def get_serialization_context(self, command_info: Any) -> Any:
        # A look-up in the instance's own state: no workflow code, no import, no sandbox entry.
        return self._in_sandbox().get_serialization_context(command_info)

    def get_external_store_context(self, command_info: Any) -> Any:
        return self._in_sandbox().get_external_store_context(command_info)


@dataclass(frozen=True)
class SandboxRunner(SandboxedWorkflowRunner):
    """SandboxedWorkflowRunner whose sandbox entry snippets are compiled once."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _CompiledEntryInstance(det, self.runner_class, self.restrictions)
