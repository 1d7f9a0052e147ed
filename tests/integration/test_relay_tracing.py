"""The relay's publish and the reporting consumer's apply are one trace: the relay
puts the W3C trace context in the NATS message headers and the consumer continues it.
Real NATS JetStream, a real outbox, an in-memory span exporter."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters import tracing
from reporting import store as reporting_store
from tests.integration.test_relay import approve_refund, run_once
from tests.integration.test_persistence import delivered_order, store
from tests.integration.test_reporting import consume

pytestmark = pytest.mark.nats

SPANS = InMemorySpanExporter()


async def test_each_applied_event_continues_the_trace_of_its_publish_with_the_ids_as_attributes(
    engine, nats_server, jetstream, tmp_path: Path
):
    tracing.install(SPANS)
    SPANS.clear()
    store(engine, delivered_order("o-1", "100.00"))
    approve_refund(engine, "r-1", "30.00")
    reporting = reporting_store.open_store(f"sqlite:///{tmp_path / 'reporting.db'}")

    await run_once(engine, nats_server.url)
    outcomes = await consume(reporting, nats_server.url)

    spans = SPANS.get_finished_spans()
    published = {s.context.span_id: s for s in spans if s.name.startswith("publish ")}
    applied = [s for s in spans if s.name.startswith("apply ")]
    assert sum(outcomes.values()) == 3  # applied or not reported: each is an apply span
    assert len(applied) == 3
    for span in applied:
        parent = published[span.parent.span_id]
        assert span.context.trace_id == parent.context.trace_id
        assert span.attributes["settleflow.correlation_id"] == parent.attributes[tracing.CORRELATION_ID] != ""
        assert span.attributes["settleflow.command_id"] == parent.attributes[tracing.COMMAND_ID]
    reporting.dispose()


async def test_the_publish_continues_the_trace_of_the_step_that_recorded_the_event(
    engine, nats_server, jetstream
):
    """The outbox row keeps the recording step's traceparent, so the starter → workflow →
    activity trace goes on through the relay's publish (and from there to the consumer)."""
    tracing.install(SPANS)
    SPANS.clear()
    store(engine, delivered_order("o-1", "100.00"))
    with tracing.tracer().start_as_current_span("the owner's activity") as step:
        approve_refund(engine, "r-1", "30.00")

    await run_once(engine, nats_server.url)

    published = [s for s in SPANS.get_finished_spans() if s.name.startswith("publish Refund")]
    assert published, "the refund's events were published"
    for span in published:
        assert span.context.trace_id == step.get_span_context().trace_id
        assert span.parent.span_id == step.get_span_context().span_id
    recorded_untraced = [s for s in SPANS.get_finished_spans() if s.name.startswith("publish OrderPlaced")]
    assert recorded_untraced and all(s.parent is None for s in recorded_untraced)  # a trace of its own
