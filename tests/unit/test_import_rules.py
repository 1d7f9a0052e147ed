"""Dependencies point inward: workflows -> domain contracts, activities -> domain and
adapters, adapters -> domain, domain -> nothing. Read from the source with `ast`."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OWNERS = ("billing", "payments", "fraud", "shipping", "invoicing", "notifications", "reconciliation")


@dataclass(frozen=True)
class Import:
    file: str  # relative to the project root
    line: int
    module: str  # absolute dotted name of what is imported

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.module}"


def _is_package(dotted: str) -> bool:
    return (ROOT / dotted.replace(".", "/")).is_dir()


def imports_in(source: str, file: str, package: str) -> Iterator[Import]:
    """Every import in a module, nested ones included (`if TYPE_CHECKING`,
    `with workflow.unsafe.imports_passed_through()`, inside functions).
    `from pkg import submodule` is reported as `pkg.submodule`."""
    for node in ast.walk(ast.parse(source, filename=file)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(file, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if _is_package(module):
                for alias in node.names:
                    yield Import(file, node.lineno, f"{module}.{alias.name}" if alias.name != "*" else module)
            else:
                yield Import(file, node.lineno, module)


def imports_of(layer: str) -> list[Import]:
    found: list[Import] = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        relative = path.relative_to(ROOT)
        parts = list(relative.with_suffix("").parts)
        package = ".".join(parts if parts[-1] == "__init__" else parts[:-1]).removesuffix(".__init__")
        found.extend(imports_in(path.read_text(encoding="utf-8"), str(relative), package))
    return found


def within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def offending(layer: str, forbidden: Callable[[str], bool]) -> list[str]:
    return [str(imp) for imp in imports_of(layer) if forbidden(imp.module)]


def report(broken: list[str]) -> str:
    return "imports against the dependency rule:\n  " + "\n  ".join(broken)


# -- the rules ---------------------------------------------------------------------------------------------------------
DOMAIN_MAY_NOT = ("temporalio", "sqlalchemy", "alembic", "httpx", "psycopg", "stripe", "adapters", "activities", "workflows")
WORKFLOWS_MAY_NOT = ("sqlalchemy", "alembic", "adapters", "activities", "httpx", "psycopg", "stripe")
ADAPTERS_MAY_NOT = ("activities", "workflows")
ACTIVITIES_MAY_NOT = ("workflows",)

_CONTRACT = re.compile(rf"^domain\.(?:{'|'.join(OWNERS)})\.(?:commands|events)$")


def workflow_may_import_from_domain(module: str) -> bool:
    """Only message contracts: domain.contracts, domain.shared.*, domain.<owner>.commands|events."""
    return module == "domain.contracts" or within(module, "domain.shared") or bool(_CONTRACT.match(module))


def domain_forbidden(module: str) -> bool:
    return within(module, *DOMAIN_MAY_NOT)


def workflows_forbidden(module: str) -> bool:
    if within(module, *WORKFLOWS_MAY_NOT):
        return True
    return within(module, "domain") and not workflow_may_import_from_domain(module)


def adapters_forbidden(module: str) -> bool:
    return within(module, *ADAPTERS_MAY_NOT)


def activities_forbidden(module: str) -> bool:
    return within(module, *ACTIVITIES_MAY_NOT)


def test_the_source_tree_has_the_four_layers():
    for layer in ("domain", "activities", "workflows", "adapters"):
        assert imports_of(layer), f"no imports found under {layer}/ -- is ROOT ({ROOT}) right?"


def test_the_domain_imports_no_framework_no_database_and_no_outer_layer():
    broken = offending("domain", domain_forbidden)
    assert not broken, report(broken)


def test_workflows_import_only_message_contracts_of_the_domain_and_no_infrastructure():
    broken = offending("workflows", workflows_forbidden)
    assert not broken, report(broken)


def test_adapters_import_neither_activities_nor_workflows():
    broken = offending("adapters", adapters_forbidden)
    assert not broken, report(broken)


def test_activities_import_no_workflows():
    broken = offending("activities", activities_forbidden)
    assert not broken, report(broken)


def test_the_domain_reads_no_clock():
    """Decisions use the command's `issued_at`, never the time of the moment."""
    clock_calls = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}
    broken = []
    for path in sorted((ROOT / "domain").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in clock_calls
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in {"datetime", "date", "time"}
            ):
                broken.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {node.func.value.id}.{node.func.attr}()")
    assert not broken, "\n".join(broken)


# -- the checker itself -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import temporalio", ["temporalio"]),
        ("from sqlalchemy.orm import Session", ["sqlalchemy.orm"]),
        ("from domain.billing.order import Order", ["domain.billing.order"]),
        ("from domain.billing import order", ["domain.billing.order"]),
        ("from domain import contracts", ["domain.contracts"]),
        ("from . import process", ["workflows.process"]),
        ("from .process import Step", ["workflows.process"]),
        ("from ..domain.contracts import Outcome", ["domain.contracts"]),
        ("with x():\n    import adapters.db", ["adapters.db"]),
        ("def f():\n    from activities.handling import decide", ["activities.handling"]),
    ],
)
def test_the_checker_sees_every_kind_of_import(source, expected):
    assert [i.module for i in imports_in(source, "workflows/x.py", "workflows")] == expected


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("domain.contracts", True),
        ("domain.shared.money", True),
        ("domain.shared", True),
        ("domain.billing.commands", True),
        ("domain.fraud.events", True),
        ("domain.billing.order", False),
        ("domain.payments.payment", False),
        ("domain.fraud.screening", False),
        ("domain.billing", False),
        ("domain", False),
        ("sqlalchemy", False),
        ("adapters.stripe_gateway", False),
        ("activities.billing", False),
        ("httpx", False),
        ("psycopg", False),
        ("temporalio.workflow", True),
        ("pydantic", True),
        ("workflows.process", True),
    ],
)
def test_the_workflow_rule_allows_message_contracts_only(module, allowed):
    assert workflows_forbidden(module) is not allowed


def test_an_offending_import_is_reported_with_its_file_and_line():
    source = "from temporalio import workflow\n\nwith workflow.unsafe.imports_passed_through():\n    from domain.billing.order import Order\n"
    found = [str(i) for i in imports_in(source, "workflows/refund.py", "workflows") if workflows_forbidden(i.module)]
    assert found == ["workflows/refund.py:4 imports domain.billing.order"]


def test_the_stripe_simulator_is_not_settleflow_code_and_settleflow_does_not_import_it():
    """The simulator stands in for Stripe: it knows nothing of settleflow, and only tests,
    chaos and bench (through simulators.control) talk to it directly."""
    broken = offending("simulators", lambda m: within(m, "domain", "activities", "workflows", "adapters"))
    for layer in ("domain", "activities", "workflows", "adapters"):
        broken += offending(layer, lambda m: within(m, "simulators"))
    assert not broken, report(broken)


# -- integration events and their consumers ------------------------------------------------------------------------------
def integration_forbidden(module: str) -> bool:
    """Public contracts translate the domain's message contracts; they know no infrastructure of settleflow."""
    return within(module, "activities", "workflows", "adapters", "reporting", "sqlalchemy", "temporalio") or (
        within(module, "domain") and not workflow_may_import_from_domain(module)
    )


def reporting_forbidden(module: str) -> bool:
    """A consumer knows settleflow only through integration/: no owner, no process, no settleflow table."""
    if within(module, "adapters"):
        return module not in {"adapters.db", "adapters.tables"}  # engine tuning and the UTC column type only
    return within(module, "domain", "activities", "workflows", "temporalio")


def test_the_public_contracts_import_only_domain_message_contracts():
    broken = offending("integration", integration_forbidden)
    assert not broken, report(broken)


def test_the_reporting_consumer_imports_nothing_of_the_owners():
    broken = offending("reporting", reporting_forbidden)
    assert not broken, report(broken)
