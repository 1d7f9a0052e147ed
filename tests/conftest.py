"""Suite-wide rules."""

from __future__ import annotations

import base64
import os
import tempfile

import pytest

# One dev issuer and one payload key ring for the whole suite and every process it starts
# (workers, starters, the dev server's codec clients): never the developer's var/.
os.environ.setdefault("SETTLEFLOW_DEV_ISSUER_DIR", tempfile.mkdtemp(prefix="settleflow-issuer-"))
os.environ.setdefault("SETTLEFLOW_PAYLOAD_KEYS", "test-1=" + base64.b64encode(b"settleflow-test-payload-key-0001").decode())
os.environ.setdefault("SETTLEFLOW_PAYLOAD_KEY_ID", "test-1")
# A test stack: the dev issuer beside that key ring, on purpose (production refuses the pair).
os.environ.setdefault("SETTLEFLOW_ALLOW_DEV_ISSUER", "1")

pytest_plugins = ["tests.nats_fixtures"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI (SETTLEFLOW_REQUIRE_POSTGRES=1) a PostgreSQL test may not skip: it fails."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and "postgres" in item.keywords and os.environ.get("SETTLEFLOW_REQUIRE_POSTGRES") == "1":
        report.outcome = "failed"
        report.longrepr = f"PostgreSQL test skipped although SETTLEFLOW_REQUIRE_POSTGRES=1: {report.longrepr}"


def _chaos(item: pytest.Item) -> bool:
    return item.get_closest_marker("chaos") is not None


def _in_parallel(config: pytest.Config) -> bool:
    """A process of a parallel run (pytest-xdist, `make test`): it gets a share of the tests."""
    return hasattr(config, "workerinput")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The quick chaos run overlaps the rest of the suite. Alone, the suite starts it at
    collection and asks for its result last (below); in a parallel run its test goes first, so
    that one process waits for it while the other works through the queue."""
    items.sort(key=lambda item: _chaos(item) != _in_parallel(config))  # stable: the rest keeps its order


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the quick chaos run (a process of its own, about 80 s) as soon as it is known
    to be wanted, so it overlaps the rest of the suite instead of adding to it."""
    if session.config.option.collectonly or _in_parallel(session.config):
        return  # in a parallel run, every process collects everything: its test starts it
    if not any(_chaos(item) for item in session.items):
        return
    from tests.chaos.test_quick_chaos_run import start_quick_run

    start_quick_run()


def pytest_sessionfinish(session: pytest.Session) -> None:
    import sys

    chaos = sys.modules.get("tests.chaos.test_quick_chaos_run")
    if chaos is not None:
        chaos.stop_quick_run()
