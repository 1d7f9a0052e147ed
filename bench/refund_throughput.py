"""Refund throughput against the same-shape raw chain: `python -m bench.refund_throughput [--n 200]`.

One run starts a private stack (Temporal dev server, gateway simulator, NATS + relay.py,
worker.py, and bench.raw_worker for the raw chain) in a temporary directory, prepares
delivered and paid orders, reads the shape of a happy-path refund from its recorded
history (local and regular activities, in order), then measures in the same run:

  1. latency at rest: 20 sequential refunds and 20 sequential raw chains, p50 of each;
  2. throughput: N raw chains, N refunds, N chains of the refund's engine shape (the same
     activities plus its patch marker and search-attribute upserts), N raw chains again (all
     of a run started at once); with --rounds R, R refund runs, each followed by a raw run;
  3. rows (outbox, processed_commands) and history events per refund;
  4. with --workers both: the same with two worker.py and two raw workers, CPU per process;
  5. the relay's outbox lag during the refund run and its throughput on a backlog.

`--server-cores X` holds the Temporal server to X cores (a cgroup CPU quota, bench/cpu_quota.py)
and leaves the workers the rest: the regime of a cluster whose workers have cores of their own.

`--database URL` runs settleflow on that database (SQLite file by default; a PostgreSQL
database given here is dropped and created afresh). Everything is printed, nothing asserted.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from adapters import db
from adapters.settings import load
from adapters.tables import outbox, processed_commands
from adapters.temporal import connect
from demo import WAREHOUSE
from devstack import READY_LINE, START_TIMEOUT, Stack, stop_on_sigterm
from domain.shared.actor import Actor, Role
from domain.shared.money import Money
from workflows.payment import OrderRequest, PaymentWorkflow
from workflows.process import FLOWS_QUEUE
from workflows.refund import RefundRequest, RefundWorkflow
from workflows.shipping import ConfirmDeliveryWorkflow, DeliveryRequest, ShipmentRequest, ShipOrderWorkflow

from bench.profile import Profiler, summarize
from bench.raw_chain import RAW_FLOWS_QUEUE, RawChainWorkflow, beyond_the_shortest, engine_shape_of, shape_of
from bench.relay import RelayBench
from bench.cpu_quota import CpuQuota, QuotaUnavailable, Throttling, controller
from adapters.identity import signed

THREADS = 16  # worker.py's default --threads; the raw worker gets the same
WARMUP = 3  # refunds / raw chains run (and not counted) before each measurement
PREP_CONCURRENCY = 40  # orders prepared at once
AT_REST = 20  # sequential refunds / raw chains for the latency at rest

SERVER_SYNC = "wal"  # set from --server-sync
SERVER_CORES = 0.0  # set from --server-cores: 0 = the server shares the machine like every process
ENGINE_RUN = "engine shape, 1 worker"  # not "raw chain ...": it is no part of the raw figure

# Production settings every process of the stack gets (worker.py, the raw worker, relay.py,
# and this process's client, which connects through adapters.temporal.connect). The payload
# codec (AES-GCM, the dev key under SETTLEFLOW_DEV_ISSUER_DIR) and token verification are
# always on: every process encrypts, so refunds and the raw chain both pay for the codec,
# and every refund request carries a signed token (`signed`) its owner verifies. The relay
# runs during every measured run. Anything else production sets goes here.
PRODUCTION_ENV: dict[str, str] = {}


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
    # Event types the longer histories hold beyond the shortest one's (summed over those histories).
    history_extra: Counter = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process during the run
    throttled: Throttling | None = None  # --server-cores: the server's quota periods during the run

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]  # nearest rank

    def cpu_of(self, kind: str) -> float:
        return sum(v for k, v in self.cpu.items() if k.split("-")[0] == kind)


class Bench:
    def __init__(self, stack: Stack, client: Client, tag: str, quota: CpuQuota | None = None) -> None:
        self.stack = stack
        self.quota = quota
        self.client = client
        self.tag = tag
        self.engine = db.make_engine(stack.database_url)  # for counting rows only
        self._orders = 0
        self._runs = 0
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
        status = await self.payment_status(payment)
        if status != "paid":
            raise RuntimeError(f"{order_id}: payment ended {status}, not paid")
        await (await self.client.start_workflow(
            ShipOrderWorkflow, ShipmentRequest(order_id=order_id, tracking=f"TRK-{order_id}", requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            id=f"ship-{order_id}", task_queue=FLOWS_QUEUE)).result()
        await (await self.client.start_workflow(
            ConfirmDeliveryWorkflow, DeliveryRequest(order_id=order_id, requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            id=f"deliver-{order_id}", task_queue=FLOWS_QUEUE)).result()
        return order_id, customer

    @staticmethod
    async def payment_status(payment, timeout: float = 600) -> str:
        """Poll the payment's `status` query until it has left "capturing". On a loaded machine
        a query may time out while hundreds of flows start; that is asked again, not an error."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = (await payment.query("status"))["status"]
                if status != "capturing":
                    return status
            except (RPCError, WorkflowQueryFailedError):
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise RuntimeError(f"{payment.id}: still capturing after {timeout:.0f} s")
            await asyncio.sleep(0.5)

    async def prepare(self, count: int) -> list[tuple[str, str]]:
        gate = asyncio.Semaphore(PREP_CONCURRENCY)

        async def one() -> tuple[str, str]:
            async with gate:
                return await self.prepare_order()

        started = time.monotonic()
        orders = await asyncio.gather(*(one() for _ in range(count)))
        log(f"prepared {count} delivered, paid orders in {time.monotonic() - started:.1f} s")
        return list(orders)

    # -- one refund, one raw chain ------------------------------------------------------------
    @staticmethod
    def refund_request(order_id: str, customer: str) -> RefundRequest:
        """The happy-path request (signed by the dev issuer, as the starter signs `--as`)."""
        return RefundRequest(refund_id=f"{order_id}-r", order_id=order_id, amount=Money.of("20.00", "EUR"),
                             reason="bench", requested_by=Actor(role=Role.CUSTOMER, id=customer),
                             **signed(Actor(role=Role.CUSTOMER, id=customer)))

    async def one_refund(self, request: RefundRequest) -> tuple[float, str, str]:
        t0 = time.monotonic()
        handle = await self.client.start_workflow(
            RefundWorkflow, request, id=f"refund-{request.refund_id}", task_queue=FLOWS_QUEUE)
        result = await handle.result()
        return time.monotonic() - t0, result.status, handle.id

    async def one_raw(self, shape: str) -> tuple[float, str, str]:
        self._runs += 1
        t0 = time.monotonic()
        handle = await self.client.start_workflow(
            RawChainWorkflow.run, shape, id=f"raw-{self.tag}-{self._runs}", task_queue=RAW_FLOWS_QUEUE)
        done = await handle.result()
        return time.monotonic() - t0, "completed" if done == len(shape) else f"{done}/{len(shape)}", handle.id

    # -- measured runs ----------------------------------------------------------------------------
    async def measure(self, label: str, starts: list, workers: int, *, sequential: bool = False,
                      profiler: Profiler | None = None, refunds: bool = False) -> Run:
        """Run the given workflow starters (all at once, or one after the other) and measure them."""
        cpu0 = cpu_by_process(self.stack)
        held0 = self.quota.throttling() if self.quota else None
        started = time.monotonic()
        if sequential:
            done = [await start() for start in starts]
        elif profiler:
            with profiler:
                done = await asyncio.gather(*(start() for start in starts))
        else:
            done = await asyncio.gather(*(start() for start in starts))
        seconds = time.monotonic() - started
        run = Run(label, len(starts), workers, seconds, [d[0] for d in done])
        run.cpu = cpu_delta(cpu0, cpu_by_process(self.stack))
        if self.quota and held0:
            held = self.quota.throttling()
            run.throttled = Throttling(held.periods - held0.periods, held.throttled - held0.throttled)
        for _, status, _ in done:
            run.statuses[status] = run.statuses.get(status, 0) + 1
        ids = self.last_ids = [d[2] for d in done]
        run.history_per, run.history_extra = await self.history_lengths(ids)
        if refunds:
            run.outbox_per, run.inbox_per = self.rows_per(ids)
        log(f"{label}: {run.n} in {seconds:.1f} s = {run.rate:.2f}/s, p50 {run.pct(50):.3f} s, statuses {run.statuses}")
        return run

    async def refunds(self, label: str, orders: list[tuple[str, str]], workers: int, **options) -> Run:
        # Signed before the run: a caller holds its token before it asks (its identity provider
        # signed it), so minting is not the refund's cost.
        requests = [self.refund_request(order_id, customer) for order_id, customer in orders]
        return await self.measure(label, [lambda r=r: self.one_refund(r) for r in requests], workers,
                                  refunds=True, **options)

    async def raw(self, label: str, shape: str, n: int, workers: int, **options) -> Run:
        return await self.measure(label, [lambda: self.one_raw(shape) for _ in range(n)], workers, **options)

    async def history_lengths(self, workflow_ids: list[str]) -> tuple[list[int], Counter]:
        """Each workflow's history length, and what the longer ones hold beyond the shortest."""
        gate = asyncio.Semaphore(20)

        async def one(wid: str) -> list:
            async with gate:
                return list((await self.client.get_workflow_handle(wid).fetch_history()).events)

        histories = list(await asyncio.gather(*(one(w) for w in workflow_ids)))
        return [len(events) for events in histories], beyond_the_shortest(histories)

    def rows_per(self, workflow_ids: list[str]) -> tuple[list[int], list[int]]:
        """Rows each refund left in `outbox` (caused by one of its commands) and `processed_commands`."""
        with self.engine.connect() as connection:
            outbox_rows = [connection.execute(select(func.count()).select_from(outbox).where(
                outbox.c.causation_id.like(f"{w}/%"))).scalar_one() for w in workflow_ids]
            inbox_rows = [connection.execute(select(func.count()).select_from(processed_commands).where(
                processed_commands.c.command_id.like(f"{w}/%"))).scalar_one() for w in workflow_ids]
        return outbox_rows, inbox_rows

    async def shape(self, workflow_id: str) -> tuple[str, str]:
        """The refund's shape (local and regular activities) and its engine shape (also patch
        markers and search-attribute upserts), read from its history."""
        events = (await self.client.get_workflow_handle(workflow_id).fetch_history()).events
        return shape_of(events), engine_shape_of(events)


FOREIGN: list[str] = []  # other stacks' processes seen when ours came up
TICK = os.sysconf("SC_CLK_TCK")


COUNT_POSTGRES = False  # set when --database is a PostgreSQL server on this machine


def cpu_by_process(stack: Stack) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each process this stack started (by its
    name: temporal, worker, worker-2, raw, ...; summed over the process group), plus this
    benchmark process itself ("client"), and with a local PostgreSQL every `postgres` process
    of this machine ("postgres": the database server the bench was given; nothing else here
    uses it while the bench runs)."""
    groups = {m.process.pid: m.name for m in stack.managed}
    used: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command, rest = (entry / "stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = rest.split()
        name = groups.get(int(fields[2]))  # fields[2] = pgrp
        if name is None and COUNT_POSTGRES and command.endswith("(postgres"):
            name = "postgres"
        if name:
            used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    own = os.times()
    used["client"] = own.user + own.system
    return used


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0}


def start_helper_worker(stack: Stack, kind: str, module: str):
    START_TIMEOUT.setdefault(kind, START_TIMEOUT["worker"])  # devstack's start-up allowance, as for worker.py
    managed = stack._spawn(kind, [sys.executable, "-m", module, "--threads", str(THREADS)])
    stack._wait(managed, lambda: READY_LINE in managed.log.read_text(errors="replace"), f'no "{READY_LINE}" line')
    return managed.process


def foreign_load(stack: Stack) -> list[str]:
    """Other Temporal servers / settleflow workers / test runs on this machine (not ours): they share the cores."""
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
        if (("start-dev" in cmd and "temporal" in cmd) or "worker.py" in cmd or "stripe_sim" in cmd
                or "pytest" in cmd):
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
    return [
        f"nproc: {len(os.sched_getaffinity(0))} (os.cpu_count {os.cpu_count()})",
        f"CPU: {model}",
        f"python: {platform.python_version()} ({platform.python_implementation()}), {platform.platform()}",
    ]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def spread(values: list[int]) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{statistics.mean(values):.1f}" + ("" if lo == hi else f" ({lo}-{hi})")


def report(runs: list[Run], shape: str, engine_shape: str, database: str, load_start: str) -> None:
    print()
    print("=" * 110)
    print("settleflow refund throughput against the same-shape raw chain")
    for line in machine():
        print("  " + line)
    print(f"  load average at the start: {load_start}; at the end: {loadavg()}")
    if FOREIGN:
        print(f"  WARNING: {len(FOREIGN)} other Temporal/settleflow/pytest processes were running on this machine "
              "(they share the cores; figures are noisier):")
        for line in FOREIGN[:5]:
            print(f"    {line}")
    print(f"  database: {database}; dev server's SQLite: {SERVER_SYNC}; worker threads: {THREADS}; "
          f"warm-up per configuration: {WARMUP}")
    print(f"  happy-path refund shape (history order, L = local activity, R = regular activity): {shape} "
          f"= {shape.count('L')} local + {shape.count('R')} regular")
    print(f"  its engine shape (+ P = patch marker with its TemporalChangeVersion upsert, U = search-attribute "
          f"upsert): {engine_shape}")
    if PRODUCTION_ENV:
        print(f"  production settings on: {', '.join(sorted(PRODUCTION_ENV))}")
    if SERVER_CORES:
        print(f"  Temporal server held to {SERVER_CORES:g} cores (cgroup CPU quota, bench/cpu_quota.py); the workers "
              "and the rest share what is left: the regime of workers with cores of their own")
    print()
    head = f"{'run':<34}{'N':>5}{'wrk':>4}{'wall s':>8}{'per s':>8}{'p50 s':>8}{'p95 s':>8}" \
           f"{'outbox/wf':>11}{'inbox/wf':>10}{'events/wf':>15}"
    print(head)
    print("-" * len(head))
    for r in runs:
        print(f"{r.label:<34}{r.n:>5}{r.workers:>4}{r.seconds:>8.2f}{r.rate:>8.2f}{r.pct(50):>8.3f}{r.pct(95):>8.3f}"
              f"{spread(r.outbox_per):>11}{spread(r.inbox_per):>10} {spread(r.history_per):>14}")  # "19.0 (19-22)" fits
    print()
    print("CPU seconds used during each run, per process (each summed over its process group), cores kept busy:")
    names = sorted({k for r in runs for k in r.cpu})
    head2 = f"{'run':<34}" + "".join(f"{k:>10}" for k in names) + f"{'total':>8}{'cores':>7}{'ms CPU/wf':>11}"
    print(head2)
    print("-" * len(head2))
    for r in runs:
        total = sum(r.cpu.values())
        print(f"{r.label:<34}" + "".join(f"{r.cpu.get(k, 0):>10.2f}" for k in names)
              + f"{total:>8.2f}{total / r.seconds:>7.2f}{1000 * total / r.n:>11.1f}")
    print()
    for r in runs:
        if r.statuses != {"completed": r.n}:
            print(f"  NOTE {r.label}: statuses {r.statuses}")
    held = [r for r in runs if r.throttled is not None and "rest" not in r.label]
    if held:
        print("  server's quota used up (the server the limit) in this share of its 100 ms periods: "
              + "; ".join(f"{r.label} {100 * r.throttled.share:.0f} %" for r in held))
    for r in runs:
        if r.history_extra:
            longer = sum(1 for n in r.history_per if n > min(r.history_per))
            print(f"  NOTE {r.label}: {longer} of {r.n} histories longer than the shortest "
                  f"({min(r.history_per)}), holding beyond it: "
                  + ", ".join(f"{kind} x{n}" for kind, n in r.history_extra.most_common()))


def ratio_lines(runs: list[Run]) -> list[str]:
    """The summary: refund / raw throughput (raw = mean of the raw runs around the refund run) and latency."""
    lines = []
    by = {r.label: r for r in runs}
    for workers in (1, 2):
        label = f"refunds, {workers} worker{'s' if workers > 1 else ''}"
        refunds = [r for r in runs if r.label == label or r.label.startswith(f"{label} (round")]
        raws = [r for r in runs if r.label.startswith("raw chain") and r.workers == workers and "rest" not in r.label]
        if refunds and raws:
            raw_rate = statistics.mean(r.rate for r in raws)
            refund_rate = statistics.mean(r.rate for r in refunds)
            n = refunds[0].n
            tag = "" if workers == 1 else ", 2 workers"
            rounds = f"; refund runs {', '.join(f'{r.rate:.2f}' for r in refunds)}" if len(refunds) > 1 else ""
            lines.append(f"ratio refund/raw same-shape{tag} = {refund_rate / raw_rate:.2f}   "
                         f"({refund_rate:.2f} / {raw_rate:.2f} per s at N={n}; raw runs "
                         f"{', '.join(f'{r.rate:.2f}' for r in raws)}{rounds})")
            per = lambda f: 1000 * statistics.mean(f(r) / r.n for r in refunds)  # noqa: E731
            server_raw = 1000 * statistics.mean(r.cpu_of('temporal') / r.n for r in raws)
            lines.append(f"  CPU per workflow{tag}: refund {per(lambda r: sum(r.cpu.values())):.1f} ms "
                         f"(server {per(lambda r: r.cpu_of('temporal')):.1f}, worker.py "
                         f"{per(lambda r: r.cpu_of('worker')):.1f}), raw "
                         f"{1000 * statistics.mean(sum(r.cpu.values()) / r.n for r in raws):.1f} ms (server "
                         f"{server_raw:.1f}, raw worker "
                         f"{1000 * statistics.mean(r.cpu_of('raw') / r.n for r in raws):.1f})")
            lines.append(f"  server CPU per workflow raw / refund{tag} = "
                         f"{server_raw / per(lambda r: r.cpu_of('temporal')):.2f}   (where the server is the limit, "
                         "the ratio approaches this: --server-cores measures it)")
    engine, refund, raws = by.get(ENGINE_RUN), by.get("refunds, 1 worker"), [
        r for r in runs if r.label.startswith("raw chain") and r.workers == 1 and "rest" not in r.label]
    if engine and refund and raws:
        raw_rate = statistics.mean(r.rate for r in raws)
        lines.append(f"ratio refund/raw engine-shape = {refund.rate / engine.rate:.2f}   (settleflow's own code: "
                     f"{refund.rate:.2f} / {engine.rate:.2f} per s); ratio engine-shape/raw same-shape = "
                     f"{engine.rate / raw_rate:.2f}   (what the patch marker and the status upserts cost the bare "
                     f"engine: {engine.rate:.2f} / {raw_rate:.2f} per s)")
        lines.append(f"  CPU per workflow: engine shape {1000 * sum(engine.cpu.values()) / engine.n:.1f} ms (server "
                     f"{1000 * engine.cpu_of('temporal') / engine.n:.1f}, raw worker "
                     f"{1000 * engine.cpu_of('raw') / engine.n:.1f})")
    rest_refund, rest_raw = by.get("refunds at rest"), by.get("raw chain at rest")
    if rest_refund and rest_raw:
        lines.append(f"latency at rest refund/raw same-shape = {rest_refund.pct(50) / rest_raw.pct(50):.2f}   "
                     f"(p50 of {rest_refund.n} sequential: {1000 * rest_refund.pct(50):.0f} ms / "
                     f"{1000 * rest_raw.pct(50):.0f} ms)")
    one, two = by.get("refunds, 1 worker"), by.get("refunds, 2 workers")
    if one and two:
        lines.append(f"two worker.py processes vs one: {two.rate:.2f} / {one.rate:.2f} = {two.rate / one.rate:.2f}x; "
                     "CPU s per process in the 2-worker run: "
                     + ", ".join(f"{k} {v:.1f}" for k, v in sorted(two.cpu.items())))
    refund_runs = [r for r in runs if r.outbox_per]
    if refund_runs:
        lines.append("per refund: " + "; ".join(
            f"{r.label}: outbox {spread(r.outbox_per)}, processed_commands {spread(r.inbox_per)}, "
            f"history events {spread(r.history_per)}" for r in refund_runs))
    return lines


def fresh_postgres(url: str) -> None:
    """Drop and create the PostgreSQL database the bench was given (never `postgres` itself)."""
    target = make_url(db.normalise_url(url))
    if target.database in (None, "", "postgres", "template0", "template1"):
        raise SystemExit("bench: --database must name a database of its own (it is dropped and created)")
    maintenance = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with maintenance.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        maintenance.dispose()


async def bench(args: argparse.Namespace, base: Path) -> None:
    n = args.n
    load_start = loadavg()
    overrides = {}
    if args.database:
        given = make_url(db.normalise_url(args.database))
        if given.get_backend_name() == "postgresql":
            fresh_postgres(args.database)
            global COUNT_POSTGRES
            COUNT_POSTGRES = given.host in (None, "", "localhost", "127.0.0.1", "::1")
        overrides["database_url"] = args.database
    if args.server_sync == "full":
        overrides["server_sqlite_pragmas"] = ()  # the server's SQLite defaults: a disk flush per transaction
    os.environ.update(PRODUCTION_ENV)  # every child inherits it through Stack.env
    stack = Stack.private(base, **overrides)
    quota = CpuQuota(args.server_cores, f"settleflow-bench-{os.getpid()}") if args.server_cores else None
    try:
        t_all = time.monotonic()
        stack.start_temporal()
        stack.start_gateway()
        settleflow = [stack.start_worker()]
        raw_workers = [start_helper_worker(stack, "raw", "bench.raw_worker")]
        relay = RelayBench(stack)  # NATS + relay.py beside the workers: outbox lag during the runs
        relay.start()
        FOREIGN.extend(foreign_load(stack))
        shown = make_url(stack.database_url).render_as_string(hide_password=True)
        log(f"stack up: Temporal {stack.temporal_address}, database {shown}, files in {base}")
        os.environ.update(stack.env)
        client = await connect(load())  # as the starter connects: same converter (and codec, once there is one)
        b = Bench(stack, client, f"b{uuid.uuid4().hex[:6]}", quota)

        two = args.workers == "both"
        scale_n = args.scale_n or n
        orders = await b.prepare(WARMUP + AT_REST + args.rounds * n + ((WARMUP + scale_n) if two else 0))
        take = lambda k: [orders.pop(0) for _ in range(k)]  # noqa: E731
        if quota:  # held from here on: preparing the orders is not measured, and runs faster unheld
            server = next(m.process.pid for m in stack.managed if m.name == "temporal")
            log(f"Temporal server held to {args.server_cores:g} cores from now on ({quota.hold(server)} "
                f"process(es), cgroup {quota.version} {quota.path})")

        runs: list[Run] = []
        await b.refunds("warm-up", take(WARMUP), 1)
        shape, engine_shape = await b.shape(b.last_ids[0])
        log(f"refund shape from its history: {shape} (engine shape {engine_shape})")
        await b.raw("warm-up", engine_shape, WARMUP, 1)
        await b.raw("warm-up", shape, WARMUP, 1)

        # Latency at rest: one at a time on an idle stack.
        await relay.wait_published()
        runs.append(await b.raw("raw chain at rest", shape, AT_REST, 1, sequential=True))
        runs.append(await b.refunds("refunds at rest", take(AT_REST), 1, sequential=True))

        # Throughput: raw, refunds, raw (the raw figure is the mean of the two around the refunds).
        runs.append(await b.raw("raw chain, 1 worker (before)", shape, n, 1))
        profiler = Profiler([p.pid for p in settleflow], base) if args.profile else None
        since = datetime.now(UTC)
        first_refunds = await b.refunds("refunds, 1 worker", take(n), 1, profiler=profiler)
        runs.append(first_refunds)
        await relay.wait_published(timeout=300)
        relay_lag = relay.lag_since(since)
        # The bare engine with the refund's patch marker and status upserts too: splits the gap.
        runs.append(await b.raw(ENGINE_RUN, engine_shape, n, 1))
        # The raw worker profiled too: what the SDK costs a bare chain of the same shape.
        raw_profiler = Profiler([p.pid for p in raw_workers], base, name="raw") if args.profile else None
        runs.append(await b.raw("raw chain, 1 worker (after)", shape, n, 1, profiler=raw_profiler))
        # More rounds, alternating: one refund run can meet a slow spell of the shared machine.
        for round_ in range(2, args.rounds + 1):
            runs.append(await b.refunds(f"refunds, 1 worker (round {round_})", take(n), 1))
            await relay.wait_published(timeout=300)
            runs.append(await b.raw(f"raw chain, 1 worker (after {round_})", shape, n, 1))

        if two:
            settleflow.append(stack.start_worker())
            raw_workers.append(start_helper_worker(stack, "raw", "bench.raw_worker"))
            log("second worker.py and second raw worker started")
            await b.refunds("warm-up", take(WARMUP), 2)
            await b.raw("warm-up", shape, WARMUP, 2)
            runs.append(await b.raw("raw chain, 2 workers (before)", shape, scale_n, 2))
            runs.append(await b.refunds("refunds, 2 workers", take(scale_n), 2))
            runs.append(await b.raw("raw chain, 2 workers (after)", shape, scale_n, 2))
            await relay.wait_published(timeout=300)

        report(runs, shape, engine_shape, shown, load_start)
        for line in ratio_lines(runs):
            print(line)
        relayed = await relay.throughput()
        print(f"relay (outbox -> NATS JetStream) during 'refunds, 1 worker', {relay_lag.rows} outbox rows: "
              f"lag p50 {relay_lag.p50:.3f} s, p99 {relay_lag.p99:.3f} s, worst {relay_lag.worst:.3f} s "
              f"({'keeps up' if relay_lag.p99 < 2 else 'FALLS BEHIND'}: p99 target < 2 s); "
              f"outbox rows recorded {relay_lag.rows / first_refunds.seconds:.0f}/s")
        print(f"relay throughput on a backlog of {relayed.rows} rows ({relayed.messages} messages): "
              f"{relayed.rows_per_second:.0f} rows/s, {relayed.messages_per_second:.0f} messages/s "
              f"({relayed.seconds:.2f} s)")
        if profiler:
            print("\nrun profiled: refunds, 1 worker (py-spy, so its figures above are a little lower)")
            print("\n".join(summarize(profiler.stacks())))
            print("\nrun profiled: raw chain, 1 worker (after): the same-shape raw chain's worker")
            print("\n".join(summarize(raw_profiler.stacks())))
        print(f"command: {' '.join(['python -m bench.refund_throughput', *sys.argv[1:]])}")
        log(f"whole run: {time.monotonic() - t_all:.0f} s")
        b.engine.dispose()
    finally:
        try:
            stack.stop()
        finally:
            if quota:
                quota.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="workflows per measured run (default 200)")
    parser.add_argument("--database", default="",
                        help="settleflow's database URL (default: a SQLite file in the run's directory; "
                             "a PostgreSQL database is dropped and created afresh)")
    parser.add_argument("--workers", choices=["1", "both"], default="both",
                        help="1: one worker.py process; both: also measure with two (default)")
    parser.add_argument("--scale-n", type=int, default=0,
                        help="workflows per run with two worker processes (default: --n)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="one-worker refund runs, each followed by a raw run (default 1); the ratio is "
                             "the mean refund rate over the mean raw rate")
    parser.add_argument("--profile", action="store_true",
                        help="sample the worker.py process with py-spy during the refund run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    parser.add_argument("--server-sync", choices=["wal", "full"], default="wal",
                        help="the dev server's own SQLite file: wal (devstack's setting, default) or full "
                             "(SQLite's defaults: the server waits on a disk flush per transaction)")
    parser.add_argument("--server-cores", type=float, default=0.0, metavar="X",
                        help="hold the Temporal server to X cores (a cgroup CPU quota; needs root), the workers "
                             "sharing the rest: the regime of workers with cores of their own (default: not held)")
    args = parser.parse_args()
    if args.n < 1 or args.scale_n < 0 or args.rounds < 1:
        parser.error("--n and --rounds must be at least 1, --scale-n at least 0")
    if args.server_cores:
        cores = len(os.sched_getaffinity(0))  # the cores this process may run on
        if not 0 < args.server_cores < cores:
            parser.error(f"--server-cores must be above 0 and below the {cores} cores this bench may use")
        try:
            controller()
        except QuotaUnavailable as missing:
            parser.error(str(missing))
    global SERVER_SYNC, SERVER_CORES
    SERVER_CORES = args.server_cores
    SERVER_SYNC = "write-ahead log, synced at checkpoints" if args.server_sync == "wal" else "SQLite defaults (full sync)"
    base = Path(tempfile.mkdtemp(prefix="settleflow-bench-"))
    stop_on_sigterm()
    try:
        asyncio.run(bench(args, base))
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started is stopped", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if not args.keep:
            import shutil
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")


if __name__ == "__main__":
    main()
