"""Run settleflow's workers.

    python worker.py                      # every task queue
    python worker.py --queue billing --queue payments   # a subset: scale owners separately

Migrations are applied on start. SIGINT / SIGTERM shut down cleanly: no new
tasks are taken, activities in flight get `SETTLEFLOW_SHUTDOWN_GRACE_SECONDS`
(default 15) to finish, and anything left is retried by Temporal on another worker.

Operations (README "Operating settleflow"): /healthz, /readyz and /metrics on
`SETTLEFLOW_OPS_HOST:SETTLEFLOW_OPS_PORT` (127.0.0.1:9464), Temporal's SDK metrics on
`SETTLEFLOW_TEMPORAL_METRICS_ADDRESS` (127.0.0.1:9465), OTLP traces when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set, and Worker Deployment Versioning when
`SETTLEFLOW_DEPLOYMENT_NAME` and `SETTLEFLOW_BUILD_ID` are set.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker, WorkerDeploymentConfig

from activities.registry import OWNER_QUEUES, activities_for
import workflows
from adapters import db, tracing
from adapters.identity import trust_or_exit_with
from adapters.bytecode import write_bytecode
from adapters.sandbox import SandboxRunner
from adapters.metrics import MeasuredGateway
from adapters.ops_server import OpsServer, database_check, temporal_check
from adapters.stripe_gateway import StripeGateway
from adapters.mailbox import FileMailbox
from adapters.settings import SIMULATOR_API_KEY, Settings, load
from adapters.temporal import address_of, connect
from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types
from domain.payments.gateway import GatewayRefusedRequest, GatewayUnavailable
from workflows.registry import FLOWS_QUEUE, WORKFLOWS
from workflows.schedules import ensure_schedules

ALL_QUEUES = (FLOWS_QUEUE, *OWNER_QUEUES)
# Where the payment gateway is asked: payments' and reconciliation's activities, and the flows
# worker, which runs every owner's steps as local activities.
GATEWAY_QUEUES = {FLOWS_QUEUE, "payments", "reconciliation"}
log = logging.getLogger("settleflow.worker")


@dataclass
class Dependencies:
    """What the activities are given: a unit of work per command, the gateway, the mailbox."""

    uow_factory: object
    gateway: StripeGateway | MeasuredGateway  # measured (adapters/metrics.py) in every worker
    mailbox: FileMailbox
    engine: Engine | None = None  # the database the units of work use (disposed by whoever made it)

    @classmethod
    def from_settings(cls, settings: Settings) -> Dependencies:
        return cls.connect(
            settings.database_url, settings.gateway_url, settings.mailbox_dir, settings.gateway_timeout_seconds,
            gateway_api_key=settings.stripe_api_key.get_secret_value(), gateway_account=settings.stripe_account,
        )

    @classmethod
    def connect(
        cls, database_url: str, gateway_url: str, mailbox_dir: str | Path, gateway_timeout_seconds: float = 10.0,
        gateway_api_key: str = SIMULATOR_API_KEY, gateway_account: str | None = None,
    ) -> Dependencies:
        engine = tracing.trace_engine(db.make_engine(database_url))
        aggregates = default_aggregate_types()
        return cls(
            uow_factory=lambda: SqlUnitOfWork(engine, aggregates),
            gateway=MeasuredGateway(
                StripeGateway(gateway_api_key, gateway_url, gateway_timeout_seconds, account_id=gateway_account)
            ),
            mailbox=FileMailbox(mailbox_dir),
            engine=engine,
        )


def build_workers(
    client: Client, deps: Dependencies, queues: list[str], executor: ThreadPoolExecutor, **options
) -> list[Worker]:
    workers = []
    for queue in queues:
        if queue == FLOWS_QUEUE:
            # The process managers, and every owner's activities for the steps they run
            # as local activities (Step.local): those never leave this worker.
            local = [
                a
                for owner in OWNER_QUEUES
                for a in activities_for(owner, deps.uow_factory, deps.gateway, deps.mailbox, client)
            ]
            workers.append(
                Worker(
                    client,
                    task_queue=queue,
                    workflows=WORKFLOWS,
                    workflow_runner=SandboxRunner(),  # Temporal's sandbox, its entry code compiled once
                    activities=local,
                    activity_executor=executor,
                    max_concurrent_local_activities=executor._max_workers,
                    max_concurrent_activities=1,  # nothing is scheduled on this queue remotely
                    **options,
                )
            )
        else:
            workers.append(
                Worker(
                    client,
                    task_queue=queue,
                    activities=activities_for(queue, deps.uow_factory, deps.gateway, deps.mailbox, client),
                    activity_executor=executor,
                    max_concurrent_activities=executor._max_workers,
                    **options,
                )
            )
    return workers


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run settleflow workers (all task queues by default).")
    parser.add_argument(
        "--queue",
        action="append",
        choices=ALL_QUEUES,
        help="serve only this task queue (repeatable); default: all of them",
    )
    parser.add_argument("--threads", type=int, default=16, help="threads for activities (default 16)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def deployment_options(settings: Settings) -> dict:
    """Worker Deployment Versioning when a deployment name and build id are set (README:
    "Shipping a change to a workflow"); otherwise unversioned workers, as before."""
    if not (settings.deployment_name and settings.build_id):
        return {}
    behavior = {"auto_upgrade": VersioningBehavior.AUTO_UPGRADE, "pinned": VersioningBehavior.PINNED}
    return {
        "deployment_config": WorkerDeploymentConfig(
            version=WorkerDeploymentVersion(settings.deployment_name, settings.build_id),
            use_worker_versioning=True,
            default_versioning_behavior=behavior[settings.versioning_behavior],
        )
    }


def runtime_for(settings: Settings) -> Runtime | None:
    """Temporal's SDK metrics (task latencies, slots, polls) on their own Prometheus endpoint."""
    if not settings.temporal_metrics_address:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=settings.temporal_metrics_address)))


async def run_until_stopped(workers: list[Worker], stop: asyncio.Event) -> None:
    """Run the workers until `stop` is set (or one fails), then shut them all down:
    polling stops, activities in flight finish within the workers' grace period."""
    runs = [asyncio.create_task(w.run()) for w in workers]
    await asyncio.wait([asyncio.create_task(stop.wait()), *runs], return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down: activities in flight get their grace period to finish")
    await asyncio.gather(*(w.shutdown() for w in workers))
    for run in runs:
        if run.done() and not run.cancelled() and run.exception():
            raise run.exception()


async def know_the_gateway_account(gateway: StripeGateway | MeasuredGateway) -> None:
    """Payments keeps, with every request, the account it went to: a key that cannot say whose
    it is (a wrong key, a restricted key without SETTLEFLOW_STRIPE_ACCOUNT, another account
    than the declared one) stops the worker before it takes any work. A gateway not reachable
    yet is asked again when the first request goes out."""
    try:
        account = await asyncio.to_thread(gateway.account)
    except GatewayRefusedRequest as refused:
        print(f"worker.py: error: the payment gateway's key: {refused}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except GatewayUnavailable as unreachable:
        log.warning("the payment gateway cannot say yet whose account its key is (%s): asked again later", unreachable)
        return
    log.info("payments go to gateway account %s", account)


def trust_or_exit() -> None:
    """Refuse to start where tokens could not be trusted (README "Security"), and say plainly
    when a worker trusts the local dev issuer."""
    trust = trust_or_exit_with("worker.py")
    if refused := trust.dev_issuer_refused or trust.payload_keys_missing:
        print(f"worker.py: error: {refused}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    if trust.dev_mode:
        log.warning("dev mode: tokens signed by the local dev issuer (%s) are trusted; "
                    "production sets SETTLEFLOW_TOKEN_KEYS", trust.dev_dir)


async def serve(args: argparse.Namespace) -> None:
    trust_or_exit()
    settings = load()
    write_bytecode(workflows)  # the sandbox imports a flow's module afresh for every run
    tracing.setup("settleflow-worker")
    db.upgrade(settings.database_url)
    deps = Dependencies.from_settings(settings)
    queues = args.queue or list(ALL_QUEUES)
    if set(queues) & GATEWAY_QUEUES:
        await know_the_gateway_account(deps.gateway)
    client = await connect(settings, runtime=runtime_for(settings))
    if FLOWS_QUEUE in queues:
        # The reconciliation schedules exist wherever the flows run; an existing one is kept as is.
        created = await ensure_schedules(client)
        log.info("reconciliation schedules: %s", ", ".join(created) + " created" if created else "already there")
    ops = OpsServer(
        settings.ops_host, settings.ops_port, metrics_engine=deps.engine, timeout=settings.ready_timeout_seconds,
        checks={"database": database_check(deps.engine), "temporal": temporal_check(client, settings.ready_timeout_seconds)},
    )  # fmt: skip
    if settings.ops_port:
        await ops.start()
    with ThreadPoolExecutor(max_workers=args.threads, thread_name_prefix="activity") as executor:
        workers = build_workers(
            client, deps, queues, executor,
            graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_grace_seconds),
            **deployment_options(settings),
        )  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("serving %s on %s (namespace %s), payments through Stripe at %s", ", ".join(queues),
                 *address_of(settings), deps.gateway.api_base)
        # What is loaded by now (modules, pydantic schemas, the workers) lives as long as the
        # process: frozen, the garbage collector stops walking it in every full collection (a
        # third of the worker's collection time under load, README "Performance"). The price: a
        # start-up object that later becomes cyclic garbage stays, a bounded few.
        gc.collect()
        gc.freeze()
        print(f"worker ready: {', '.join(queues)}", flush=True)
        await run_until_stopped(workers, stop)
    await ops.stop()
    deps.gateway.close()
    tracing.flush()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The Stripe SDK and httpx log every request at INFO (four lines per refund); the gateway's
    # metrics and trace spans already count and time each call (README "Operating settleflow").
    for chatty in ("stripe", "httpx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    asyncio.run(serve(args))
    # Exit without interpreter teardown: the Temporal client's Rust threads can make
    # CPython abort while finalizing (temporalio/sdk-python#300) after a clean shutdown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
