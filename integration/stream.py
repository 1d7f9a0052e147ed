"""The broker side of the contracts: NATS JetStream, one stream for every public event.

Stream `SETTLEFLOW` holds subjects `settleflow.>` (`settleflow.<owner>.<event>`).
Its limits are settings (environment variables), created idempotently by whoever
connects first -- the relay, a consumer, devstack -- and updated when they change:

| setting | variable | default |
|---|---|---|
| server(s) | `NATS_URL` | `nats://127.0.0.1:4333` (devstack's local server) |
| retention | `SETTLEFLOW_STREAM_RETENTION` | `limits`, the only one accepted (messages stay for every consumer until max age / size; `interest` and `workqueue` delete what no consumer holds yet) |
| max age | `SETTLEFLOW_STREAM_MAX_AGE_DAYS` | 30 |
| max size | `SETTLEFLOW_STREAM_MAX_BYTES` | 1 GiB |
| duplicate window | `SETTLEFLOW_STREAM_DUPLICATE_WINDOW_SECONDS` | 600 (a message id seen within it is dropped) |
| replicas | `SETTLEFLOW_STREAM_REPLICAS` | 1 (3 on a real cluster) |
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Literal, TypeVar

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("settleflow.nats")
T = TypeVar("T")

STREAM = "SETTLEFLOW"
SUBJECTS = ["settleflow.>"]
DEFAULT_NATS_PORT = 4333  # not 4222: a NATS someone else runs on this machine is never used by accident
DEFAULT_NATS_URL = f"nats://127.0.0.1:{DEFAULT_NATS_PORT}"


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    nats_url: str = Field(DEFAULT_NATS_URL, validation_alias="NATS_URL")
    # Only `limits`: consumers join late and reporting rebuilds from the stream, and `interest` or
    # `workqueue` retention deletes what no consumer holds yet (and what a recreated one would read).
    retention: Literal["limits"] = Field("limits", validation_alias="SETTLEFLOW_STREAM_RETENTION")
    max_age_days: float = Field(30, validation_alias="SETTLEFLOW_STREAM_MAX_AGE_DAYS", gt=0)
    max_bytes: int = Field(1 << 30, validation_alias="SETTLEFLOW_STREAM_MAX_BYTES", gt=0)
    duplicate_window_seconds: float = Field(600, validation_alias="SETTLEFLOW_STREAM_DUPLICATE_WINDOW_SECONDS", gt=0)
    replicas: int = Field(1, validation_alias="SETTLEFLOW_STREAM_REPLICAS", ge=1, le=5)

    def stream_config(self) -> StreamConfig:
        return StreamConfig(
            name=STREAM,
            subjects=SUBJECTS,
            retention=RetentionPolicy(self.retention),
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self.max_age_days * 86_400,
            max_bytes=self.max_bytes,
            duplicate_window=self.duplicate_window_seconds,
            num_replicas=self.replicas,
        )


async def connect(url: str, *, name: str, connect_timeout: float = 2.0) -> Client:
    """A connection that reconnects forever once it was up (the caller retries the first one)."""

    async def trouble(error: Exception) -> None:  # one line, not nats-py's default traceback
        log.debug("nats %s: %s: %s", name, type(error).__name__, error)

    return await nats.connect(
        url,
        name=name,
        error_cb=trouble,
        connect_timeout=connect_timeout,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
    )


def settings_or_exit(prog: str, load: Callable[[], T]) -> T:
    """Settings read from the environment, or one line per invalid variable on stderr and exit code 2."""
    try:
        return load()
    except ValidationError as invalid:
        for error in invalid.errors():
            variable = ".".join(str(part) for part in error["loc"])
            print(f"{prog}: error: configuration: {variable}: {error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def stream_settings_or_exit(prog: str) -> StreamSettings:
    return settings_or_exit(prog, StreamSettings)


class StreamMisconfigured(Exception):
    """The stream exists with settings settleflow cannot keep its guarantees on."""


async def ensure_stream(js: JetStreamContext, settings: StreamSettings, *, owner: bool = False) -> None:
    """Create the stream when it is missing. Only its owner, the relay that publishes to it,
    brings an existing one to its settings: a consumer started with other limits (or none set)
    would otherwise shrink them on every reconnect, and JetStream drops what no longer fits."""
    config = settings.stream_config()
    try:
        info = await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(config)
        return
    retention = getattr(info.config.retention, "value", info.config.retention)  # nats-py reads it back as text
    if retention not in (None, RetentionPolicy.LIMITS.value):
        # JetStream cannot change it in place, and reading such a stream loses events.
        raise StreamMisconfigured(
            f"stream {STREAM} keeps messages by {retention} retention, which deletes events "
            "no consumer holds yet: recreate it with limits retention"
        )
    if owner:
        await js.update_stream(config)
