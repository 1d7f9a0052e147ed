"""End-to-end fixtures: a private stack (dev server, gateway simulator, worker) on free
ports with every file in a temporary folder, and starter.py run as a separate process
(forked from one that imported it once: tests/forked_starter.py)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devstack import Stack, log_tail
from tests.forked_starter import ForkedStarter

_forked: ForkedStarter | None = None  # one per test process, started at its first call


@pytest.fixture(scope="session", autouse=True)
def _close_the_forked_starter() -> Iterator[None]:
    yield
    if _forked is not None:
        _forked.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with _started_private_stack(tmp_path_factory) as private:
        yield private


@contextmanager
def _started_private_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Free ports are only free when chosen: another process may take one before our
    server binds it. Then start over on other ports (three tries)."""
    for attempt in range(3):
        with Stack.private(tmp_path_factory.mktemp("stack")) as private:
            try:
                private.up()
            except RuntimeError as failed:
                if "already in use" in str(failed) and attempt < 2:
                    continue
                pytest.fail(f"{failed}\n{getattr(failed, 'tail', lambda: '')()}")
            yield private
            for managed in private.exited():  # a part that died mid-test explains odd failures
                print(f"{managed.name} exited with {managed.process.returncode}:\n{log_tail(managed.log)}")
            return


def run(stack: Stack, *args: str, expect: int | None = 0, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python starter.py ARGS` against the private stack; checks the exit code unless `expect` is None."""
    global _forked
    if _forked is None:
        _forked = ForkedStarter()
    env = {name: str(value) for name, value in stack.env.items()}
    folder = Path(stack.log_dir) / "starter" / uuid.uuid4().hex
    returncode, stdout, stderr = _forked.call(list(args), env, folder, timeout=timeout)
    done = subprocess.CompletedProcess(["starter.py", *args], returncode, stdout, stderr)
    if expect is not None:
        assert done.returncode == expect, (
            f"starter.py {' '.join(args)} exited {done.returncode}, expected {expect}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done


def run_json(stack: Stack, *args: str) -> Any:
    """Run a --json command and parse its one JSON document."""
    out = run(stack, *args, "--json").stdout
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        pytest.fail(f"starter.py {' '.join(args)} --json did not print one JSON document:\n{out}")
