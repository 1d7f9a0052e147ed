"""Every starter.py verb says how it runs: `run(args, settings)` (no Temporal client) or
`handler(cli)`; main() dispatches on that alone, never on the verb's name."""

from __future__ import annotations

import argparse

import starter


def verbs() -> dict[str, argparse.ArgumentParser]:
    [subparsers] = [a for a in starter.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def test_every_verb_carries_exactly_one_way_to_run():
    ways = {name: {k for k in ("run", "handler") if parser.get_default(k) is not None} for name, parser in verbs().items()}
    assert {name: found for name, found in ways.items() if len(found) != 1} == {}


def test_the_verbs_that_need_no_temporal_client_are_the_ones_that_run_without_one():
    without_client = {name for name, parser in verbs().items() if parser.get_default("run") is not None}
    assert without_client == {"config", "token", "events", "outbox", "report", "map"}
