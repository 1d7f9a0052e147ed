"""Worker for the same-shape raw chain: `python -m bench.raw_worker [--threads 16]`.

Configured like worker.py: connected with `adapters.temporal.connect` (same data
converter, and whatever else production's connection carries), one ThreadPoolExecutor
of --threads (default 16) shared by both workers; the flows worker runs the workflow
and its local activities (max_concurrent_local_activities = threads,
max_concurrent_activities = 1), the activity worker the regular one
(max_concurrent_activities = threads); graceful shutdown 15 s. Prints "worker ready".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.worker import Worker

import bench
from adapters.bytecode import write_bytecode
from adapters.sandbox import SandboxRunner
from adapters.settings import load
from adapters.temporal import connect
from bench.raw_chain import RAW_ACTIVITY_QUEUE, RAW_FLOWS_QUEUE, RawChainWorkflow, noop


async def serve(threads: int) -> None:
    write_bytecode(bench)  # like worker.py: the sandbox imports raw_chain.py afresh for every run
    client = await connect(load())
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="activity") as executor:
        options = {"graceful_shutdown_timeout": timedelta(seconds=15), "activity_executor": executor}
        workers = [
            Worker(client, task_queue=RAW_FLOWS_QUEUE, workflows=[RawChainWorkflow], activities=[noop],
                   workflow_runner=SandboxRunner(),  # like worker.py
                   max_concurrent_local_activities=threads, max_concurrent_activities=1, **options),
            Worker(client, task_queue=RAW_ACTIVITY_QUEUE, activities=[noop],
                   max_concurrent_activities=threads, **options),
        ]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runs = [asyncio.create_task(w.run()) for w in workers]
        print(f"worker ready: {RAW_FLOWS_QUEUE}, {RAW_ACTIVITY_QUEUE}", flush=True)
        await asyncio.wait([asyncio.create_task(stop.wait()), *runs], return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*(w.shutdown() for w in workers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=16)
    asyncio.run(serve(parser.parse_args().threads))
    sys.stdout.flush()
    os._exit(0)  # like worker.py: no interpreter teardown under the SDK's Rust threads


if __name__ == "__main__":
    main()
