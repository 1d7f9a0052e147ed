"""The Temporal server held to a share of the machine's cores: `--server-cores X`.

On this 2-core machine every process of the stack shares two cores, so the throughput ratio
measures CPU per workflow summed over all of them: the worker's own work counts as much as
the server's. On a cluster the workers are the part that scales out (stateless, a process per
core) and the server is the shared, scarce part. Holding the server to X cores with a Linux
cgroup's CPU quota, and leaving the workers the rest, runs that regime here: refunds and raw
chains alike are then bounded by the server's CPU per workflow, as on a cluster whose workers
have cores of their own. The workers' share is read in the same run (per-process CPU); a run
in which the server was not the limit says so (its quota was not used up, bench/README.md).

Needs a writable cgroup CPU controller (root): cgroup v1's `cpu.cfs_quota_us` or v2's `cpu.max`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

PERIOD_US = 100_000  # the quota is given per 100 ms, the kernel's default period
V1_ROOT = Path("/sys/fs/cgroup/cpu")
V2_ROOTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))


class QuotaUnavailable(Exception):
    """No CPU controller this process may write to: the reason, in one line."""


def _v2_root() -> Path | None:
    for root in V2_ROOTS:
        controllers = root / "cgroup.subtree_control"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            return root
    return None


def controller() -> tuple[str, Path]:
    """("v1" | "v2", the hierarchy's root) where a child group with a CPU quota can be made."""
    if (V1_ROOT / "cpu.cfs_quota_us").exists() and os.access(V1_ROOT, os.W_OK):
        return "v1", V1_ROOT
    if (root := _v2_root()) is not None and os.access(root, os.W_OK):
        return "v2", root
    raise QuotaUnavailable(
        "--server-cores needs a writable cgroup CPU controller (root, and cgroup v1 'cpu' or v2 with 'cpu' "
        "enabled): none found")


@dataclass
class Throttling:
    periods: int  # 100 ms periods in which the group ran
    throttled: int  # of them, how many it used up its quota in (and waited)

    @property
    def share(self) -> float:
        return self.throttled / self.periods if self.periods else 0.0


class CpuQuota:
    """A cgroup holding its processes to `cores` cores in all. `close()` puts each process back in
    the group it came from and removes this one (a cgroup stays until removed, even empty)."""

    def __init__(self, cores: float, name: str) -> None:
        if cores <= 0:
            raise ValueError("a CPU quota must be above 0 cores")
        self.cores = cores
        self.version, root = controller()
        self.root = root
        self.path = root / name
        self.path.mkdir()
        self._came_from: dict[int, Path] = {}  # pid -> its group before it was held
        quota = max(1000, round(cores * PERIOD_US))
        try:
            if self.version == "v1":
                (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        except OSError:
            self.path.rmdir()
            raise

    def hold(self, process_group: int) -> int:
        """Move every process of `process_group` into the group; how many were moved. None
        moved is an error: a run that says it held the server must have held it."""
        moved = 0
        for pid in pids_in_group(process_group):
            came_from = self._group_of(pid)
            try:
                (self.path / "cgroup.procs").write_text(str(pid))
            except ProcessLookupError:  # ended meanwhile
                continue
            self._came_from[pid] = came_from
            moved += 1
        if not moved:
            raise QuotaUnavailable(f"no process of process group {process_group} could be moved into {self.path}")
        return moved

    def _group_of(self, pid: int) -> Path:
        """The group `pid` is in now, in this hierarchy (the root when it cannot be read)."""
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return self.root
        for line in lines:
            _, controllers, where = line.split(":", 2)
            if (self.version == "v1" and "cpu" in controllers.split(",")) or (self.version == "v2" and not controllers):
                return self.root / where.lstrip("/")
        return self.root

    def throttling(self) -> Throttling:
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line.strip())
        return Throttling(int(stat.get("nr_periods", 0)), int(stat.get("nr_throttled", 0)))

    def close(self) -> None:
        """Put whatever still runs in the group back where it came from, and remove the group.
        Never raises: it runs while the bench is stopping, maybe for another error."""
        try:
            still = [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            still = []
        for pid in still:
            try:
                (self._came_from.get(pid, self.root) / "cgroup.procs").write_text(str(pid))
            except OSError:
                continue
        try:
            self.path.rmdir()
        except OSError as left:
            print(f"bench: could not remove {self.path} ({left}); remove it with rmdir", file=sys.stderr)


def pids_in_group(process_group: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == process_group:
            found.append(int(entry.name))
    return found
