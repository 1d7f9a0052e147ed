"""starter.py's verb for the person deploying settleflow (registered from starter.build_parser):

    python starter.py config            # the effective configuration, secrets redacted; exit 2 if invalid
    python starter.py config --json     # the same, machine-readable
    python starter.py config --no-probe # skip the reachability checks (Temporal, NATS, the gateway)

What it checks, each a one-line reason and exit code 2: every setting parses (pydantic),
the Temporal profile loads (`TEMPORAL_CONFIG_FILE`, `TEMPORAL_PROFILE`) and its key or
certificate files exist, the URLs are URLs (database, gateway, NATS, web UI, OTLP
endpoint), a deployment name comes with a build id, and Temporal's address answers a
TCP connect within 2 s. The broker is probed the same way; the payment gateway is asked whose
account its key speaks for (as worker.py does at start-up: a key that cannot say, or another
account than SETTLEFLOW_STRIPE_ACCOUNT, is a problem); a database is not opened (`/readyz` of
a running worker does that).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from adapters.settings import Settings, load
from adapters.stripe_gateway import StripeGateway
from domain.payments.gateway import GatewayRefusedRequest, GatewayUnavailable
from adapters.temporal import connect_config
from integration.stream import settings_or_exit, stream_settings_or_exit

PROBE_TIMEOUT_SECONDS = 2.0
REDACTED = "<redacted>"


def add_verbs(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser("config", parents=[common], help="print the effective configuration (secrets redacted); exit 2 if invalid")
    p.add_argument("--no-probe", action="store_true", help="do not try to reach Temporal, NATS and the payment gateway")
    p.set_defaults(run=show_config)


def load_or_exit() -> Settings:
    """The settings, or one line per invalid variable on stderr and exit code 2."""
    return settings_or_exit("starter.py", load)


def effective(settings: Settings) -> tuple[dict[str, Any], list[str]]:
    """The configuration as printed (secrets redacted) and what is wrong with it."""
    problems: list[str] = []
    temporal: dict[str, Any] = {
        "profile": os.environ.get("TEMPORAL_PROFILE", "default"),
        "config_file": os.environ.get("TEMPORAL_CONFIG_FILE", "~/.config/temporalio/temporal.toml (if present)"),
    }
    try:
        config = connect_config(settings)
    except FileNotFoundError as missing:
        problems.append(f"Temporal TLS: file not found: {missing.filename}")
        config = {"target_host": settings.temporal_address, "namespace": settings.temporal_namespace}
    except Exception as bad:  # noqa: BLE001 - envconfig: a malformed TOML, an unknown profile
        problems.append(f"Temporal profile: {bad}")
        config = {"target_host": settings.temporal_address, "namespace": settings.temporal_namespace}
    tls = config.get("tls")
    temporal |= {
        "address": config["target_host"],
        "namespace": config["namespace"],
        "tls": "mTLS (client certificate)" if getattr(tls, "client_cert", None) else ("on" if tls else "off"),
        "api_key": REDACTED if config.get("api_key") else None,
    }
    if ":" not in str(config["target_host"]):
        problems.append(f"Temporal address {config['target_host']!r}: expected host:port")

    stream = stream_settings_or_exit("starter.py")
    values = settings.model_dump()
    shown: dict[str, Any] = {"temporal": temporal, "settleflow": {}}
    for name, value in values.items():
        if name.startswith("temporal_") and name != "temporal_metrics_address":
            continue  # shown above, as the profile resolved them
        if name == "stripe_api_key":
            value = REDACTED
        elif name == "database_url":
            value, problem = _database(value)
            problems += problem
        shown["settleflow"][name] = value
    shown["settleflow"]["nats_url"] = stream.nats_url

    for name, url, schemes in (
        ("SETTLEFLOW_GATEWAY_URL", settings.gateway_url, ("http", "https")),
        ("SETTLEFLOW_WEB_UI", settings.web_ui, ("http", "https")),
        ("NATS_URL", stream.nats_url, ("nats", "tls", "ws", "wss")),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", settings.otlp_endpoint, ("http", "https")),
    ):
        if url:
            problems += _url(name, url, schemes)
    for name, path in (("TEMPORAL_TLS_CLIENT_CERT_PATH", settings.temporal_tls_cert),
                       ("TEMPORAL_TLS_CLIENT_KEY_PATH", settings.temporal_tls_key)):  # fmt: skip
        if path and not Path(path).is_file():
            problems.append(f"{name}: file not found: {path}")
    if bool(settings.deployment_name) != bool(settings.build_id):
        problems.append("SETTLEFLOW_DEPLOYMENT_NAME and SETTLEFLOW_BUILD_ID go together (worker versioning needs both)")
    return shown, problems


def probe(shown: dict[str, Any], settings: Settings) -> list[str]:
    problems = gateway_account(shown, settings)
    targets = [("Temporal", shown["temporal"]["address"])]
    nats = urlsplit(shown["settleflow"]["nats_url"])
    if nats.hostname:
        targets.append(("NATS", f"{nats.hostname}:{nats.port or 4222}"))
    for what, address in targets:
        host, _, port = str(address).rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_SECONDS):
                pass
        except (OSError, ValueError) as trouble:
            problems.append(f"{what} at {address} unreachable: {trouble}")
    return problems


def gateway_account(shown: dict[str, Any], settings: Settings) -> list[str]:
    """Whose account the gateway's key speaks for, shown; a key that cannot say is a problem."""
    gateway = StripeGateway(settings.stripe_api_key.get_secret_value(), settings.gateway_url,
                            PROBE_TIMEOUT_SECONDS, account_id=settings.stripe_account)
    try:
        shown["settleflow"]["gateway_account"] = gateway.account()
    except GatewayRefusedRequest as refused:
        return [f"the payment gateway's key: {refused}"]
    except GatewayUnavailable as trouble:
        return [f"payment gateway at {settings.gateway_url} unreachable: {trouble}"]
    finally:
        gateway.close()
    return []


def show_config(args: argparse.Namespace, settings: Settings) -> int:
    shown, problems = effective(settings)
    if not problems and not args.no_probe:
        problems = probe(shown, settings)
    if args.json:
        print(json.dumps({**shown, "problems": problems}, indent=2, default=str))
    else:
        for section, values in shown.items():
            print(f"[{section}]")
            for name, value in values.items():
                print(f"  {name:26} {'-' if value is None else value}")
    for problem in problems:
        print(f"starter.py: error: configuration: {problem}", file=sys.stderr)
    return 2 if problems else 0


def _database(url: str) -> tuple[str, list[str]]:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return REDACTED, ["DATABASE_URL is not a database URL (expected e.g. sqlite:///var/settleflow.db)"]
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        return parsed.render_as_string(hide_password=True), [f"DATABASE_URL: unsupported database {parsed.get_backend_name()!r} (sqlite or postgresql)"]
    return parsed.render_as_string(hide_password=True), []


def _url(name: str, url: str, schemes: tuple[str, ...]) -> list[str]:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        return [f"{name}: {url!r} is not a URL ({' or '.join(schemes)}://host[:port])"]
    try:
        parts.port
    except ValueError:
        return [f"{name}: {url!r} has a bad port"]
    return []
