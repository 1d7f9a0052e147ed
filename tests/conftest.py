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

pytest_plugins = ["tests.nats_fixtures"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI (SETTLEFLOW_REQUIRE_POSTGRES=1) a PostgreSQL test may not skip: it fails."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and "postgres" in item.keywords and os.environ.get("SETTLEFLOW_REQUIRE_POSTGRES") == "1":
        report.outcome = "failed"
        report.longrepr = f"PostgreSQL test skipped although SETTLEFLOW_REQUIRE_POSTGRES=1: {report.longrepr}"
