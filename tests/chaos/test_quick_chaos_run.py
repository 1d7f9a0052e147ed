"""The reduced fault run, in the test suite: `python -m chaos.run --quick` on a private
stack (its own dev server with a database file, gateway simulator, two worker.py
processes), with 2 worker SIGKILLs, one dev-server stop and start, gateway 5xx, slow
answers and timeouts after the money moved, duplicate refund starts and commands
delivered twice. Every check of the run must find nothing. See chaos/README.md."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from devstack import ROOT

pytestmark = pytest.mark.chaos

SEED = "20261122"  # fixed: the same plan (cards, amounts, fault times) on every CI run


BUDGET_SECONDS = 300  # from the run's start
_early: tuple[subprocess.Popen, float] | None = None  # started at collection (tests/conftest.py)


def start_quick_run() -> tuple[subprocess.Popen, float]:
    """Start the run in its own process, once. Alone, the suite starts it as soon as collection
    is done and runs these tests last; in a parallel run (`make test`) these tests go first to one
    process, which starts it here and waits while the other works (tests/conftest.py). Either
    way the run's 80-odd seconds overlap the rest of the suite."""
    global _early
    if _early is None:
        process = subprocess.Popen(
            [sys.executable, "-m", "chaos.run", "--quick", "--seed", SEED],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        _early = (process, time.monotonic())
    return _early


def stop_quick_run() -> None:
    """At the end of a session that never asked for the run's result (a failure elsewhere with -x)."""
    if _early is not None and _early[0].poll() is None:
        _early[0].terminate()  # chaos.run stops what it started on SIGTERM
        _early[0].communicate(timeout=60)


@pytest.fixture(scope="module")
def quick_run() -> str:
    process, started = start_quick_run()
    try:
        output, _ = process.communicate(timeout=max(1.0, BUDGET_SECONDS - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        process.terminate()
        output, _ = process.communicate(timeout=60)
        pytest.fail(f"chaos.run --quick took over {BUDGET_SECONDS} s\n{output}")
    assert process.returncode == 0, f"chaos.run --quick exited {process.returncode}\n{output}"
    return output


def figure(output: str, label: str) -> int:
    found = re.search(rf"^\s+{re.escape(label)}\s+(\d+)", output, re.MULTILINE)
    assert found, f"no {label!r} line in\n{output}"
    return int(found.group(1))


def test_the_quick_run_injected_every_kind_of_fault(quick_run: str) -> None:
    assert figure(quick_run, "worker SIGKILLs + restarts") >= 2, quick_run
    assert figure(quick_run, "server restarts") == 1, quick_run
    assert figure(quick_run, "duplicate refund starts") >= 1, quick_run
    assert figure(quick_run, "commands delivered twice") >= 1, quick_run
    assert "error_rate 0.1" in quick_run and "tok_timeout" in quick_run, quick_run
    relay = re.search(r"relay SIGKILLs \+ restarts\s+(\d+); NATS restarts (\d+)", quick_run)
    assert relay and int(relay.group(1)) >= 2 and int(relay.group(2)) == 1, quick_run


def test_no_check_of_the_quick_run_found_a_violation(quick_run: str) -> None:
    table = re.findall(r"^(.+?)\s{2,}(\d+)\s{2,}(\d+)$", quick_run, re.MULTILINE)
    checks = {name.strip(): (int(checked), int(violations)) for name, checked, violations in table}
    assert len(checks) >= 8, quick_run
    assert all(violations == 0 for _, violations in checks.values()), quick_run
    assert checks["every flow reached a final status"][0] >= 60, quick_run  # payments, shipping, refunds
    assert checks["stream: every outbox row published exactly once, none parked"][0] > 0, quick_run
    assert "reporting totals == billing's ledger (captured, refunded)" in checks, quick_run
    assert "OK: 0 violation(s)" in quick_run
