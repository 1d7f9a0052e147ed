"""The ownership map, generated from the code: `python starter.py map` writes docs/ownership.md.

For every command: its owner, the roles that may issue it, the events its owner records
for it, who reacts to each event (a workflow step, or a consumer), and what the event
becomes outside (integration event type and subject, or "not published" and why).

Where each column comes from, so that the map cannot drift from the code:
- owner, roles: the command class (`owner`, `issued_by`);
- events: the owners' methods in domain/ that take the command (by type hint), read
  with `ast` for the event classes they construct, following calls to their own
  class's methods and their module's functions;
- reactions: workflows/*.py, where a method names the event in `.first(...)`,
  `.has(...)` or `isinstance(...)`; and reporting/store.py's APPLY table;
- leaves as: integration/translation.py's TABLE.

tests/unit/test_ownership_map.py fails when docs/ownership.md differs from `generate()`.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import textwrap
import types
import typing
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import domain
import workflows
from domain.contracts import EVENT_TYPES, Command
from integration.translation import TABLE, NotPublished

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / "docs" / "ownership.md"
EVENT_NAMES = {e.__name__ for e in EVENT_TYPES}
OWNERS = ("billing", "payments", "fraud", "shipping", "invoicing", "notifications")


def commands() -> list[type[Command]]:
    """Every command a process can send: the Command classes domain/contracts.py exports."""
    import domain.contracts as exported

    found = {c for c in vars(exported).values() if isinstance(c, type) and issubclass(c, Command) and c is not Command}
    return sorted(found, key=lambda c: (OWNERS.index(c.owner) if c.owner in OWNERS else 99, c.__name__))


# -- events each command records --------------------------------------------------------------------------------------
def _domain_modules() -> Iterator[types.ModuleType]:
    for info in pkgutil.walk_packages(domain.__path__, "domain."):
        yield importlib.import_module(info.name)


def _commands_in(annotation: Any, all_commands: list[type[Command]]) -> list[type[Command]]:
    members = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or typing.get_origin(
        annotation) is typing.Union else (annotation,)  # fmt: skip
    out = []
    for member in members:
        if isinstance(member, type) and issubclass(member, Command):
            out += [c for c in all_commands if issubclass(c, member)]
    return out


def _events_constructed(function: Callable[..., Any], owner_class: type | None, module: types.ModuleType,
                        seen: set[str]) -> set[str]:  # fmt: skip
    key = f"{module.__name__}.{getattr(function, '__qualname__', function)}"
    if key in seen:
        return set()
    seen.add(key)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError):
        return set()
    events: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name):
            if node.func.id in EVENT_NAMES:
                events.add(node.func.id)
            elif inspect.isfunction(helper := getattr(module, node.func.id, None)) and helper.__module__ == module.__name__:
                events |= _events_constructed(helper, None, module, seen)
        elif (isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
              and owner_class is not None and node.func.value.id in {"self", "cls", owner_class.__name__}):  # fmt: skip
            method = inspect.getattr_static(owner_class, node.func.attr, None)
            method = getattr(method, "__func__", method)
            if inspect.isfunction(method):
                events |= _events_constructed(method, owner_class, module, seen)
    return events


def recorded_events() -> dict[type[Command], set[str]]:
    all_commands = commands()
    recorded: dict[type[Command], set[str]] = defaultdict(set)
    for module in _domain_modules():
        if module.__name__.endswith((".commands", ".events")) or module.__name__.startswith("domain.shared"):
            continue
        candidates: list[tuple[Callable[..., Any], type | None]] = []
        for _, obj in vars(module).items():
            if inspect.isfunction(obj) and obj.__module__ == module.__name__:
                candidates.append((obj, None))
            elif inspect.isclass(obj) and obj.__module__ == module.__name__:
                for attr in vars(obj).values():
                    fn = getattr(attr, "__func__", attr)
                    if inspect.isfunction(fn):
                        candidates.append((fn, obj))
        for fn, owner_class in candidates:
            try:
                hints = typing.get_type_hints(fn, vars(module))
            except Exception:  # noqa: BLE001 - a hint that does not resolve names no command
                continue
            handled = [c for name, hint in hints.items() if name != "return" for c in _commands_in(hint, all_commands)]
            if handled:
                events = _events_constructed(fn, owner_class, module, set())
                for command in handled:
                    recorded[command] |= events
    return recorded


# -- who reacts -------------------------------------------------------------------------------------------------------
def reactions() -> dict[str, list[str]]:
    reacting: dict[str, set[str]] = defaultdict(set)
    for info in pkgutil.iter_modules(workflows.__path__):
        path = ROOT / "workflows" / f"{info.name}.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if not isinstance(node, ast.Call):
                        continue
                    is_check = (isinstance(node.func, ast.Attribute) and node.func.attr in {"first", "has"}) or (
                        isinstance(node.func, ast.Name) and node.func.id == "isinstance")
                    for arg in node.args if is_check else ():
                        if isinstance(arg, ast.Name) and arg.id in EVENT_NAMES:
                            reacting[arg.id].add(f"{cls.name}.{fn.name}")
    from reporting.store import APPLY

    for event_type, entry in TABLE.items():
        if not isinstance(entry, NotPublished) and any(c.type_name() in APPLY for c, _ in entry):
            reacting[event_type.__name__].add("reporting (consumer)")
    return {name: sorted(who) for name, who in reacting.items()}


def leaves_as(event_name: str) -> str:
    entry = next(v for k, v in TABLE.items() if k.__name__ == event_name)
    if isinstance(entry, NotPublished):
        return f"not published: {entry.reason}"
    return "; ".join(f"`{c.type_name()}` on `{c.subject()}`" for c, _ in entry)


# -- the document -------------------------------------------------------------------------------------------------------
def generate() -> str:
    recorded, reacting = recorded_events(), reactions()
    lines = [
        "# Who owns what: commands, owners, events, reactions, integration events",
        "",
        "Generated from the code by `python starter.py map` (cli/ownership.py); do not edit by hand.",
        "A test fails when this file differs from what the code generates.",
        "",
    ]
    by_owner: dict[str, list[type[Command]]] = defaultdict(list)
    for command in commands():
        by_owner[command.owner].append(command)
    for owner, owned in by_owner.items():
        lines += [f"## {owner}", "", "| command | issued by | records | reacted to by | leaves settleflow as |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for command in owned:
            roles = ", ".join(sorted(r.value for r in command.issued_by))
            events = sorted(recorded.get(command, set())) or ["(nothing)"]
            for i, event in enumerate(events):
                first = i == 0
                who = ", ".join(reacting.get(event, [])) or "-"
                out = leaves_as(event) if event in EVENT_NAMES else "-"
                lines.append(
                    f"| {'`' + command.__name__ + '`' if first else ''} | {roles if first else ''} | "
                    f"{'`' + event + '`' if event in EVENT_NAMES else event} | {who} | {out} |"
                )
        lines.append("")
    return "\n".join(lines)


def committed() -> str:
    return MAP.read_text(encoding="utf-8") if MAP.exists() else ""


def write() -> Path:
    MAP.parent.mkdir(parents=True, exist_ok=True)
    MAP.write_text(generate(), encoding="utf-8")
    return MAP.relative_to(ROOT)
