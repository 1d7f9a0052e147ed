"""Worker Deployment Versioning as worker.py configures it (SETTLEFLOW_DEPLOYMENT_NAME,
SETTLEFLOW_BUILD_ID): a new flow runs on the deployment's current version, and after a
rollout (new workers, new current version) new flows run on the new build. On the real
dev server from the venv (the time-skipping test server has no deployments)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import VersioningBehavior
from temporalio.api.enums.v1.task_queue_pb2 import ROUTING_CONFIG_UPDATE_STATE_IN_PROGRESS
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from adapters import db
from adapters.settings import Settings
from adapters.temporal import AddressUpdates
from adapters.seal import SealsCommands
from devstack import temporal_cli
from tests.workflows.conftest import Harness
from tests.workflows.flows import place_order
from worker import ALL_QUEUES, Dependencies, build_workers, deployment_options
from workflows.process import SEARCH_ATTRIBUTES

DEPLOYMENT = "settleflow"


@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter, interceptors=[AddressUpdates(), SealsCommands()], dev_server_existing_path=temporal_cli(),
        search_attributes=list(SEARCH_ATTRIBUTES), ui=False,
    )  # fmt: skip
    yield environment
    await environment.shutdown()


async def make_current(env: WorkflowEnvironment, build_id: str) -> None:
    """What `temporal worker deployment set-current-version` does; the version exists once its workers polled."""
    for _ in range(100):
        try:
            await env.client.workflow_service.set_worker_deployment_current_version(
                SetWorkerDeploymentCurrentVersionRequest(
                    namespace=env.client.namespace, deployment_name=DEPLOYMENT, build_id=build_id, identity="test"
                )
            )
            await routed_to(env, build_id)
            return
        except RPCError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"version {build_id} never became current")


async def routed_to(env: WorkflowEnvironment, build_id: str) -> None:
    """Until the new current version has reached every task queue: the server propagates it
    to the queues' partitions after it answers (a flow started before that, on a loaded
    machine, still ran on the old build)."""
    for _ in range(300):
        info = (
            await env.client.workflow_service.describe_worker_deployment(
                DescribeWorkerDeploymentRequest(namespace=env.client.namespace, deployment_name=DEPLOYMENT)
            )
        ).worker_deployment_info
        current = info.routing_config.current_deployment_version.build_id
        if current == build_id and info.routing_config_update_state != ROUTING_CONFIG_UPDATE_STATE_IN_PROGRESS:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"version {build_id} never reached the task queues")


async def running_build(handle) -> tuple[str, int]:
    info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
    return info.deployment_version.build_id, info.behavior


async def test_new_flows_run_on_the_current_build_and_move_to_the_next_after_a_rollout(
    dev_server: WorkflowEnvironment, gateway_url: str, tmp_path: Path
):
    url = f"sqlite:///{tmp_path / 'settleflow.db'}"
    db.upgrade(url)
    deps = Dependencies.connect(url, gateway_url, tmp_path / "mailbox", gateway_timeout_seconds=2)
    harness = Harness(dev_server.client, dev_server, deps.uow_factory, deps.mailbox, gateway_url, deps.engine, deps)
    async with AsyncExitStack() as stack:
        executor = stack.enter_context(ThreadPoolExecutor(max_workers=8))

        async def start_build(build_id: str) -> None:
            settings = Settings(SETTLEFLOW_DEPLOYMENT_NAME=DEPLOYMENT, SETTLEFLOW_BUILD_ID=build_id)
            for worker in build_workers(dev_server.client, deps, list(ALL_QUEUES), executor, **deployment_options(settings)):
                await stack.enter_async_context(worker)

        await start_build("build-1")
        await make_current(dev_server, "build-1")
        first, _ = await place_order(harness)
        assert await running_build(dev_server.client.get_workflow_handle(f"payment-{first}")) == (
            "build-1", VersioningBehavior.VERSIONING_BEHAVIOR_AUTO_UPGRADE,
        )

        await start_build("build-2")  # the rollout: new workers next to the old, then the new version current
        await make_current(dev_server, "build-2")
        second, view = await place_order(harness)

        assert view["status"] == "paid"
        assert (await running_build(dev_server.client.get_workflow_handle(f"payment-{second}")))[0] == "build-2"
        for handle in harness.started:
            await handle.terminate("test finished")
    deps.engine.dispose()
