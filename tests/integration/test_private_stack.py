"""A private stack (tests, the bench, chaos) picks free ports when it is made; a port taken by
the time its service starts (the dev server's own services bind ports of their own) is picked
again instead of failing the run. A script that runs one and is ended with SIGTERM takes its
processes down with it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from devstack import ROOT, Stack, listening


@pytest.fixture
def stack(tmp_path):
    made = Stack.private(tmp_path)
    yield made
    made.stop()


def occupy(url_port: int) -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", url_port))
    holder.listen()
    return holder


@pytest.mark.nats
def test_a_private_stacks_nats_starts_on_another_port_when_its_port_was_taken_meanwhile(stack):
    taken = int(stack.nats_url.rsplit(":", 1)[1])
    with occupy(taken):
        stack.start_nats()
        port = int(stack.nats_url.rsplit(":", 1)[1])

        assert port != taken
        assert listening("127.0.0.1", port)
        assert stack.env["NATS_URL"] == f"nats://127.0.0.1:{port}"  # what the relay started next is given


def test_a_private_stacks_gateway_simulator_starts_on_another_port_when_its_port_was_taken_meanwhile(stack):
    taken = int(stack.gateway_url.rsplit(":", 1)[1])
    with occupy(taken):
        stack.start_gateway()

        assert stack.gateway_url != f"http://127.0.0.1:{taken}"
        assert stack.env["SETTLEFLOW_GATEWAY_URL"] == stack.gateway_url
        assert listening("127.0.0.1", int(stack.gateway_url.rsplit(":", 1)[1]))


def test_a_stack_on_named_ports_still_refuses_a_busy_port(tmp_path):
    made = Stack.private(tmp_path, ports_chosen_here=False)
    taken = int(made.gateway_url.rsplit(":", 1)[1])
    with occupy(taken), pytest.raises(Exception, match="already in use"):
        made.start_gateway()


SCRIPT = """
import sys, time
from devstack import Stack, stop_on_sigterm
stop_on_sigterm()
stack = Stack.private(sys.argv[1])
stack.start_gateway()
print(stack.gateway_url, flush=True)
time.sleep(120)
"""


def test_a_script_ended_with_sigterm_takes_the_processes_its_stack_started_down(tmp_path):
    # The bench and chaos run this way; the test suite ends an early chaos run with SIGTERM.
    script = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        gateway_url = script.stdout.readline().strip()
        port = int(gateway_url.rsplit(":", 1)[1])
        assert listening("127.0.0.1", port)

        script.send_signal(signal.SIGTERM)
        script.wait(timeout=30)

        assert not listening("127.0.0.1", port)  # the simulator went with it
    finally:
        script.kill()
