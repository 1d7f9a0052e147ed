"""/readyz answers 503 while the database cannot be reached and 200 again once it can;
/healthz stays 200 throughout (the process is alive, only a dependency is not).
PostgreSQL behind a TCP relay the test can cut, as a network partition would."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from sqlalchemy.engine import make_url

from adapters import db
from adapters.ops_server import OpsServer, database_check


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cable:
    """A TCP relay to the database; cut() closes it and every connection through it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def plug(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        self.server.close()
        await self.server.wait_closed()
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def _relay(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def pipe(src, dst) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.mark.postgres
async def test_readyz_fails_while_the_database_is_unreachable_and_recovers(postgres_server_url):
    server = make_url(db.normalise_url(postgres_server_url))
    cable = Cable(server.host or "127.0.0.1", server.port or 5432)
    await cable.plug()
    engine = db.make_engine(server.set(host="127.0.0.1", port=cable.port).render_as_string(hide_password=False))
    ops = OpsServer("127.0.0.1", free_port(), checks={"database": database_check(engine)}, timeout=2.0)
    await ops.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops.port}") as http:
            assert (await http.get("/readyz")).status_code == 200

            await cable.cut()
            gone = await http.get("/readyz")
            assert gone.status_code == 503
            assert gone.json()["checks"]["database"] != "ok"
            assert (await http.get("/healthz")).status_code == 200

            await cable.plug()
            back = await http.get("/readyz")
            assert back.status_code == 200, back.json()
    finally:
        await ops.stop()
        await cable.cut()
        engine.dispose()
