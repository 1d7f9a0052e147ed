"""OpenTelemetry tracing: one trace from a starter command to the reporting consumer.

    starter (StartWorkflow span, TracingInterceptor on the client)
      -> RunWorkflow -> StartActivity / RunActivity (every activity, local ones too)
           -> the SQL statements of its unit of work (SQLAlchemy instrumentation)
           -> the gateway's HTTP call (httpx instrumentation under the Stripe SDK)
    relay: `publish <type>` span per outbox row  -> W3C traceparent in the NATS headers
      -> reporting consumer: `apply <type>` span, a child of the relay's publish

The correlation id (`settleflow.correlation_id`) and the command id
(`settleflow.command_id`) are attributes of the activity, publish and apply spans.

Export: OTLP over HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads
the standard OTEL_* variables itself); otherwise no provider is installed and
nothing is recorded or sent. Tests install their own provider with an in-memory
exporter (`install(exporter)`).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Mapping
from typing import TypeVar

from opentelemetry import propagate, trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import get_meter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from sqlalchemy import Engine

TRACER = "settleflow"
CORRELATION_ID = "settleflow.correlation_id"
COMMAND_ID = "settleflow.command_id"
ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"

T = TypeVar("T")
_lock = threading.Lock()
_provider: TracerProvider | None = None
_traced_engines: set[int] = set()
_waiting_engines: weakref.WeakSet[Engine] = weakref.WeakSet()  # to trace once a provider is installed
_exporters: set[int] = set()


def setup(service: str) -> TracerProvider | None:
    """A process's tracing, from the environment: OTLP export when the endpoint is set."""
    endpoint = os.environ.get(ENDPOINT_VARIABLE, "")
    if not endpoint:
        return None
    if not endpoint.startswith(("http://", "https://")):
        # Not an address the exporter can send to (`starter.py config` names it): export nothing
        # rather than fail every batch until the process exits.
        logging.getLogger(__name__).warning("%s=%r is not an http(s) URL: no traces are exported", ENDPOINT_VARIABLE, endpoint)
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return install(OTLPSpanExporter(), service=service, batch=True)


def install(exporter: SpanExporter, service: str = "settleflow", batch: bool = False) -> TracerProvider:
    """Install the process's tracer provider once (OpenTelemetry allows one) and the
    httpx instrumentation; a second call adds the exporter to the same provider
    (an exporter already installed is not added twice)."""
    global _provider
    with _lock:
        if id(exporter) in _exporters:
            return _provider
        _exporters.add(id(exporter))
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        if _provider is None:
            _provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
            trace.set_tracer_provider(_provider)
            HTTPXClientInstrumentor().instrument()
        _provider.add_span_processor(processor)
        waiting = list(_waiting_engines)
        _waiting_engines.clear()
    for engine in waiting:  # engines made before tracing was on
        _trace(engine)
    return _provider


def flush() -> None:
    """Send what is buffered (before a process exits with os._exit)."""
    if _provider is not None:
        _provider.force_flush()


def trace_engine(engine: Engine) -> Engine:
    """Record a span per SQL statement of this engine (once per engine), from when a tracer
    provider is installed: with none, the statement hooks would cost every transaction
    CPU (about 7 % of a refund's activity time) to record nothing."""
    with _lock:
        if _provider is None:
            _waiting_engines.add(engine)
            return engine
    return _trace(engine)


def _trace(engine: Engine) -> Engine:
    with _lock:
        if id(engine) in _traced_engines:
            return engine
        _traced_engines.add(id(engine))
    usage = get_meter(TRACER).create_up_down_counter("db.client.connections.usage", unit="connections")
    EngineTracer(trace.get_tracer(TRACER), engine, usage)
    return engine


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


async def within_span(name: str, work: Awaitable[T]) -> T:
    """Await `work` inside a span (a starter command: the root of its flow's trace)."""
    with tracer().start_as_current_span(name):
        return await work


def annotate(correlation_id: str, command_id: str) -> None:
    """Put the ids on the current span (an activity's RunActivity span)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(CORRELATION_ID, correlation_id)
        span.set_attribute(COMMAND_ID, command_id)


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context (W3C traceparent) to message headers."""
    propagate.inject(headers)
    return headers


def current_traceparent() -> str | None:
    """The current span's W3C traceparent, to store beside what this step records (None: no trace)."""
    carried: dict[str, str] = {}
    propagate.inject(carried)
    return carried.get("traceparent")


def continuing(traceparent: str | None):  # -> opentelemetry Context | None
    """The context to start a span in so that it continues a stored traceparent (None: a new trace)."""
    return propagate.extract({"traceparent": traceparent}) if traceparent else None


def extract(headers: Mapping[str, str] | None):  # -> opentelemetry Context
    return propagate.extract(dict(headers or {}))
