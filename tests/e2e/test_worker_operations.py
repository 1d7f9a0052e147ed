"""worker.py as an orchestrator sees it: /healthz, /readyz and /metrics on the configured
port, Temporal's SDK metrics on theirs, SIGTERM ends it with exit code 0 within the
grace period; and `starter.py config` is content with a running stack."""

from __future__ import annotations

import subprocess
from pathlib import Path
import sys
import time

import httpx
import pytest

from devstack import ROOT, Stack, free_ports
from tests.e2e.conftest import run, run_json

pytestmark = pytest.mark.e2e

GRACE_SECONDS = 5


def test_a_worker_serves_its_health_and_metrics_and_exits_cleanly_on_sigterm_within_its_grace(stack: Stack):
    ops_port, sdk_port = free_ports(2)
    saved = stack.ops_env
    stack.ops_env = {
        "SETTLEFLOW_OPS_PORT": str(ops_port), "SETTLEFLOW_TEMPORAL_METRICS_ADDRESS": f"127.0.0.1:{sdk_port}",
        "SETTLEFLOW_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
    }  # fmt: skip
    try:
        worker = stack.start_worker()
    finally:
        stack.ops_env = saved
    base = f"http://127.0.0.1:{ops_port}"

    assert httpx.get(f"{base}/healthz").text == "alive\n"
    ready = httpx.get(f"{base}/readyz")
    assert (ready.status_code, ready.json()["checks"]) == (200, {"database": "ok", "temporal": "ok"})
    assert "settleflow_outbox_unpublished" in httpx.get(f"{base}/metrics").text
    assert "temporal_worker_start" in httpx.get(f"http://127.0.0.1:{sdk_port}/metrics").text

    asked = time.monotonic()
    code = stack.stop_process(worker, timeout=GRACE_SECONDS + 10)

    assert code == 0
    assert time.monotonic() - asked < GRACE_SECONDS + 5


def test_the_configuration_of_a_running_stack_is_valid_and_shows_no_secret(stack: Stack):
    shown = run_json(stack, "config")

    assert shown["problems"] == []
    assert shown["temporal"]["address"] == stack.temporal_address
    assert shown["settleflow"]["gateway_account"] == "test:acct_simulator"  # whose key, asked of the gateway
    assert stack.stripe_api_key not in str(shown)


def test_a_stack_pointing_at_a_missing_key_file_is_refused_before_anything_starts(stack: Stack, tmp_path):
    saved = stack.ops_env
    stack.ops_env = {"TEMPORAL_TLS_CLIENT_CERT_PATH": str(tmp_path / "client.pem"),
                     "TEMPORAL_TLS_CLIENT_KEY_PATH": str(tmp_path / "client.key")}  # fmt: skip
    try:
        done = run(stack, "config", expect=2)
    finally:
        stack.ops_env = saved
    assert f"file not found: {tmp_path / 'client.pem'}" in done.stderr


def test_a_worker_whose_key_is_not_the_declared_accounts_refuses_to_start_with_one_line(stack: Stack):
    # Payments keeps, with every request, the account it went to: a worker that cannot say
    # whose key it holds takes no work.
    env = {**stack.env, "SETTLEFLOW_STRIPE_ACCOUNT": "acct_1SomeoneElse", "SETTLEFLOW_OPS_PORT": "0"}
    done = subprocess.run([sys.executable, str(ROOT / "worker.py")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)

    assert done.returncode == 2
    assert "worker.py: error: the payment gateway's key: this Stripe key speaks for acct_simulator, " \
           "not acct_1SomeoneElse (SETTLEFLOW_STRIPE_ACCOUNT)" in done.stderr
    assert "worker ready" not in done.stdout


def refused_start(env: dict[str, str]) -> str:
    """worker.py started with `env`: the one line it refuses with (exit 2, nothing started)."""
    done = subprocess.run([sys.executable, str(ROOT / "worker.py")], cwd=ROOT, env={**env, "SETTLEFLOW_OPS_PORT": "0"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "worker ready" not in done.stdout, done
    [line] = done.stderr.strip().splitlines()
    return line


def test_a_worker_with_production_token_keys_but_no_payload_keys_refuses_to_start_with_one_line(
    stack: Stack, tmp_path: Path,
):
    # Payloads encrypted with this machine's dev key could be read by no other host.
    env = {k: v for k, v in stack.env.items() if not k.startswith("SETTLEFLOW_PAYLOAD_KEY")}
    line = refused_start({**env, "SETTLEFLOW_TOKEN_KEYS": str(tmp_path / "idp.pem")})

    assert line.startswith("worker.py: error: SETTLEFLOW_TOKEN_KEYS is set but SETTLEFLOW_PAYLOAD_KEYS is not")


def test_a_worker_with_production_payload_keys_but_no_token_keys_refuses_to_start_with_one_line(stack: Stack):
    # A deployment that forgot SETTLEFLOW_TOKEN_KEYS would trust the local dev issuer, whose key
    # anyone on the machine can mint with: it fails closed instead.
    line = refused_start({k: v for k, v in stack.env.items() if k != "SETTLEFLOW_ALLOW_DEV_ISSUER"})

    assert line.startswith("worker.py: error: SETTLEFLOW_PAYLOAD_KEYS is set but SETTLEFLOW_TOKEN_KEYS is not")


def test_a_worker_told_to_seal_commands_some_other_way_refuses_to_start_with_one_line(stack: Stack):
    line = refused_start({**stack.env, "SETTLEFLOW_COMMAND_SEALS": "sometimes"})

    assert line == "worker.py: error: SETTLEFLOW_COMMAND_SEALS: Input should be 'require' or 'log'"
