"""Connecting to Temporal: the same data converter and settings everywhere."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client, TLSConfig

from adapters.codec import data_converter
from adapters.settings import Settings


async def connect(settings: Settings) -> Client:
    tls: TLSConfig | bool = settings.temporal_tls or bool(settings.temporal_api_key)
    if settings.temporal_tls_cert and settings.temporal_tls_key:
        tls = TLSConfig(
            client_cert=Path(settings.temporal_tls_cert).read_bytes(),
            client_private_key=Path(settings.temporal_tls_key).read_bytes(),
        )
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key,
        tls=tls,
        data_converter=data_converter(),  # encrypted payloads (adapters/codec.py)
    )


def ui_link(settings: Settings, workflow_id: str) -> str:
    return f"{settings.web_ui}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"
