"""What the person on call relies on: one connected trace per refund, business
counters on /metrics, and a shutdown that leaves no activity half-done.
Real owners, a real SQLite database, the real gateway simulator, the test server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from adapters import db, tracing
from adapters.ops_server import OpsServer, database_check
from adapters.settings import Settings
from adapters.temporal import AddressUpdates
from adapters.seal import SealsCommands
from simulators.control import configure
from tests.workflows.conftest import Harness
from tests.workflows.flows import delivered_order, finished, start_refund, wait_for_status
from worker import ALL_QUEUES, Dependencies, build_workers, run_until_stopped

SPANS = InMemorySpanExporter()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    tracing.install(SPANS)
    return SPANS


@pytest.fixture
async def traced(env, gateway_url: str, tmp_path: Path, spans) -> AsyncIterator[Harness]:
    """The workers and the starter's client with the TracingInterceptor, as worker.py connects."""
    client = Client(**{**env.client.config(), "interceptors": [TracingInterceptor()]})
    url = f"sqlite:///{tmp_path / 'settleflow.db'}"
    db.upgrade(url)
    deps = Dependencies.connect(url, gateway_url, tmp_path / "mailbox", gateway_timeout_seconds=0.5)
    async with AsyncExitStack() as stack:
        executor = stack.enter_context(ThreadPoolExecutor(max_workers=8))
        for worker in build_workers(client, deps, list(ALL_QUEUES), executor):
            await stack.enter_async_context(worker)
        harness = Harness(client, env, deps.uow_factory, deps.mailbox, gateway_url, deps.engine, deps)
        yield harness
        await harness.close_open_workflows()
    deps.engine.dispose()


async def test_a_refund_is_one_connected_trace_through_workflow_activities_sql_and_the_gateway(traced, spans):
    order_id = await delivered_order(traced)
    spans.clear()
    handle = await start_refund(traced, order_id, "20.00")
    assert (await finished(traced, handle)).status == "completed"

    start = next(s for s in spans.get_finished_spans() if s.name == "StartWorkflow:RefundWorkflow")
    trace = [s for s in spans.get_finished_spans() if s.context.trace_id == start.context.trace_id]
    ids = {s.context.span_id for s in trace}
    names = [s.name for s in trace]
    assert [s for s in trace if s.parent is None] == [start]
    assert all(s.parent.span_id in ids for s in trace if s.parent is not None), "every span hangs off the trace"
    assert "RunWorkflow:RefundWorkflow" in names
    activities = [s for s in trace if s.name.startswith("RunActivity:")]
    assert len(activities) >= 3, names
    sql = [s for s in trace if s.attributes.get("db.system") or s.attributes.get("db.system.name")]
    http = [s for s in trace if "/v1/refunds" in str(s.attributes.get("url.full") or s.attributes.get("http.url"))]
    assert sql and http, names
    by_id = {s.context.span_id: s for s in trace}
    assert all(by_id[s.parent.span_id].name.startswith("RunActivity:") for s in http)
    annotated = [s for s in activities if s.attributes.get(tracing.CORRELATION_ID) == f"order-{order_id}"]
    assert annotated and all(s.attributes.get(tracing.COMMAND_ID) for s in annotated)


def sample(body: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def test_metrics_after_a_refund_show_the_refund_the_payment_and_the_gateway_call(traced):
    ops = OpsServer("127.0.0.1", free_port(), metrics_engine=traced.engine)
    await ops.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops.port}") as http:
            before = (await http.get("/metrics")).text
            order_id = await delivered_order(traced)
            await finished(traced, await start_refund(traced, order_id, "20.00"))
            after = (await http.get("/metrics")).text
    finally:
        await ops.stop()

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("settleflow_refunds_total", outcome="completed") == 1
    assert moved("settleflow_payments_total", outcome="captured") == 1
    assert moved("settleflow_gateway_request_seconds_count", operation="refund") == 1
    assert sample(after, "settleflow_outbox_unpublished") > 0  # no relay runs in this test
    assert sample(after, "settleflow_fraud_reviews_open") == 0


@pytest.fixture
async def own_env() -> AsyncIterator:
    """A test server of its own: stopping workers mid-flight must not disturb the shared one."""
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from tests.workflows.conftest import test_server_path

    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    from workflows.process import SEARCH_ATTRIBUTES

    environment = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, interceptors=[AddressUpdates(), SealsCommands()], test_server_existing_path=test_server_path()
    )
    await environment.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
        namespace=environment.client.namespace,
        search_attributes={key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in SEARCH_ATTRIBUTES},
    ))  # fmt: skip
    yield environment
    await environment.shutdown()


async def test_sigterm_lets_the_gateway_call_in_flight_finish_and_record_before_the_worker_exits(
    own_env, gateway_url: str, tmp_path: Path
):
    """The shutdown path of worker.py (run_until_stopped, the grace period from the
    settings): a refund whose gateway call is in flight when the stop comes is
    answered and recorded by payments, so nothing is left between "money moved" and
    "we know it"."""
    env = own_env
    grace = Settings(SETTLEFLOW_SHUTDOWN_GRACE_SECONDS=10).shutdown_grace_seconds
    url = f"sqlite:///{tmp_path / 'settleflow.db'}"
    db.upgrade(url)
    deps = Dependencies.connect(url, gateway_url, tmp_path / "mailbox", gateway_timeout_seconds=5)
    harness = Harness(env.client, env, deps.uow_factory, deps.mailbox, gateway_url, deps.engine, deps)
    with ThreadPoolExecutor(max_workers=8) as executor:
        stop = asyncio.Event()
        workers = build_workers(env.client, deps, list(ALL_QUEUES), executor,
                                graceful_shutdown_timeout=timedelta(seconds=grace))  # fmt: skip
        running = asyncio.create_task(run_until_stopped(workers, stop))
        order_id = await delivered_order(harness)
        configure(gateway_url, latency_ms=1500)
        try:
            handle = await start_refund(harness, order_id, "20.00")
            with env.auto_time_skipping_disabled():
                await wait_for_status(handle, "sending")
                await asyncio.sleep(0.5)  # the refund request is now at the gateway
                stopped_at = time.monotonic()
                stop.set()
                await running
        finally:
            configure(gateway_url, latency_ms=0)
        assert time.monotonic() - stopped_at < grace
    payment = harness.payment(order_id)
    charge = payment.capture.gateway_reference
    moved = [r for r in harness.ledger()["refunds"] if r["charge"] == charge]
    assert [r["amount"] for r in moved] == ["20.00"]
    assert [r.status.value for r in payment.refunds.values()] == ["settled"]  # recorded, not only moved
    await harness.close_open_workflows()  # the order's payment process must not wake up in a later test
    deps.engine.dispose()


async def test_an_envconfig_profile_file_points_the_client_at_its_server_and_namespace(env, tmp_path, monkeypatch):
    from adapters.temporal import connect

    address = env.client.service_client.config.target_host
    profile = tmp_path / "temporal.toml"
    profile.write_text(
        '[profile.default]\naddress = "unreachable.invalid:7233"\n\n'
        f'[profile.test-server]\naddress = "{address}"\nnamespace = "{env.client.namespace}"\n'
    )
    for variable in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_TLS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(profile))
    monkeypatch.setenv("TEMPORAL_PROFILE", "test-server")

    client = await connect(Settings())

    assert client.service_client.config.target_host == address
    assert client.namespace == env.client.namespace
    assert await client.service_client.check_health()
    assert (await client.workflow_service.get_system_info(GetSystemInfoRequest())).server_version is not None


async def test_every_recorded_history_replays_with_the_tracing_interceptor_the_workers_now_run():
    """Flows started before tracing was switched on (no trace headers in their
    histories) still replay on workers that have the TracingInterceptor: the current release's
    histories and the oldest ones kept (every history replays without it in test_replay.py; the
    interceptor adds no commands, so the releases between show nothing these do not)."""
    from temporalio.client import WorkflowHistory
    from temporalio.worker import Replayer

    from adapters.codec import data_converter
    from tests.workflows.test_replay import HISTORIES
    from workflows.registry import WORKFLOWS

    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter(), interceptors=[TracingInterceptor()])
    oldest_and_newest = [path for path in HISTORIES
                         if path.parent.name in ("histories", "before-local-activities", "release-2026-11-30")]
    histories = [WorkflowHistory.from_json(path.stem, path.read_text()) for path in oldest_and_newest]

    async def each():
        for history in histories:
            yield history

    results = await replayer.replay_workflows(each(), raise_on_replay_failure=False)

    assert results.replay_failures == {}
    assert len(histories) > 10
