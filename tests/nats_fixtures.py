"""A real NATS JetStream server for the tests: the venv's nats-server on a free port.

Started once per session (data in a temporary folder), never the machine's own NATS;
each test gets the stream empty and without consumers (`jetstream`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import ServerError

from adapters.nats_server import LocalNatsServer
from integration.stream import STREAM, StreamSettings, connect, ensure_stream


STORE_NOT_CREATED = 10049  # nats-server's JSStreamStoreFailedF


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream_settings(url: str) -> StreamSettings:
    return StreamSettings(NATS_URL=url)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNatsServer]:
    server = LocalNatsServer(free_port(), Path(tmp_path_factory.mktemp("nats")))
    with server:
        yield server


@pytest_asyncio.fixture
async def jetstream(nats_server: LocalNatsServer) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    """A connection with the SETTLEFLOW stream new: empty, no consumers, no message ids remembered."""
    nc = await connect(nats_server.url, name="tests")
    js = nc.jetstream()
    # A new stream each time (deleting drops its consumers too): a purge would keep the
    # duplicate window's memory of ids, and tests reuse deterministic event ids.
    await ensure_stream(js, stream_settings(nats_server.url))
    await js.delete_stream(STREAM)
    await _created_again(js, stream_settings(nats_server.url))
    try:
        yield nc, js
    finally:
        await nc.close()


async def _created_again(js: JetStreamContext, settings: StreamSettings) -> None:
    await made_again(lambda: ensure_stream(js, settings))


async def made_again(make: Callable[[], Awaitable[object]]) -> None:
    """A stream made again right after its deletion. The server removes a deleted stream's
    files in the background, and making one of the same name meanwhile can fail ("error creating
    store for stream", 10049; seen in loaded CI runs): asked again, briefly."""
    for tries_left in range(20, -1, -1):
        try:
            await make()
            return
        except ServerError as trouble:
            if trouble.err_code != STORE_NOT_CREATED or not tries_left:
                raise
            await asyncio.sleep(0.1)


async def stream_messages(js: JetStreamContext) -> list:
    """Every message now on the stream, in stream order (read without a durable consumer)."""
    info = await js.stream_info(STREAM)
    messages = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        messages.append(await js.get_msg(STREAM, seq))
    return messages
