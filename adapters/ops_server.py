"""The operations endpoint a process serves next to its work (worker, relay):

    GET /healthz   200 "alive" while the process's event loop answers (liveness)
    GET /readyz    200 when every dependency answers, else 503 with which one did not:
                   the database (SELECT 1), Temporal (gRPC health check), NATS (a connect)
    GET /metrics   settleflow's Prometheus metrics (adapters/metrics.py)

Each check has its own timeout (`SETTLEFLOW_READY_TIMEOUT_SECONDS`, default 2 s) so a
hung dependency makes /readyz answer 503, never hang. Served by uvicorn inside the
process's own event loop; uvicorn's signal handling is switched off so SIGTERM stays
the process's (the worker drains activities on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import uvicorn
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from adapters.metrics import exposition

log = logging.getLogger("settleflow.ops")

Check = Callable[[], Awaitable[None]]  # raises when the dependency is not reachable


def database_check(engine: Engine) -> Check:
    def probe() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    async def check() -> None:
        await asyncio.to_thread(probe)

    return check


def temporal_check(client, timeout: float) -> Check:  # client: temporalio.client.Client
    async def check() -> None:
        if not await client.service_client.check_health(timeout=timedelta(seconds=timeout)):
            raise RuntimeError("Temporal reports not serving")

    return check


def nats_check(url: str, timeout: float) -> Check:
    async def check() -> None:
        import nats

        nc = await nats.connect(url, connect_timeout=timeout, allow_reconnect=False, max_reconnect_attempts=0)
        await nc.close()

    return check


@dataclass
class OpsServer:
    host: str
    port: int
    checks: dict[str, Check] = field(default_factory=dict)
    metrics_engine: Engine | None = None  # the database the business gauges read
    timeout: float = 2.0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task | None = None

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/healthz", self.healthz), Route("/readyz", self.readyz), Route("/metrics", self.metrics),
        ])  # fmt: skip

    async def healthz(self, _: Request) -> Response:
        return PlainTextResponse("alive\n")

    async def readyz(self, _: Request) -> Response:
        results = await asyncio.gather(*(self._run(name, check) for name, check in self.checks.items()))
        report = dict(zip(self.checks, results, strict=True))
        ready = all(answer == "ok" for answer in report.values())
        return JSONResponse({"ready": ready, "checks": report}, status_code=200 if ready else 503)

    async def _run(self, name: str, check: Check) -> str:
        try:
            await asyncio.wait_for(check(), self.timeout)
            return "ok"
        except Exception as trouble:  # noqa: BLE001 - any failure means not ready, with its reason
            log.warning("readyz: %s not reachable: %s", name, trouble or type(trouble).__name__)
            return f"{type(trouble).__name__}: {trouble}"[:300]

    async def metrics(self, _: Request) -> Response:
        body = await asyncio.to_thread(exposition, self.metrics_engine)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def start(self) -> None:
        config = uvicorn.Config(self.app(), host=self.host, port=self.port, log_level="warning", lifespan="off")
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # e.g. the port is taken: raise it
                raise RuntimeError(f"ops endpoint on {self.host}:{self.port} did not start")
            await asyncio.sleep(0.02)
        log.info("ops endpoint on http://%s:%d (/healthz /readyz /metrics)", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the process keeps its own SIGTERM handling
        yield
