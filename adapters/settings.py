"""Configuration from the environment, the same names for worker, starter, tests and demo.

Defaults work with no settings at all: a local dev server, a SQLite file under
var/, the Stripe simulator on its default port and a mailbox folder.

The payment gateway is Stripe: `SETTLEFLOW_GATEWAY_URL` is the base address the SDK
talks to (the simulator by default; `https://api.stripe.com` or empty for Stripe
itself) and `STRIPE_API_KEY` its secret key (kept as a SecretStr: never printed).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_GATEWAY_PORT = 8099
SIMULATOR_API_KEY = "sk_test_simulator"  # what `python -m simulators.stripe_sim` accepts by default


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
    stripe_api_key: SecretStr = Field(SecretStr(SIMULATOR_API_KEY), validation_alias="STRIPE_API_KEY")
    # The Stripe account the key speaks for. Needed only by a restricted key that may not read
    # its account (GET /v1/account); when given, a key of another account is refused.
    stripe_account: str | None = Field(None, validation_alias="SETTLEFLOW_STRIPE_ACCOUNT", pattern=r"^acct_[A-Za-z0-9]+$")
    mailbox_dir: str = Field("var/mailbox", validation_alias=AliasChoices("SETTLEFLOW_MAILBOX_DIR"))
    web_ui: str = Field("http://localhost:8233", validation_alias="SETTLEFLOW_WEB_UI")

    # Operations (README "Operating settleflow"): the worker's /healthz, /readyz and /metrics,
    # Temporal's SDK metrics, the shutdown grace period and Worker Deployment Versioning.
    ops_host: str = Field("127.0.0.1", validation_alias="SETTLEFLOW_OPS_HOST")
    ops_port: int = Field(9464, validation_alias="SETTLEFLOW_OPS_PORT", ge=0, le=65535)  # 0: not served
    temporal_metrics_address: str = Field("127.0.0.1:9465", validation_alias="SETTLEFLOW_TEMPORAL_METRICS_ADDRESS")
    ready_timeout_seconds: float = Field(2.0, validation_alias="SETTLEFLOW_READY_TIMEOUT_SECONDS", gt=0)
    shutdown_grace_seconds: float = Field(15.0, validation_alias="SETTLEFLOW_SHUTDOWN_GRACE_SECONDS", ge=0)
    deployment_name: str | None = Field(None, validation_alias="SETTLEFLOW_DEPLOYMENT_NAME")
    build_id: str | None = Field(None, validation_alias="SETTLEFLOW_BUILD_ID")
    versioning_behavior: Literal["auto_upgrade", "pinned"] = Field(
        "auto_upgrade", validation_alias="SETTLEFLOW_VERSIONING_BEHAVIOR"
    )
    otlp_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")

    @field_validator("stripe_account", mode="before")
    @classmethod
    def _no_declared_account(cls, value: object) -> object:
        return None if value == "" else value  # SETTLEFLOW_STRIPE_ACCOUNT= (empty) declares none


def load() -> Settings:
    return Settings()
