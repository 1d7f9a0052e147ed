"""`bench.refund_throughput --server-cores X` holds the Temporal server to X cores with a cgroup CPU
quota (bench/cpu_quota.py). The kernel's files are stood in for by a folder here: what is written
is what the kernel reads, and a machine without a writable controller is told so before anything
starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import cpu_quota
from bench.cpu_quota import CpuQuota, QuotaUnavailable, Throttling

ROOT = Path(__file__).parents[2]


@pytest.fixture
def v1(tmp_path, monkeypatch):
    root = tmp_path / "cpu"
    root.mkdir()
    (root / "cpu.cfs_quota_us").write_text("-1")
    (root / "cgroup.procs").write_text("")
    monkeypatch.setattr(cpu_quota, "V1_ROOT", root)
    monkeypatch.setattr(cpu_quota, "V2_ROOTS", ())
    return root


@pytest.fixture
def v2(tmp_path, monkeypatch):
    root = tmp_path / "unified"
    root.mkdir()
    (root / "cgroup.subtree_control").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.procs").write_text("")
    monkeypatch.setattr(cpu_quota, "V1_ROOT", tmp_path / "no-v1")
    monkeypatch.setattr(cpu_quota, "V2_ROOTS", (tmp_path / "no-v2", root))
    return root


def test_half_a_core_is_fifty_milliseconds_of_every_hundred_on_cgroup_v1(v1):
    quota = CpuQuota(0.5, "bench-1")

    assert (v1 / "bench-1" / "cpu.cfs_period_us").read_text() == "100000"
    assert (v1 / "bench-1" / "cpu.cfs_quota_us").read_text() == "50000"
    assert quota.version == "v1"


def test_one_and_a_quarter_cores_is_written_as_cgroup_v2_reads_it(v2):
    quota = CpuQuota(1.25, "bench-2")

    assert (v2 / "bench-2" / "cpu.max").read_text() == "125000 100000"
    assert quota.version == "v2"


def test_a_machine_without_a_writable_cpu_controller_is_told_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_quota, "V1_ROOT", tmp_path / "absent")
    monkeypatch.setattr(cpu_quota, "V2_ROOTS", (tmp_path / "absent-too",))

    with pytest.raises(QuotaUnavailable, match="writable cgroup CPU controller") as refused:
        CpuQuota(0.5, "bench-3")
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "absent").exists()


def test_cgroup_v2_without_the_cpu_controller_enabled_is_not_used(v2):
    (v2 / "cgroup.subtree_control").write_text("memory pids\n")

    with pytest.raises(QuotaUnavailable):
        CpuQuota(0.5, "bench-4")


def test_the_throttled_share_is_the_periods_the_quota_ran_out_in(v1):
    quota = CpuQuota(0.5, "bench-5")
    (quota.path / "cpu.stat").write_text("nr_periods 200\nnr_throttled 150\nthrottled_time 123\n")

    held = quota.throttling()

    assert held == Throttling(periods=200, throttled=150)
    assert held.share == 0.75
    assert Throttling(0, 0).share == 0.0


def test_closing_hands_its_processes_back_to_where_they_came_from(v1, monkeypatch):
    quota = CpuQuota(0.5, "bench-6")
    came_from = v1 / "system.slice"
    came_from.mkdir()
    monkeypatch.setattr(cpu_quota, "pids_in_group", lambda group: [4242])
    monkeypatch.setattr(CpuQuota, "_group_of", lambda self, pid: came_from)
    quota.hold(4242)
    assert (quota.path / "cgroup.procs").read_text() == "4242"

    quota.close()  # a stand-in's files stay; the kernel's group goes with rmdir once empty

    assert (came_from / "cgroup.procs").read_text() == "4242"


def test_a_hold_that_moves_nothing_is_an_error_not_a_run_that_says_it_held(v1, monkeypatch):
    quota = CpuQuota(0.5, "bench-8")
    monkeypatch.setattr(cpu_quota, "pids_in_group", lambda group: [])

    with pytest.raises(QuotaUnavailable, match="no process"):
        quota.hold(4242)


def test_no_quota_below_or_at_zero_cores(v1):
    with pytest.raises(ValueError):
        CpuQuota(0, "bench-7")
    assert not (v1 / "bench-7").exists()


@pytest.mark.parametrize("cores", ["0.0001x", "-1", "100000"])
def test_the_bench_refuses_a_server_share_it_cannot_give_before_starting_anything(cores):
    run = subprocess.run(
        [sys.executable, "-m", "bench.refund_throughput", "--server-cores", cores],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )

    assert run.returncode == 2
    last = run.stderr.strip().splitlines()[-1]
    assert "--server-cores" in last
    assert "stack up" not in run.stdout
