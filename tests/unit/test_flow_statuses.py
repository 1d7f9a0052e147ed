"""Every status a workflow sets is in workflows.messages.FLOW_STATUSES; `starter.py list
--status` accepts those a flow rests in (the passing ones never reach FlowStatus)."""

from __future__ import annotations

import ast
from pathlib import Path

from workflows.messages import FLOW_STATUSES, PASSING_STATUSES, SEARCHABLE_STATUSES

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def constants_of(node: ast.expr) -> list[str]:
    """The strings an argument can be: a constant, or either side of `a if c else b`."""
    if isinstance(node, ast.IfExp):
        return constants_of(node.body) + constants_of(node.orelse)
    return [node.value] if isinstance(node, ast.Constant) else []


def statuses_set_in(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            if node.func.attr in {"set_status", "end"}:
                found.update(constants_of(node.args[0]))
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if any(isinstance(t, ast.Attribute) and t.attr == "status" for t in node.targets):
                found.add(node.value.value)
    return found


def test_every_status_a_workflow_sets_is_a_known_flow_status():
    shown = set().union(*(statuses_set_in(path.read_text()) for path in WORKFLOWS.glob("*.py")))
    assert shown, "no statuses found: has the way workflows set their status changed?"
    assert shown <= FLOW_STATUSES, f"add to FLOW_STATUSES: {sorted(shown - FLOW_STATUSES)}"


def test_the_command_line_searches_only_statuses_a_flow_rests_in():
    assert PASSING_STATUSES <= FLOW_STATUSES
    assert SEARCHABLE_STATUSES == FLOW_STATUSES - PASSING_STATUSES
    assert {"under_review", "sending", "awaiting_reconciliation", "completed"} <= SEARCHABLE_STATUSES
    assert "requested" not in SEARCHABLE_STATUSES
