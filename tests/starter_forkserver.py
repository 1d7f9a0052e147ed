"""Runs `starter.py` cases as separate processes without paying for a fresh interpreter
each time: this process imports starter once, then forks one child per case.

Protocol (JSON lines): stdin {"args": [...], "env": {...}, "stdout": path, "stderr": path,
"timeout": seconds}, stdout {"returncode": n} once the child has exited (tests/forked_starter.py). Each child gets the case's environment,
its own stdout/stderr files and the exit code `python starter.py ARGS` would give.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import starter  # noqa: E402  (the expensive imports happen once, here)


def run_child(request: dict) -> None:
    signal.alarm(math.ceil(request.get("timeout", 120)))  # a call that hangs is killed, as subprocess.run's timeout would
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = [str(ROOT / "starter.py"), *request["args"]]
    code = 1
    try:
        code = starter.main(request["args"]) or 0
    except SystemExit as exiting:  # argparse refusals exit 2 this way
        code = exiting.code if isinstance(exiting.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(request)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    os.chdir(ROOT)
    serve()
