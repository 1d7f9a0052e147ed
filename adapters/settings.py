"""Configuration from the environment, the same names for worker, starter, tests and demo.

Defaults work with no settings at all: a local dev server, a SQLite file under
var/, the gateway simulator on its default port and a mailbox folder.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_GATEWAY_PORT = 8099


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    temporal_address: str = Field("localhost:7233", validation_alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field("default", validation_alias="TEMPORAL_NAMESPACE")
    temporal_api_key: str | None = Field(None, validation_alias="TEMPORAL_API_KEY")
    temporal_tls: bool = Field(False, validation_alias="TEMPORAL_TLS")
    temporal_tls_cert: str | None = Field(None, validation_alias="TEMPORAL_TLS_CLIENT_CERT_PATH")
    temporal_tls_key: str | None = Field(None, validation_alias="TEMPORAL_TLS_CLIENT_KEY_PATH")
    database_url: str = Field("sqlite:///var/settleflow.db", validation_alias="DATABASE_URL")
    gateway_url: str = Field(f"http://127.0.0.1:{DEFAULT_GATEWAY_PORT}", validation_alias="SETTLEFLOW_GATEWAY_URL")
    gateway_timeout_seconds: float = Field(10.0, validation_alias="SETTLEFLOW_GATEWAY_TIMEOUT")
    mailbox_dir: str = Field("var/mailbox", validation_alias=AliasChoices("SETTLEFLOW_MAILBOX_DIR"))
    web_ui: str = Field("http://localhost:8233", validation_alias="SETTLEFLOW_WEB_UI")


def load() -> Settings:
    return Settings()
