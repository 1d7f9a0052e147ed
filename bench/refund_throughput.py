"""Refund throughput benchmark: `python -m bench.refund_throughput [--n 30] [--workers 1|2|both]`.

One run starts a private stack (Temporal dev server, gateway simulator, worker.py
processes) in a temporary directory, prepares delivered and paid orders, then measures:

  1. N happy-path refunds end to end (all started at once): refunds/s, p50/p95 latency;
  2. a baseline workflow with the same number of sequential no-op activity calls;
  3. database rows and history events per refund at N and at 4N;
  4. throughput with one worker.py process and with two.

Everything is printed; nothing is asserted. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from adapters.codec import data_converter

from demo import WAREHOUSE, status_when
from devstack import READY_LINE, Stack
from domain.shared.actor import Actor, Role
from domain.shared.money import Money
from workflows.payment import OrderRequest, PaymentWorkflow
from workflows.process import FLOWS_QUEUE
from workflows.refund import RefundRequest, RefundWorkflow
from workflows.shipping import ConfirmDeliveryWorkflow, DeliveryRequest, ShipmentRequest, ShipOrderWorkflow

from bench.baseline import BASELINE_FLOWS_QUEUE, BaselineWorkflow
from bench.profile import Profiler, summarize
from bench.relay import RelayBench
from adapters.identity import signed

THREADS = 16  # worker.py's default --threads; the baseline worker gets the same
LOCAL_ACTIVITY_MARKER = "core_local_activity"  # the SDK's marker for a local activity's result
WARMUP = 3  # refunds / baseline workflows run (and not counted) before each measurement
PREP_CONCURRENCY = 40  # orders prepared at once


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


@dataclass
class Run:
    label: str
    n: int
    workers: int
    seconds: float
    latencies: list[float]
    statuses: dict[str, int] = field(default_factory=dict)
    outbox_per: list[int] = field(default_factory=list)
    inbox_per: list[int] = field(default_factory=list)
    history_per: list[int] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per part during the run

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]  # nearest rank


class Bench:
    def __init__(self, stack: Stack, client: Client, tag: str) -> None:
        self.stack = stack
        self.client = client
        self.tag = tag
        self.db_path = stack.database_url.removeprefix("sqlite:///")
        self._orders = 0
        self.last_ids: list[str] = []

    # -- preparing delivered, paid orders ---------------------------------------------------
    async def prepare_order(self) -> tuple[str, str]:
        self._orders += 1
        i = self._orders
        order_id, customer = f"{self.tag}-o{i}", f"{self.tag}-c{i}"  # one customer per order: fraud clears it
        payment = await self.client.start_workflow(
            PaymentWorkflow,
            OrderRequest(order_id=order_id, customer_id=customer, amount=Money.of("120.00", "EUR"),
                         card_token="tok_visa", placed_by=Actor(role=Role.CUSTOMER, id=customer), **signed(Actor(role=Role.CUSTOMER, id=customer))),
            id=f"payment-{order_id}", task_queue=FLOWS_QUEUE,
        )
        view = await status_when(payment, lambda s: s != "capturing", timeout=120, interval=0.5)
        if view["status"] != "paid":
            raise RuntimeError(f"{order_id}: payment ended {view['status']}, not paid")
        await (await self.client.start_workflow(
            ShipOrderWorkflow, ShipmentRequest(order_id=order_id, tracking=f"TRK-{order_id}", requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            id=f"ship-{order_id}", task_queue=FLOWS_QUEUE)).result()
        await (await self.client.start_workflow(
            ConfirmDeliveryWorkflow, DeliveryRequest(order_id=order_id, requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            id=f"deliver-{order_id}", task_queue=FLOWS_QUEUE)).result()
        return order_id, customer

    async def prepare(self, count: int) -> list[tuple[str, str]]:
        gate = asyncio.Semaphore(PREP_CONCURRENCY)

        async def one() -> tuple[str, str]:
            async with gate:
                return await self.prepare_order()

        started = time.monotonic()
        orders = await asyncio.gather(*(one() for _ in range(count)))
        log(f"prepared {count} delivered, paid orders in {time.monotonic() - started:.1f} s")
        return list(orders)

    # -- refunds ---------------------------------------------------------------------------------
    async def refunds(self, label: str, orders: list[tuple[str, str]], workers: int,
                      profiler: Profiler | None = None) -> Run:
        async def one(order_id: str, customer: str) -> tuple[float, str, str]:
            refund_id = f"{order_id}-r"
            t0 = time.monotonic()
            handle = await self.client.start_workflow(
                RefundWorkflow,
                RefundRequest(refund_id=refund_id, order_id=order_id, amount=Money.of("20.00", "EUR"),
                              reason="bench", requested_by=Actor(role=Role.CUSTOMER, id=customer), **signed(Actor(role=Role.CUSTOMER, id=customer))),
                id=f"refund-{refund_id}", task_queue=FLOWS_QUEUE,
            )
            result = await handle.result()
            return time.monotonic() - t0, result.status, handle.id

        cpu0 = cpu_by_kind(self.stack)
        started = time.monotonic()
        if profiler:
            with profiler:
                done = await asyncio.gather(*(one(o, c) for o, c in orders))
        else:
            done = await asyncio.gather(*(one(o, c) for o, c in orders))
        seconds = time.monotonic() - started
        run = Run(label, len(orders), workers, seconds, [d[0] for d in done])
        run.cpu = cpu_delta(cpu0, cpu_by_kind(self.stack))
        for _, status, _ in done:
            run.statuses[status] = run.statuses.get(status, 0) + 1
        ids = self.last_ids = [d[2] for d in done]
        run.history_per = await self.history_lengths(ids)
        run.outbox_per, run.inbox_per = self.rows_per(ids)
        log(f"{label}: {run.n} refunds in {seconds:.1f} s = {run.rate:.2f}/s, statuses {run.statuses}")
        return run

    async def history_lengths(self, workflow_ids: list[str]) -> list[int]:
        gate = asyncio.Semaphore(20)

        async def one(wid: str) -> int:
            async with gate:
                return len((await self.client.get_workflow_handle(wid).fetch_history()).events)

        return list(await asyncio.gather(*(one(w) for w in workflow_ids)))

    def rows_per(self, workflow_ids: list[str]) -> tuple[list[int], list[int]]:
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            outbox = [db.execute("SELECT count(*) FROM outbox WHERE causation_id LIKE ?", (f"{w}/%",)).fetchone()[0]
                      for w in workflow_ids]
            inbox = [db.execute("SELECT count(*) FROM processed_commands WHERE command_id LIKE ?",
                                (f"{w}/%",)).fetchone()[0] for w in workflow_ids]
        return outbox, inbox

    async def activity_calls(self, workflow_id: str) -> int:
        """Activity calls in one refund: scheduled activities plus local activities (one marker each)."""
        history = await self.client.get_workflow_handle(workflow_id).fetch_history()
        return sum(1 for e in history.events
                   if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                   or (e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
                       and e.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER))

    # -- baseline --------------------------------------------------------------------------------
    async def baseline(self, label: str, n: int, calls: int, workers: int) -> Run:
        async def one(i: int) -> float:
            t0 = time.monotonic()
            handle = await self.client.start_workflow(
                BaselineWorkflow.run, calls, id=f"baseline-{self.tag}-{label}-{i}", task_queue=BASELINE_FLOWS_QUEUE)
            done = await handle.result()
            assert done == calls
            return time.monotonic() - t0

        cpu0 = cpu_by_kind(self.stack)
        started = time.monotonic()
        latencies = await asyncio.gather(*(one(i) for i in range(n)))
        run = Run(label, n, workers, time.monotonic() - started, list(latencies))
        run.cpu = cpu_delta(cpu0, cpu_by_kind(self.stack))
        run.history_per = await self.history_lengths([f"baseline-{self.tag}-{label}-{i}" for i in range(n)])
        log(f"{label}: {n} baseline workflows in {run.seconds:.1f} s = {run.rate:.2f}/s")
        return run


FOREIGN: list[str] = []  # other stacks' processes seen when ours came up
TICK = os.sysconf("SC_CLK_TCK")


def cpu_by_kind(stack: Stack) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each kind of part this stack started (summed over
    each part's process group), plus this benchmark process itself ("client")."""
    groups = {m.process.pid: m.kind for m in stack.managed}
    used: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = groups.get(int(fields[2]))  # fields[2] = pgrp
        if kind:
            used[kind] = used.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    own = os.times()
    used["client"] = own.user + own.system
    return used


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in ("temporal", "worker", "gateway", "client")}


def start_baseline_worker(stack: Stack):
    managed = stack._spawn("worker", [sys.executable, "-m", "bench.baseline_worker", "--threads", str(THREADS)])
    stack._wait(managed, lambda: READY_LINE in managed.log.read_text(errors="replace"), f'no "{READY_LINE}" line')
    return managed.process


def foreign_load(stack: Stack) -> list[str]:
    """Other Temporal servers / settleflow workers on this machine (not ours): they share the cores."""
    ours = {m.process.pid for m in stack.managed} | {os.getpid()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            pgrp = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
        except (OSError, IndexError, ValueError):
            continue
        if pgrp in ours or int(entry.name) in ours:
            continue
        if ("start-dev" in cmd and "temporal" in cmd) or "worker.py" in cmd or "stripe_sim" in cmd:
            found.append(cmd.strip()[:90])
    return found


def machine() -> list[str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return [
        f"nproc: {usable} (os.cpu_count {os.cpu_count()})",
        f"CPU: {model}",
        f"python: {platform.python_version()} ({platform.python_implementation()}), {platform.platform()}",
    ]


def spread(values: list[int]) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{statistics.mean(values):.1f}" + ("" if lo == hi else f" ({lo}-{hi})")


def report(runs: list[Run], baselines: list[Run], calls: int, n: int) -> None:
    print()
    print("=" * 100)
    print("settleflow refund throughput")
    for line in machine():
        print("  " + line)
    print(f"  load average at the end: {Path('/proc/loadavg').read_text().split()[:3]}")
    if FOREIGN:
        print(f"  WARNING: {len(FOREIGN)} other Temporal/settleflow processes were running on this machine "
              "(they share the cores; figures are noisier):")
        for line in FOREIGN[:5]:
            print(f"    {line}")
    print(f"  worker threads: {THREADS}; warm-up per measurement: {WARMUP}; database: SQLite (WAL)")
    print(f"  activity calls per happy-path refund (scheduled activities + local-activity markers): {calls}")
    print()
    head = f"{'run':<30}{'N':>5}{'workers':>8}{'wall s':>8}{'per s':>8}{'p50 s':>8}{'p95 s':>8}" \
           f"{'outbox/wf':>11}{'inbox/wf':>10}{'events/wf':>11}"
    print(head)
    print("-" * len(head))
    for r in [*runs, *baselines]:
        print(f"{r.label:<30}{r.n:>5}{r.workers:>8}{r.seconds:>8.2f}{r.rate:>8.2f}{r.pct(50):>8.2f}{r.pct(95):>8.2f}"
              f"{spread(r.outbox_per):>11}{spread(r.inbox_per):>10}{spread(r.history_per):>11}")
    print()
    print("CPU seconds used during each run (summed over each part's processes), and cores kept busy:")
    head2 = f"{'run':<30}{'temporal':>10}{'workers':>10}{'gateway':>10}{'client':>10}{'total':>8}{'cores':>7}" \
            f"{'ms CPU/wf':>11}"
    print(head2)
    print("-" * len(head2))
    for r in [*runs, *baselines]:
        total = sum(r.cpu.values())
        print(f"{r.label:<30}{r.cpu.get('temporal', 0):>10.2f}{r.cpu.get('worker', 0):>10.2f}"
              f"{r.cpu.get('gateway', 0):>10.2f}{r.cpu.get('client', 0):>10.2f}{total:>8.2f}"
              f"{total / r.seconds:>7.2f}{1000 * total / r.n:>11.1f}")
    print()
    by = {r.label: r for r in [*runs, *baselines]}
    for r in runs:
        if r.statuses != {"completed": r.n}:
            print(f"  NOTE {r.label}: statuses {r.statuses}")
    for r in runs:
        if r.n != n:
            continue
        b = next((b for b in baselines if b.workers == r.workers), None)
        if b:
            print(f"  ratio refund/baseline ({r.workers} worker process{'es' if r.workers > 1 else ''}, N={n}): "
                  f"{r.rate:.2f} / {b.rate:.2f} = {r.rate / b.rate:.2f}")
    one, two = by.get(f"refunds N={n}, 1 worker"), by.get(f"refunds N={n}, 2 workers")
    if one and two:
        print(f"  two worker processes vs one (N={n}): {two.rate:.2f} / {one.rate:.2f} = {two.rate / one.rate:.2f}x")
    small = next((r for r in runs if r.n == n), None)
    big = next((r for r in runs if r.n == 4 * n), None)
    if small and big:
        print(f"  per refund at N={n} vs 4N={4 * n}: outbox {spread(small.outbox_per)} vs {spread(big.outbox_per)}, "
              f"processed_commands {spread(small.inbox_per)} vs {spread(big.inbox_per)}, "
              f"history events {spread(small.history_per)} vs {spread(big.history_per)}")
    print("=" * 100)


async def bench(args: argparse.Namespace, base: Path) -> None:
    n = args.n
    stack = Stack.private(base)
    try:
        t_all = time.monotonic()
        stack.start_temporal()
        stack.start_gateway()
        primary = 2 if args.workers == "2" else 1
        worker_procs = [stack.start_worker() for _ in range(primary)]
        relay = RelayBench(stack)  # NATS + relay.py beside the workers: outbox lag during the runs
        relay.start()
        FOREIGN.extend(foreign_load(stack))
        log(f"stack up: Temporal {stack.temporal_address}, {primary} worker.py process(es), files in {base}")
        client = await Client.connect(stack.temporal_address, namespace=stack.namespace,
                                      data_converter=data_converter())
        b = Bench(stack, client, f"b{uuid.uuid4().hex[:6]}")

        extra_two = args.workers == "both"
        orders = await b.prepare(WARMUP + n + 4 * n + ((WARMUP + n) if extra_two else 0))
        take = lambda k: [orders.pop(0) for _ in range(k)]  # noqa: E731

        runs: list[Run] = []
        await b.refunds("warm-up", take(WARMUP), primary)
        label = f"{primary} worker{'s' if primary > 1 else ''}"
        profiler = Profiler([p.pid for p in worker_procs], base) if args.profile else None
        runs.append(await b.refunds(f"refunds N={n}, {label}", take(n), primary, profiler))
        calls = await b.activity_calls(b.last_ids[0])
        since = datetime.now(UTC)
        runs.append(await b.refunds(f"refunds 4N={4 * n}, {label}", take(4 * n), primary))
        await relay.wait_published()
        relay_lag = relay.lag_since(since)
        if extra_two:
            worker_procs.append(stack.start_worker())
            log("second worker.py process started")
            await b.refunds("warm-up", take(WARMUP), 2)
            runs.append(await b.refunds(f"refunds N={n}, 2 workers", take(n), 2))
            stack.stop_process(worker_procs.pop())

        # The baseline runs alone: settleflow's workers are stopped first.
        for proc in worker_procs:
            stack.stop_process(proc)
        baselines: list[Run] = []
        configs = [primary] if not extra_two else [1, 2]
        for count in configs:
            procs = [start_baseline_worker(stack) for _ in range(count)]
            log(f"{count} baseline worker process(es) started, {calls} no-op activities per workflow")
            await b.baseline(f"warmup{count}", WARMUP, calls, count)
            baselines.append(await b.baseline(
                f"baseline N={n}, {count} worker{'s' if count > 1 else ''}", n, calls, count))
            for proc in procs:
                stack.stop_process(proc)
        report(runs, baselines, calls, n)
        relayed = await relay.throughput()
        print(f"\nrelay (outbox -> NATS JetStream): lag during the 4N run over {relay_lag.rows} outbox rows: "
              f"p50 {relay_lag.p50:.3f} s, p99 {relay_lag.p99:.3f} s, worst {relay_lag.worst:.3f} s "
              f"({'keeps up' if relay_lag.p99 < 2 else 'FALLS BEHIND'}: p99 target < 2 s)")
        print(f"relay throughput on a backlog of {relayed.rows} rows ({relayed.messages} messages): "
              f"{relayed.rows_per_second:.0f} rows/s, {relayed.messages_per_second:.0f} messages/s "
              f"({relayed.seconds:.2f} s)")
        if profiler:
            print(f"\nrun profiled: {runs[0].label} (py-spy, so its figures above are a little lower)")
            print("\n".join(summarize(profiler.stacks())))
        log(f"whole run: {time.monotonic() - t_all:.0f} s")
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=30, help="refunds per measured run (default 30; 4N are run too)")
    parser.add_argument("--workers", choices=["1", "2", "both"], default="both",
                        help="worker.py processes: 1, 2, or both configurations (default both)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the worker.py processes with py-spy during the first measured run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="settleflow-bench-"))
    try:
        asyncio.run(bench(args, base))
    finally:
        if not args.keep:
            import shutil
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")


if __name__ == "__main__":
    main()
