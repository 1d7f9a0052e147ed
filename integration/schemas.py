"""JSON Schemas of every published contract version, and the compatibility rule.

    python -m integration.schemas          # write schemas/<type>.json for every contract
    python -m integration.schemas --check  # exit 1 when a committed version was broken

The committed files are what consumers were promised. A later change to the same
version must be backward compatible with them: every committed field is still
there (not removed, not renamed), has the same type, and nothing became required.
Adding an optional field is fine; anything else is a new version (v2) published
alongside the old one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from integration.contracts import CONTRACTS, Contract
from integration.envelope import CloudEvent

FOLDER = Path(__file__).resolve().parent / "schemas"
ENVELOPE_FILE = "cloudevent.v1.json"
_NOT_TYPING = {"title", "description", "default", "examples"}


def schema_of(contract: type[Contract]) -> dict[str, Any]:
    schema = contract.model_json_schema(mode="serialization")
    schema["$id"] = f"https://settleflow.example/schemas/{contract.schema_file()}"
    schema["x-cloudevents-type"] = contract.type_name()
    schema["x-nats-subject"] = contract.subject()
    return schema


def envelope_schema() -> dict[str, Any]:
    schema = CloudEvent.model_json_schema(mode="serialization")
    schema["$id"] = f"https://settleflow.example/schemas/{ENVELOPE_FILE}"
    return schema


def current() -> dict[str, dict[str, Any]]:
    """File name → schema, as the code defines them now."""
    schemas = {c.schema_file(): schema_of(c) for c in CONTRACTS}
    schemas[ENVELOPE_FILE] = envelope_schema()
    return schemas


def committed(folder: Path = FOLDER) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


def _typing(prop: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in prop.items() if k not in _NOT_TYPING}


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What a consumer of `old` would trip over in `new` (empty when compatible)."""
    problems: list[str] = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name, prop in old_props.items():
        if name not in new_props:
            problems.append(f"field {name!r} was removed or renamed")
        elif _typing(prop) != _typing(new_props[name]):
            problems.append(f"field {name!r} changed type: {_typing(prop)} -> {_typing(new_props[name])}")
    newly_required = set(new.get("required", [])) - set(old.get("required", []))
    for name in sorted(newly_required):
        problems.append(f"field {name!r} became required")
    if old.get("$defs", {}) != new.get("$defs", {}):
        problems.append("nested definitions ($defs) changed")
    return problems


def check(folder: Path = FOLDER) -> list[str]:
    """Every problem: a published version broken, or a contract with no committed schema."""
    now, promised = current(), committed(folder)
    problems = [f"{name}: {p}" for name, old in promised.items() if name in now for p in breaking_changes(old, now[name])]
    problems += [f"{name}: published version removed" for name in promised if name not in now]
    problems += [f"{name}: no committed schema (run python -m integration.schemas)" for name in now if name not in promised]
    return problems


def write(folder: Path = FOLDER) -> list[str]:
    """Write the schemas of today's code; refuses when that would break a published version."""
    if problems := [p for p in check(folder) if "no committed schema" not in p]:
        raise SystemExit("refusing to overwrite published schemas:\n  " + "\n  ".join(problems))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in current().items():
        (folder / name).write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integration.schemas", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check compatibility with the committed schemas")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        print("\n".join(problems) or "every published version is compatible")
        return 1 if problems else 0
    for name in write():
        print(f"wrote integration/schemas/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
