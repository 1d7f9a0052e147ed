"""starter.py as a process of its own per call, forked from tests/starter_forkserver.py, which
has imported starter once: a fresh interpreter per call would cost a second and a half of
imports, and the suite makes well over a hundred calls. Each call gets exactly the environment
it is given, its own stdout and stderr, and the exit code `python starter.py ARGS` would give.
The end-to-end demo (`devstack.py demo`) and a few tests still run `python starter.py` itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class ForkedStarter:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "starter_forkserver.py")],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def call(self, args: list[str], env: dict[str, str], folder: Path, timeout: float = 120) -> tuple[int, str, str]:
        """`starter.py ARGS` in exactly the environment `env` (its output files go in `folder`);
        its exit code, stdout and stderr. A call still running after `timeout` seconds is killed
        (SIGALRM: exit code -14)."""
        folder.mkdir(parents=True, exist_ok=True)
        out, err = folder / "stdout", folder / "stderr"
        request = {"args": list(args), "env": env, "stdout": str(out), "stderr": str(err), "timeout": timeout}
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        return answer["returncode"], out.read_text(), err.read_text()

    def close(self) -> None:
        assert self.process.stdin
        self.process.stdin.close()
        self.process.wait(timeout=30)
