"""Suite-wide rules."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.nats_fixtures"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI (SETTLEFLOW_REQUIRE_POSTGRES=1) a PostgreSQL test may not skip: it fails."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and "postgres" in item.keywords and os.environ.get("SETTLEFLOW_REQUIRE_POSTGRES") == "1":
        report.outcome = "failed"
        report.longrepr = f"PostgreSQL test skipped although SETTLEFLOW_REQUIRE_POSTGRES=1: {report.longrepr}"
