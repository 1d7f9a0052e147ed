"""Bad input to the command line: `starter.py` refuses it with exit code 2 and one line
on stderr naming the problem, before anything starts, and the database is unchanged.

Every case runs starter.py's `main` in a process of its own (forked from
`tests/starter_forkserver.py`, which has imported starter once: a fresh interpreter per
case would cost a second of imports each), with the case's own environment, on its own
copy of a migrated SQLite database that holds a few orders (so that checks against
billing's view, such as the currency's decimals, are reached). TEMPORAL_ADDRESS points
at a local port that refuses connections: a command that got past validation would fail
there with exit code 1 ("cannot reach Temporal"), so it cannot pass for a refusal. A few
calls run as `python starter.py ...`, exactly as a user runs it (a database server that does
not answer, a workflow id derived from a long order id); the end-to-end tests run every verb so.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select

from activities.billing import BillingActivities
from adapters.db import make_engine, upgrade
from adapters.tables import metadata
from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types
from domain.billing.commands import OrderLine, PlaceOrder
from domain.shared.actor import Actor
from domain.shared.money import Money
from tests.forked_starter import ForkedStarter

ROOT = Path(__file__).resolve().parents[2]

# Orders billing already knows, one per number of decimals.
EUR_ORDER, JPY_ORDER, BHD_ORDER = "o-eur", "o-jpy", "o-bhd"
SEEDED = {EUR_ORDER: ("c-1", "120.00", "EUR"), JPY_ORDER: ("c-2", "5000", "JPY"), BHD_ORDER: ("c-3", "10.000", "BHD")}

# A valid call per verb; each case changes one thing (None drops an option, True is a
# flag without a value). Keys without a leading dash are positional arguments.
VALID: dict[str, dict[str, Any]] = {
    "place-order": {"--order-id": "o-new", "--customer": "c-1", "--amount": "10.00", "--currency": "EUR"},
    "ship": {"--order-id": EUR_ORDER, "--tracking": "T-1"},
    "deliver": {"--order-id": EUR_ORDER},
    "refund": {"--order-id": EUR_ORDER, "--amount": "5.00", "--reason": "damaged", "--as": "customer:c-1",
               "--refund-id": "r-1"},
    "review": {"refund_id": "r-1", "decision": "approve", "--as": "fraud_analyst:alice"},
    "update-payment-method": {"--order-id": EUR_ORDER, "--card": "tok_visa"},
    "cancel": {"--order-id": EUR_ORDER, "--as": "customer:c-1"},
    "status": {"workflow_id": "refund-r-1"},
    "order": {"order_id": EUR_ORDER},
    "list": {"--status": "completed"},
    "schedule": {"action": "interval", "minutes": "10"},
    "compare-settlements": {"day": "2026-11-30"},
}


def argv(verb: str, changes: dict[str, Any] | None = None) -> list[str]:
    merged = {**VALID[verb], **(changes or {})}
    positional = [value for key, value in merged.items() if not key.startswith("-") and value is not None]
    options: list[str] = []
    for key, value in merged.items():
        if key.startswith("-") and value is not None:
            options += [key] if value is True else [key, value]
    return [verb, *positional, *options]


# -- the table: case name -> (arguments, words the error line must contain) ----------------
# The argument types are shared by the verbs, so every verb gets each kind of bad input
# that applies to it once, and each kind gets its full range of values on one verb.
BAD_INPUT: dict[str, tuple[list[str], tuple[str, ...]]] = {}


def bad(name: str, args: list[str], *words: str) -> None:
    assert name not in BAD_INPUT, name
    BAD_INPUT[name] = (args, words)


# Amounts: plain positive decimals only.
MALFORMED_AMOUNTS = {
    "letters": "abc",
    "a decimal comma": "1,50",
    "exponent notation": "1e3",
    "an empty string": "",
    "only a space": " ",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "hexadecimal": "0x10",
    "a plus sign": "+5",
    "non-ASCII digits": "\u0663",  # ARABIC-INDIC DIGIT THREE, which Decimal() reads as 3
    "a currency sign": "€5",
}
for label, text in MALFORMED_AMOUNTS.items():
    bad(f"refund: amount written as {label}", argv("refund", {"--amount": text}), "amount")
for label, text in {"zero": "0.00", "a negative amount": "-5"}.items():
    bad(f"refund: {label}", argv("refund", {"--amount": text}), "amount", "greater than zero")
bad("place-order: amount written as letters", argv("place-order", {"--amount": "abc"}), "amount")
bad("place-order: a negative amount", argv("place-order", {"--amount": "-0.01"}), "amount", "greater than zero")
bad("place-order: an amount beyond any real payment", argv("place-order", {"--amount": "1000000000000000"}), "amount")

# More decimals than the currency has (domain/shared/money.py): place-order names the
# currency; a refund is in its order's currency.
for currency, amount in {"EUR": "1.234", "JPY": "1.5", "BHD": "1.2345"}.items():
    bad(f"place-order: too many decimals for {currency}",
        argv("place-order", {"--amount": amount, "--currency": currency}), "decimals", currency)
bad("refund: too many decimals for an EUR order", argv("refund", {"--amount": "1.234"}), "decimals", "EUR")
bad("refund: too many decimals for a JPY order", argv("refund", {"--order-id": JPY_ORDER, "--amount": "1.5"}),
    "decimals", "JPY")

# Currencies: known ISO 4217 codes, written exactly.
for label, text in {"an unknown code": "XXX", "lowercase": "eur", "empty": "",
                    "SQL": "EUR'; DROP TABLE orders;--"}.items():
    bad(f"place-order: currency {label}", argv("place-order", {"--currency": text}), "currency")
bad("refund: there is no --currency, the order's currency is used", argv("refund", {"--currency": "EUR"}),
    "unrecognized arguments")

# Who is asking: ROLE:ID with a known role and a proper id.
ACTORS = {
    "an unknown role": ("pirate:x", "unknown role"),
    "a role in capitals": ("Customer:c-1", "unknown role"),
    "an id without a role": (":x", "unknown role"),
    "a role without an id": ("customer:", "ROLE:ID"),
    "no colon at all": ("customer", "ROLE:ID"),
    "a blank id": ("customer:   ", "id", "empty"),
    "an over-long id": ("customer:" + "c" * 201, "id", "200"),
    "a control character in the id": ("customer:c-\x1b[31m", "id", "control"),
}
for label, (text, *words) in ACTORS.items():
    bad(f"refund: --as with {label}", argv("refund", {"--as": text}), *words)
for verb, (label, text, *words) in {
    "ship": ("an unknown role", "pirate:x", "unknown role"),
    "deliver": ("a role without an id", "warehouse:", "ROLE:ID"),
    "review": ("an over-long id", "fraud_analyst:" + "a" * 201, "id", "200"),
    "update-payment-method": ("no colon at all", "customer", "ROLE:ID"),
    "cancel": ("a blank id", "support: ", "id", "empty"),
}.items():
    bad(f"{verb}: --as with {label}", argv(verb, {"--as": text}), *words)

# Who may use a verb is who may issue its command (`issued_by`); `system` never comes from outside.
for verb, (text, *words) in {
    "refund": ("warehouse:w", "a warehouse may not refund", "customer, support"),
    "ship": ("customer:c-1", "a customer may not ship", "support, warehouse"),
    "deliver": ("fraud_analyst:a", "a fraud_analyst may not deliver"),
    "review": ("support:sam", "a support may not review", "fraud_analyst"),
    "update-payment-method": ("warehouse:w", "a warehouse may not update-payment-method"),
    "cancel": ("system:policy", "a system may not cancel"),
}.items():
    bad(f"{verb}: --as a role that may not issue it", argv(verb, {"--as": text}), "--as", *words)
bad("refund: --as system, which only settleflow's own flows are", argv("refund", {"--as": "system:x"}),
    "a system may not refund")

bad("refund: an id of the form a cancelled order's refund has (settleflow's own)",
    argv("refund", {"--refund-id": f"{EUR_ORDER}-cancellation"}), "refund_id", "-cancellation")

# Ids: not blank, at most 200 characters, no control characters or line breaks.
IDS = {
    "empty": ("", "id", "empty"),
    "a newline": ("o-1\nstarter.py: ok", "id", "control"),
    "a DEL character": ("o-1\x7f", "id", "control"),
    "a C1 control character": ("o-1\x85", "id", "control"),
    "a Unicode line separator": ("o-1\u2028x", "id", "control"),
    "201 characters": ("o" * 201, "id", "200"),
    "10,000 characters": ("o" * 10_000, "id", "200"),
}
for label, (text, *words) in IDS.items():
    bad(f"refund: order id with {label}", argv("refund", {"--order-id": text}), *words)
for verb, option, (label, (text, *words)) in (
    ("place-order", "--order-id", ("only spaces", ("   ", "id", "empty"))),
    ("place-order", "--customer", ("a newline", IDS["a newline"])),
    ("place-order", "--card", ("201 characters", IDS["201 characters"])),
    ("ship", "--tracking", ("empty", IDS["empty"])),
    ("deliver", "--order-id", ("a tab", ("o-\t1", "id", "control"))),
    ("refund", "--refund-id", ("201 characters", IDS["201 characters"])),
    ("review", "refund_id", ("empty", IDS["empty"])),
    ("update-payment-method", "--card", ("a DEL character", IDS["a DEL character"])),
    ("cancel", "--order-id", ("201 characters", IDS["201 characters"])),
    ("status", "workflow_id", ("only spaces", ("   ", "id", "empty"))),
    ("order", "order_id", ("201 characters", IDS["201 characters"])),
):
    bad(f"{verb}: {option.lstrip('-').replace('_', ' ')} with {label}", argv(verb, {option: text}), *words)

# Quotes and SQL in the id of an order that does not exist: "no order", nothing executed.
NASTY_IDS = {
    "SQL that drops a table": "o-'; DROP TABLE orders;--",
    "double quotes": 'o-"quoted"',
    "an always-true condition": "o-1' OR '1'='1",
    "SQL that empties the outbox": "x\"); DELETE FROM outbox; --",
}
for label, text in NASTY_IDS.items():
    bad(f"refund: no such order, id with {label}", argv("refund", {"--order-id": text}), "no order")
for verb, label in (("cancel", "SQL that drops a table"), ("cancel", "double quotes"),
                    ("ship", "SQL that drops a table"), ("deliver", "an always-true condition"),
                    ("update-payment-method", "SQL that empties the outbox")):
    bad(f"{verb}: no such order, id with {label}", argv(verb, {"--order-id": NASTY_IDS[label]}), "no order")
bad("order: no such order, id with SQL that drops a table",
    argv("order", {"order_id": NASTY_IDS["SQL that drops a table"]}), "no order")
bad("place-order: an order id that already exists", argv("place-order", {"--order-id": EUR_ORDER}), "already exists")

# Times: ISO-8601.
for verb, label, text in (("ship", "a word", "yesterday"), ("ship", "a Unix timestamp", "1767225600"),
                          ("place-order", "a word", "last week"),
                          ("deliver", "month 13", "2026-13-01T10:00:00+00:00")):
    bad(f"{verb}: --at with {label}", argv(verb, {"--at": text}), "ISO-8601")
for verb in ("place-order", "ship", "deliver"):  # a fact has happened: the owners refuse the future too
    bad(f"{verb}: --at in the future", argv(verb, {"--at": "2999-01-01T00:00:00+00:00"}), "--at", "in the future")

# Free text: a reason must say something and has a limit (as the owners' commands do); so has a note.
for verb in ("refund", "cancel"):
    bad(f"{verb}: an empty reason", argv(verb, {"--reason": ""}), "reason", "empty")
    bad(f"{verb}: a reason over 2000 characters", argv(verb, {"--reason": "r" * 2001}), "reason", "2000")
bad("refund: a blank reason", argv("refund", {"--reason": " \t "}), "reason", "empty")
bad("review: a note over 2000 characters", argv("review", {"--note": "n" * 2001}), "note", "2000")
# Bytes that are not UTF-8 (they arrive as lone surrogates) cannot be stored by any database.
bad("refund: a reason with a byte that is not UTF-8", argv("refund", {"--reason": "broken \udcff"}), "reason", "stored")
bad("review: a note with a byte that is not UTF-8", argv("review", {"--note": "\udcff"}), "note", "stored")
bad("place-order: a customer id with a byte that is not UTF-8", argv("place-order", {"--customer": "c-\udcff"}),
    "id", "stored")

# Words from a fixed list: review decisions and flow statuses.
for label, text in {"an unknown decision": "maybe", "a decision in capitals": "APPROVE"}.items():
    bad(f"review: {label}", argv("review", {"decision": text}), "decision", "invalid choice")
for label, text in {"SQL in the status": "completed' OR '1'='1", "a status in capitals": "COMPLETED",
                    "a status no flow has": "nonsense", "a status passed within one step": "requested"}.items():
    bad(f"list: {label}", argv("list", {"--status": text}), "status")

# Missing arguments, options without values, unknown flags and verbs.
for verb, option in (("place-order", "--currency"), ("ship", "--tracking"), ("deliver", "--order-id"),
                     ("refund", "--reason"), ("refund", "--as"), ("review", "decision"),
                     ("update-payment-method", "--card"), ("cancel", "--as"), ("status", "workflow_id"),
                     ("order", "order_id")):
    bad(f"{verb}: without {option.lstrip('-').replace('_', ' ')}", argv(verb, {option: None}), "required", option)
bad("refund: --amount as the last word, without its value", [*argv("refund", {"--amount": None}), "--amount"],
    "expected one argument", "--amount")
for verb in VALID:
    bad(f"{verb}: an unknown flag", argv(verb, {"--bogus": True}), "unrecognized arguments", "--bogus")
bad("place-order: a flag given a value", argv("place-order", {"--wait=yes": True}), "--wait")
bad("no verb at all", [], "required", "verb")
bad("an unknown verb", ["refnud", "--order-id", EUR_ORDER], "invalid choice", "refnud")

# Reconciliation's verbs (cli/reconciliation.py).
bad("schedule: interval without minutes", argv("schedule", {"minutes": None}), "minutes", "interval")
for label, text in (("zero", "0"), ("a fraction", "1.5"), ("more than a day", "1441"), ("letters", "ten")):
    bad(f"schedule: interval of {label}", argv("schedule", {"minutes": text}), "minutes")
bad("schedule: minutes with pause", argv("schedule", {"action": "pause", "minutes": "5"}), "minutes", "interval")
bad("schedule: lookups without a number", argv("schedule", {"action": "lookups", "minutes": None}), "look-ups", "lookups")
for label, text in (("zero", "0"), ("more than a read returns", "2001"), ("letters", "many")):
    bad(f"schedule: lookups of {label}", argv("schedule", {"action": "lookups", "minutes": text}), "look-ups", "1 to 2000")
bad("schedule: an unknown action", argv("schedule", {"action": "stop", "minutes": None}), "invalid choice", "stop")
bad("schedule: a daily interval", [*argv("schedule"), "--daily"], "daily")
bad("compare-settlements: a day that is not over", argv("compare-settlements", {"day": "2999-01-01"}), "not over yet")
bad("compare-settlements: not a day", argv("compare-settlements", {"day": "yesterday"}), "YYYY-MM-DD")
bad("compare-settlements: no day", ["compare-settlements"], "day")
bad("outbox: --event without --retry-parked", ["outbox", "--event", "e-1"], "--retry-parked")
bad("outbox: --retry-parked of an empty event id", ["outbox", "--retry-parked", "--event", ""], "event")
RESOLVE = ["resolve-discrepancy", "flow_gone:r-1", "--note", "refunded by hand"]
bad("resolve-discrepancy: by a customer", [*RESOLVE, "--as", "customer:c-1"], "only support")
bad("resolve-discrepancy: no such discrepancy", [*RESOLVE, "--as", "support:sam"], "no discrepancy")
bad("resolve-discrepancy: without a note", ["resolve-discrepancy", "flow_gone:r-1", "--as", "support:sam"],
    "required", "--note")

# Ids settleflow derives (a discrepancy id, a flow's workflow id) may be longer than the ids people
# give, up to 1000 characters (domain/shared/text.py DERIVED_ID_MAX); the other rules still hold.
LONGEST_ORDER = "o-" + "x" * 198
RESUME = ["resume-flow", "refund-r-1", "--note", "terminated by mistake", "--as", "support:sam"]
bad("resolve-discrepancy: an id of 1001 characters", [RESOLVE[0], "d" * 1001, *RESOLVE[2:], "--as", "support:sam"],
    "id", "1000")
bad("resolve-discrepancy: an id with a newline", [RESOLVE[0], "flow_gone:r-1\nok", *RESOLVE[2:], "--as", "support:sam"],
    "id", "control")
bad("resolve-discrepancy: an id derived from a 200-character order id gets past parsing (no such discrepancy)",
    [RESOLVE[0], f"capture:payment-{LONGEST_ORDER}/retry-2", *RESOLVE[2:], "--as", "support:sam"], "no discrepancy")
bad("resume-flow: a workflow id of 1001 characters", [RESUME[0], "w" * 1001, *RESUME[2:]], "id", "1000")
bad("resume-flow: an empty workflow id", [RESUME[0], "", *RESUME[2:]], "id", "empty")
bad("resume-flow: a workflow id with a control character", [RESUME[0], "refund-\x1b[31m", *RESUME[2:]], "id", "control")


# -- running the cases -------------------------------------------------------------------------
@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    database: dict[str, Any]


@pytest.fixture(scope="module")
def refusing_port() -> Iterator[int]:
    """A local port that refuses connections: bound (so nobody else takes it), never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def seeded_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file with the orders in SEEDED (placed; outbox and inbox rows too)."""
    path = tmp_path_factory.mktemp("seed") / "settleflow.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    aggregates = default_aggregate_types()
    billing = BillingActivities(lambda: SqlUnitOfWork(engine, aggregates))
    for order_id, (customer_id, amount, currency) in SEEDED.items():
        billing.place_order(PlaceOrder(
            command_id=f"payment-{order_id}/place", actor=Actor.system("test"),
            issued_at=datetime(2026, 11, 1, 12, tzinfo=timezone.utc), order_id=order_id, customer_id=customer_id,
            lines=[OrderLine(description=f"Order {order_id}", amount=Money.of(amount, currency))],
        ))
    engine.dispose()  # the last connection checkpoints the WAL: the file alone is the database
    return path


def snapshot(path: Path) -> dict[str, Any]:
    """Every table there is, and every row of every table in adapters.tables."""
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            rows = {
                table.name: sorted((tuple(row) for row in connection.execute(select(table))), key=repr)
                for table in metadata.sorted_tables
            }
        return {"tables": sorted(inspect(engine).get_table_names()), "rows": rows}
    finally:
        engine.dispose()


def env_for(database: Path, tmp: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "SETTLEFLOW_", "DATABASE_"))}
    return {
        **env,
        "DATABASE_URL": f"sqlite:///{database}",
        "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "SETTLEFLOW_GATEWAY_URL": f"http://127.0.0.1:{port}",
        "SETTLEFLOW_MAILBOX_DIR": str(tmp / "mailbox"),
    }


def run_starter(args: list[str], seed: Path, folder: Path, port: int) -> Outcome:
    """`python starter.py ARGS` on a fresh copy of the seeded database in `folder`."""
    database = fresh_copy(seed, folder)
    done = subprocess.run(
        [sys.executable, str(ROOT / "starter.py"), *args],
        cwd=ROOT, env=env_for(database, folder, port), capture_output=True, text=True, timeout=120,
    )
    return Outcome(done.returncode, done.stdout, done.stderr, snapshot(database))


def fresh_copy(seed: Path, folder: Path) -> Path:
    folder.mkdir()
    database = folder / "settleflow.db"
    shutil.copyfile(seed, database)
    return database


class ForkServer(ForkedStarter):
    """Runs cases on a fresh copy of the seeded database, each forked (tests/forked_starter.py)."""

    def run(self, args: list[str], seed: Path, folder: Path, port: int, **env: str) -> Outcome:
        """`starter.py ARGS` on a fresh copy of the seeded database in `folder`; `env` adds to
        (or replaces) the case's environment."""
        database = fresh_copy(seed, folder)
        returncode, stdout, stderr = self.call(args, {**env_for(database, folder, port), **env}, folder)
        return Outcome(returncode, stdout, stderr, snapshot(database))


@pytest.fixture(scope="module")
def fork_server() -> Iterator[ForkServer]:
    """One per test process. Each case is forked from it when its test runs, so that a case runs
    in whichever process takes its test, and only there (pytest-xdist hands cases out one by one)."""
    server = ForkServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def seeded_snapshot(seeded_database: Path) -> dict[str, Any]:
    before = snapshot(seeded_database)
    assert len(before["rows"]["orders"]) == len(SEEDED) and before["rows"]["outbox"]
    return before


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_naming_the_problem_and_changes_nothing(
    case: str, fork_server: ForkServer, seeded_database: Path, refusing_port: int, tmp_path: Path,
    seeded_snapshot: dict[str, Any],
) -> None:
    args, words = BAD_INPUT[case]
    done = fork_server.run(args, seeded_database, tmp_path / "case", refusing_port)
    shown = (f"starter.py {' '.join(map(repr, args))[:300]}\n"
             f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    assert done.returncode == 2, shown
    assert done.stdout == "", shown
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and done.stderr.endswith("\n"), shown
    assert "error" in lines[0], shown
    for word in words:
        assert word.lower() in lines[0].lower(), f"the error line should name the problem ({word!r})\n{shown}"
    assert len(lines[0]) < 800, shown  # one readable line, even for a 10,000-character id
    assert done.database == seeded_snapshot, f"the database changed\n{shown}"


@pytest.mark.parametrize("verb", list(VALID))
def test_each_valid_base_call_gets_past_validation_so_every_case_fails_for_its_own_reason(
    verb: str, fork_server: ForkServer, seeded_database: Path, refusing_port: int, tmp_path: Path,
    seeded_snapshot: dict[str, Any],
) -> None:
    """The base calls the cases change are valid: they reach Temporal (refused here, exit 1),
    and `order` answers from billing's view alone. So a case exiting 2 was refused for what it changed."""
    done = fork_server.run(argv(verb), seeded_database, tmp_path / "run", refusing_port)
    if verb == "order":
        assert (done.returncode, done.stderr) == (0, ""), done
        assert done.stdout.startswith(f"order {EUR_ORDER} (customer c-1)"), done
    else:
        assert done.returncode == 1, done
        assert done.stderr == f"starter.py: cannot reach Temporal at 127.0.0.1:{refusing_port}" \
            " (is it running? `python devstack.py up` starts one)\n", done
    assert done.database == seeded_snapshot


def test_resume_flow_takes_a_workflow_id_derived_from_a_200_character_order_id(
    seeded_database: Path, refusing_port: int, tmp_path: Path, seeded_snapshot: dict[str, Any]
) -> None:
    """`refund-{order}-cancellation` is longer than any id a person gives: it gets past validation
    and reaches Temporal (refused here, exit 1), as `resume-flow refund-r-1` does."""
    workflow_id = f"refund-{LONGEST_ORDER}-cancellation"
    assert len(workflow_id) > 200
    done = run_starter([RESUME[0], workflow_id, *RESUME[2:]], seeded_database, tmp_path / "run", refusing_port)
    assert done.returncode == 1, done
    assert "cannot reach Temporal" in done.stderr and done.stderr.count("\n") == 1, done
    assert done.database == seeded_snapshot


@pytest.mark.parametrize("args", [["order", EUR_ORDER], argv("refund"), argv("ship"), argv("place-order"),
                                  argv("cancel"), argv("update-payment-method")], ids=lambda a: a[0])
def test_a_view_without_its_database_exits_2_and_creates_no_database(
    args: list[str], fork_server: ForkServer, refusing_port: int, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "settleflow.db"
    returncode, stdout, stderr = fork_server.call(args, env_for(missing, tmp_path, refusing_port), tmp_path / "run")
    assert (returncode, stdout) == (2, ""), stderr
    assert stderr == f"starter.py: error: no database at {missing} (run `starter.py db upgrade` first)\n"
    assert not missing.exists() and not missing.parent.exists()


def test_a_view_of_a_database_server_that_does_not_answer_exits_2(refusing_port: int, tmp_path: Path) -> None:
    env = {**env_for(tmp_path / "unused.db", tmp_path, refusing_port),
           "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{refusing_port}/settleflow"}
    done = subprocess.run([sys.executable, str(ROOT / "starter.py"), "order", EUR_ORDER],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, ""), done
    assert done.stderr.startswith("starter.py: error: cannot read the database:") and done.stderr.count("\n") == 1
