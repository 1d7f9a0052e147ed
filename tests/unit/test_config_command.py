"""`starter.py config`: the effective configuration with secrets redacted, and exit
code 2 with a reason for anything that cannot work (run in-process, no servers)."""

from __future__ import annotations

import json

import pytest

import starter

SECRET = "sk_test_do_not_print_me"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for variable in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_TLS", "TEMPORAL_PROFILE",
                     "TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH", "DATABASE_URL",
                     "SETTLEFLOW_GATEWAY_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "NATS_URL"):  # fmt: skip
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "none.toml"))


def config(capsys, *extra: str) -> tuple[int, dict, str]:
    code = starter.main(["config", "--json", "--no-probe", *extra])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out else {}, err


def test_the_configuration_is_printed_with_every_secret_redacted(capsys, monkeypatch, tmp_path):
    profile = tmp_path / "temporal.toml"
    profile.write_text('[profile.cloud]\naddress = "ns.acct.tmprl.cloud:7233"\nnamespace = "ns.acct"\napi_key = "tcld-secret"\n')
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(profile))
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
    monkeypatch.setenv("STRIPE_API_KEY", SECRET)
    monkeypatch.setenv("DATABASE_URL", "postgresql://settleflow:hunter2@db:5432/settleflow")

    code, shown, err = config(capsys)

    assert code == 0, err
    temporal = shown["temporal"]
    assert (temporal["address"], temporal["namespace"], temporal["tls"]) == ("ns.acct.tmprl.cloud:7233", "ns.acct", "on")
    text = json.dumps(shown)
    assert "tcld-secret" not in text and SECRET not in text and "hunter2" not in text
    assert shown["temporal"]["api_key"] == shown["settleflow"]["stripe_api_key"] == "<redacted>"


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("DATABASE_URL", "not a url", "DATABASE_URL is not a database URL"),
        ("SETTLEFLOW_GATEWAY_URL", "127.0.0.1:8099", "SETTLEFLOW_GATEWAY_URL"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ("TEMPORAL_TLS_CLIENT_CERT_PATH", "/nonexistent/client.pem", "file not found: /nonexistent/client.pem"),
        ("SETTLEFLOW_SHUTDOWN_GRACE_SECONDS", "soon", "SETTLEFLOW_SHUTDOWN_GRACE_SECONDS"),
        ("SETTLEFLOW_DEPLOYMENT_NAME", "settleflow", "go together"),
        ("SETTLEFLOW_STRIPE_ACCOUNT", "my-account", "SETTLEFLOW_STRIPE_ACCOUNT"),
    ],
)
def test_an_invalid_setting_exits_2_naming_it(capsys, monkeypatch, variable, value, reason):
    monkeypatch.setenv(variable, value)
    if "CERT" in variable:
        monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", "/nonexistent/client.key")
    try:
        code = starter.main(["config", "--no-probe"])
    except SystemExit as exit_:  # a setting that does not even parse
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert reason in err


def test_an_unreachable_temporal_address_exits_2(capsys, monkeypatch):
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")  # nothing listens on port 1

    code = starter.main(["config"])

    assert code == 2
    assert "Temporal at 127.0.0.1:1 unreachable" in capsys.readouterr().err


def test_an_empty_declared_stripe_account_declares_none(monkeypatch):
    from adapters.settings import load

    monkeypatch.setenv("SETTLEFLOW_STRIPE_ACCOUNT", "")
    assert load().stripe_account is None
    monkeypatch.setenv("SETTLEFLOW_STRIPE_ACCOUNT", "acct_1Nv0\n")  # a stray newline is not an account id
    with pytest.raises(ValueError, match="SETTLEFLOW_STRIPE_ACCOUNT"):
        load()
