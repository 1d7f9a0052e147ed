"""Worker for the baseline: `python -m bench.baseline_worker [--threads 16]`.

Mirrors worker.py's settings: one Worker for the workflow queue, one for the
activity queue with a ThreadPoolExecutor of --threads (default 16, worker.py's
default) and max_concurrent_activities = threads, graceful shutdown 15 s, the
pydantic data converter. Prints "worker ready" like worker.py; stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.worker import Worker

from adapters.settings import load
from adapters.temporal import connect
from bench.baseline import BASELINE_ACTIVITY_QUEUE, BASELINE_FLOWS_QUEUE, BaselineWorkflow, noop


async def serve(threads: int) -> None:
    client = await connect(load())
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="activity") as executor:
        options = {"graceful_shutdown_timeout": timedelta(seconds=15)}
        workers = [
            Worker(client, task_queue=BASELINE_FLOWS_QUEUE, workflows=[BaselineWorkflow], **options),
            Worker(client, task_queue=BASELINE_ACTIVITY_QUEUE, activities=[noop], activity_executor=executor,
                   max_concurrent_activities=threads, **options),
        ]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runs = [asyncio.create_task(w.run()) for w in workers]
        print(f"worker ready: {BASELINE_FLOWS_QUEUE}, {BASELINE_ACTIVITY_QUEUE}", flush=True)
        await asyncio.wait([asyncio.create_task(stop.wait()), *runs], return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*(w.shutdown() for w in workers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=16)
    asyncio.run(serve(parser.parse_args().threads))


if __name__ == "__main__":
    main()
