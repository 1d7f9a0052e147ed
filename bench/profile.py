"""Where a worker's CPU goes: py-spy attached to running worker processes.

`bench.refund_throughput --profile` wraps one measured run in `Profiler`; py-spy
samples every thread of each worker.py process (only while on the CPU, so waiting
on the server or the database does not count) and writes collapsed stacks. The
summary folds them into the parts a reader can act on: settleflow's own layers,
the libraries under them, and the busiest functions.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

# First matching marker in a frame's file path decides the frame's part.
PARTS = (
    ("settleflow: domain", "/domain/"),
    ("settleflow: activities", "/activities/"),
    ("settleflow: workflows", "/workflows/"),
    ("temporalio: workflow sandbox", "/adapters/sandbox.py"),  # SandboxRunner: the SDK's sandbox
    ("settleflow: adapters", "/adapters/"),
    ("temporalio: workflow sandbox", "temporalio/worker/workflow_sandbox"),
    ("temporalio: converter", "temporalio/converter"),
    ("temporalio: other", "temporalio/"),
    ("pydantic", "pydantic"),
    ("sqlalchemy", "sqlalchemy/"),
    ("sqlite3", "sqlite3/"),
    ("psycopg", "psycopg"),
    ("stripe SDK", "/stripe/"),
    ("opentelemetry", "opentelemetry"),
    ("prometheus_client", "prometheus_client"),
    ("jwt / cryptography", "/jwt/"),
    ("cryptography", "cryptography/"),
    ("requests / urllib3", "/urllib3/"),
    ("httpx / httpcore", "/http"),
    ("asyncio", "asyncio/"),
    ("concurrent.futures", "concurrent/"),
)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("bench --profile needs py-spy (pip install -e '.[dev]')")
    return found


class Profiler:
    """`with Profiler(pids, folder):` samples those processes for the block's duration."""

    def __init__(self, pids: list[int], folder: Path, rate: int = 250, name: str = "worker") -> None:
        self.outputs = [folder / f"{name}-{pid}.txt" for pid in pids]
        self.pids = pids
        self.rate = rate
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Profiler:
        for pid, output in zip(self.pids, self.outputs):
            self.procs.append(subprocess.Popen(
                [py_spy(), "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw",
                 "--output", str(output), "--gil", "--full-filenames", "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            ))
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def stacks(self) -> Counter[tuple[str, ...]]:
        """Collapsed stacks from every output: (frame, ...) -> samples."""
        samples: Counter[tuple[str, ...]] = Counter()
        for output in self.outputs:
            if not output.exists():
                continue
            for line in output.read_text(errors="replace").splitlines():
                stack, _, count = line.rpartition(" ")
                if stack and count.isdigit():
                    samples[tuple(stack.split(";"))] += int(count)
        return samples


def part_of(frame: str) -> str | None:
    for name, marker in PARTS:
        if marker in frame:
            return name
    return None


def summarize(samples: Counter[tuple[str, ...]], top: int = 15) -> list[str]:
    """Lines to print: samples by part (self time: the innermost frame's part) and by part
    inclusive (any frame of that part on the stack), and the busiest functions."""
    total = sum(samples.values())
    if not total:
        return ["profile: no samples (was py-spy allowed to attach? it needs ptrace)"]
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for stack, n in samples.items():
        frames = [f for f in stack if not f.startswith(("thread ", "process "))]
        if not frames:
            continue
        innermost = frames[-1]
        own[part_of(innermost) or "other (stdlib, C)"] += n
        for part in {part_of(f) for f in frames} - {None}:
            inclusive[part] += n  # type: ignore[index]
        leaf[short(innermost)] += n
        for f in {short(f) for f in frames if (part_of(f) or "").startswith("settleflow")}:
            ours[f] += n
    pct = lambda n: f"{100 * n / total:5.1f}%"  # noqa: E731
    lines = [f"profile: {total} on-CPU samples over the worker processes' threads"]
    lines.append(f"  {'part':<34}{'self':>8}{'on stack':>10}")
    for part, n in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {part:<34}{pct(own.get(part, 0)):>8}{pct(n):>10}")
    lines.append(f"  {'other (stdlib, C)':<34}{pct(own.get('other (stdlib, C)', 0)):>8}")
    lines.append("  busiest functions (self):")
    lines += [f"    {pct(n)}  {name}" for name, n in leaf.most_common(top)]
    lines.append("  settleflow functions (on stack):")
    lines += [f"    {pct(n)}  {name}" for name, n in ours.most_common(top)]
    return lines


def short(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (file.py)`: lines differ per sample, functions do not."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    return f"{name} ({'/'.join(parts[-2:])})" if parts else name
