"""Temporal's workflow sandbox, entered without compiling its entry code every time.

The SDK's sandbox runs each activation, and each payload's serialization context, by
`exec` of a short fixed snippet of source inside the sandbox — compiled again on every
call: about a hundred compiles per refund, a tenth of the worker's Python CPU (README
"Performance"). `SandboxRunner` is the SDK's `SandboxedWorkflowRunner` with the same
restrictions and the same isolation; it only hands `exec` those snippets compiled once.
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


@dataclass(frozen=True)
class SandboxRunner(SandboxedWorkflowRunner):
    """SandboxedWorkflowRunner whose sandbox entry snippets are compiled once."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _CompiledEntryInstance(det, self.runner_class, self.restrictions)
