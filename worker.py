"""Run settleflow's workers.

    python worker.py                      # every task queue
    python worker.py --queue billing --queue payments   # a subset: scale owners separately

Migrations are applied on start. SIGINT / SIGTERM shut down cleanly: no new
tasks are taken, activities in flight get time to finish, and anything left is
retried by Temporal on another worker.
"""

from __future__ import annotations

import argparse
import asyncio
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
from temporalio.worker import Worker

from activities.registry import OWNER_QUEUES, activities_for
from adapters import db
from adapters.stripe_gateway import StripeGateway
from adapters.mailbox import FileMailbox
from adapters.settings import SIMULATOR_API_KEY, Settings, load
from adapters.temporal import connect
from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types
from workflows.registry import FLOWS_QUEUE, WORKFLOWS
from workflows.schedules import ensure_schedules

ALL_QUEUES = (FLOWS_QUEUE, *OWNER_QUEUES)
log = logging.getLogger("settleflow.worker")


@dataclass
class Dependencies:
    """What the activities are given: a unit of work per command, the gateway, the mailbox."""

    uow_factory: object
    gateway: StripeGateway
    mailbox: FileMailbox
    engine: Engine | None = None  # the database the units of work use (disposed by whoever made it)

    @classmethod
    def from_settings(cls, settings: Settings) -> Dependencies:
        return cls.connect(
            settings.database_url, settings.gateway_url, settings.mailbox_dir, settings.gateway_timeout_seconds,
            gateway_api_key=settings.stripe_api_key.get_secret_value(),
        )

    @classmethod
    def connect(
        cls, database_url: str, gateway_url: str, mailbox_dir: str | Path, gateway_timeout_seconds: float = 10.0,
        gateway_api_key: str = SIMULATOR_API_KEY,
    ) -> Dependencies:
        engine = db.make_engine(database_url)
        aggregates = default_aggregate_types()
        return cls(
            uow_factory=lambda: SqlUnitOfWork(engine, aggregates),
            gateway=StripeGateway(gateway_api_key, gateway_url, gateway_timeout_seconds),
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


async def serve(args: argparse.Namespace) -> None:
    settings = load()
    db.upgrade(settings.database_url)
    deps = Dependencies.from_settings(settings)
    client = await connect(settings)
    queues = args.queue or list(ALL_QUEUES)
    if FLOWS_QUEUE in queues:
        # The reconciliation schedules exist wherever the flows run; an existing one is kept as is.
        created = await ensure_schedules(client)
        log.info("reconciliation schedules: %s", ", ".join(created) + " created" if created else "already there")
    with ThreadPoolExecutor(max_workers=args.threads, thread_name_prefix="activity") as executor:
        workers = build_workers(
            client, deps, queues, executor, graceful_shutdown_timeout=timedelta(seconds=15)
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runs = [asyncio.create_task(w.run()) for w in workers]
        log.info("serving %s on %s (namespace %s), payments through Stripe at %s", ", ".join(queues),
                 settings.temporal_address, settings.temporal_namespace, deps.gateway.api_base)
        print(f"worker ready: {', '.join(queues)}", flush=True)
        done, _ = await asyncio.wait([asyncio.create_task(stop.wait()), *runs], return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down")
        await asyncio.gather(*(w.shutdown() for w in workers))
        for run in runs:
            if run.done() and run.exception():
                raise run.exception()
    deps.gateway.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))
    # Exit without interpreter teardown: the Temporal client's Rust threads can make
    # CPython abort while finalizing (temporalio/sdk-python#300) after a clean shutdown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
