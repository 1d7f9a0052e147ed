"""Connecting to Temporal: the same data converter, tracing and settings everywhere.

Where to connect comes from Temporal's environment-configuration profiles
(`temporalio.envconfig`): the TOML file named by `TEMPORAL_CONFIG_FILE` (default
`~/.config/temporalio/temporal.toml`), the profile named by `TEMPORAL_PROFILE`
(default `default`), then the `TEMPORAL_*` environment variables over it
(`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS`,
`TEMPORAL_TLS_CLIENT_CERT_PATH`, `TEMPORAL_TLS_CLIENT_KEY_PATH`, ...). The same code
reaches the dev server (no file: localhost:7233), a self-hosted cluster with mTLS
(a profile with `[profile.x.tls]` cert and key paths) or Temporal Cloud (a profile
with `api_key`; TLS is then on). Values set on the Settings object in code (tests,
`starter.py --address`) win over the profile.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowUpdateInput,
    TLSConfig,
    WorkflowUpdateHandle,
)
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from adapters.codec import data_converter
from adapters.seal import SealsCommands
from adapters.settings import Settings

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"


def connect_config(settings: Settings) -> dict[str, Any]:
    """Client.connect's arguments: the envconfig profile, then what the settings say."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", DEFAULT_ADDRESS)
    config.setdefault("namespace", DEFAULT_NAMESPACE)
    given = settings.model_fields_set
    if "temporal_address" in given:
        config["target_host"] = settings.temporal_address
    if "temporal_namespace" in given:
        config["namespace"] = settings.temporal_namespace
    if settings.temporal_api_key:
        config["api_key"] = settings.temporal_api_key
        config.setdefault("tls", True)
    if settings.temporal_tls:
        config.setdefault("tls", True)
    if settings.temporal_tls_cert and settings.temporal_tls_key:
        config["tls"] = TLSConfig(
            client_cert=Path(settings.temporal_tls_cert).read_bytes(),
            client_private_key=Path(settings.temporal_tls_key).read_bytes(),
        )
    return config


class AddressUpdates(Interceptor):
    """Every Update argument that names the flow it is for (`to_flow`, workflows/messages.py
    `AddressedUpdate`) is addressed to the workflow the client sends it to, unless the caller
    did: the flow refuses an argument addressed elsewhere, so one lifted from another flow's
    history cannot decide in it."""

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _AddressingOutbound(next)


class _AddressingOutbound(OutboundInterceptor):
    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> WorkflowUpdateHandle[Any]:
        input.args = [
            arg.model_copy(update={"to_flow": input.id}) if getattr(arg, "to_flow", None) == "" else arg
            for arg in input.args
        ]
        return await super().start_workflow_update(input)


async def connect(
    settings: Settings, runtime: Runtime | None = None, interceptors: Sequence[Interceptor] = ()
) -> Client:
    config = connect_config(settings)
    return await Client.connect(
        **config,
        data_converter=data_converter(),  # encrypted payloads (adapters/codec.py)
        interceptors=[TracingInterceptor(), AddressUpdates(), SealsCommands(), *interceptors],
        runtime=runtime,
    )


def address_of(settings: Settings) -> tuple[str, str]:
    """The address and namespace connect() would use (for messages and `starter.py config`)."""
    try:
        config = connect_config(settings)
    except OSError:  # a key file that is not there: connect() will say so
        return settings.temporal_address, settings.temporal_namespace
    return config["target_host"], config["namespace"]


def ui_link(settings: Settings, workflow_id: str) -> str:
    return f"{settings.web_ui}/namespaces/{address_of(settings)[1]}/workflows/{workflow_id}"
