"""settleflow's own Prometheus metrics (Temporal's SDK metrics are served by the
runtime on their own address; see worker.py).

Counted where it happens (activities, in the worker process):

    settleflow_refunds_total{outcome}            a refund decided: approved, completed, rejected, failed, cancelled
    settleflow_payments_total{outcome}           a payment decided: captured, declined, abandoned
    settleflow_gateway_request_seconds{operation}   each gateway call's latency (histogram)
    settleflow_gateway_errors_total{operation,kind} unavailable (retried), refused_request (a bug or bad
                                                 configuration), declined (the card's answer)

Read from the database at scrape time (read-only queries, `DatabaseCollector`):

    settleflow_fraud_reviews_open                reviews waiting for an analyst
    settleflow_fraud_review_oldest_age_seconds   how long the oldest of them has waited
    settleflow_outbox_unpublished                outbox rows not yet published
    settleflow_outbox_lag_seconds                age of the oldest unpublished row (0 when none)
    settleflow_outbox_parked                     rows the relay can never publish (need a person)
    settleflow_reconciliation_discrepancies{status,kind}   rows of reconciliation's `discrepancies`
                                                 table (absent while that table does not exist)
    settleflow_refunds_awaiting_credit_note      refunds billing paid out that the order's invoice holds no
                                                 credit note for and nobody has in hand yet: the daily
                                                 reconciliation asks invoicing for them (those invoicing
                                                 refused are support's, and not counted)
    settleflow_metrics_scrape_errors_total       a scrape whose queries failed (the database is down)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import JSON, Column, Engine, MetaData, Table, Text, func, inspect, select

from adapters.outbox import lag
from adapters.tables import fraud_reviews, invoices, notifications, orders
from domain.notifications.notification import team_notification_id
from domain.reconciliation.commands import discrepancy_id
from domain.reconciliation.uncredited import FLAGGED, INVOICE_NOT_CREDITED_NOTICE
from domain.payments.gateway import Declined, GatewayRefusedRequest, GatewayUnavailable

log = logging.getLogger("settleflow.metrics")
disable_created_metrics()  # no *_created series: they only clutter dashboards

REFUNDS = Counter("settleflow_refunds", "Refunds decided, by outcome", ["outcome"])
PAYMENTS = Counter("settleflow_payments", "Payments decided, by outcome", ["outcome"])
GATEWAY_SECONDS = Histogram(
    "settleflow_gateway_request_seconds", "Payment gateway call latency", ["operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)  # fmt: skip
GATEWAY_ERRORS = Counter("settleflow_gateway_errors", "Payment gateway errors, by kind", ["operation", "kind"])

# Event type -> (counter, outcome). A refund or payment is counted once: when its owner records the fact.
OUTCOMES: dict[str, tuple[Counter, str]] = {
    "RefundApproved": (REFUNDS, "approved"),
    "RefundCompleted": (REFUNDS, "completed"),
    "RefundRejected": (REFUNDS, "rejected"),
    "RefundFailed": (REFUNDS, "failed"),
    "RefundCancelled": (REFUNDS, "cancelled"),
    "PaymentCaptured": (PAYMENTS, "captured"),
    "PaymentDeclined": (PAYMENTS, "declined"),
    "PaymentAbandoned": (PAYMENTS, "abandoned"),
}


def count_decision(events: Iterable[Any]) -> None:
    """Count the outcomes among a newly decided command's events (never a duplicate's)."""
    for event in events:
        if (found := OUTCOMES.get(type(event).__name__)) is not None:
            counter, outcome = found
            counter.labels(outcome=outcome).inc()


class MeasuredGateway:
    """The payments port with each call's latency and errors measured; answers pass unchanged."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:  # api_base, close, ... of the real gateway
        return getattr(self.inner, name)

    def _measure(self, operation: str, call: Any, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            answer = call(*args)
        except GatewayUnavailable:
            GATEWAY_ERRORS.labels(operation=operation, kind="unavailable").inc()
            raise
        except GatewayRefusedRequest:
            GATEWAY_ERRORS.labels(operation=operation, kind="refused_request").inc()
            raise
        finally:
            GATEWAY_SECONDS.labels(operation=operation).observe(time.perf_counter() - started)
        if isinstance(answer, Declined):
            GATEWAY_ERRORS.labels(operation=operation, kind="declined").inc()
        return answer

    def account(self) -> str:
        return self.inner.account()  # read once per process, then kept: not a call worth a series

    def capture(self, request: Any) -> Any:
        return self._measure("capture", self.inner.capture, request)

    def refund(self, request: Any) -> Any:
        return self._measure("refund", self.inner.refund, request)

    def find_capture(self, request: Any) -> Any:
        return self._measure("find_capture", self.inner.find_capture, request)

    def find_refund(self, request: Any) -> Any:
        return self._measure("find_refund", self.inner.find_refund, request)

    def settlements(self, day: Any) -> Any:
        return self._measure("settlements", self.inner.settlements, day)


# Reconciliation's table (branch recon: a document table with an indexed status column).
_discrepancies = Table(
    "discrepancies", MetaData(), Column("id", Text), Column("status", Text), Column("state", JSON)
)


# Refunds paid out beyond their invoice's credit notes, summed over orders (one statement on the
# counts each save keeps: migration 0010), less those support holds: a refund invoicing refused
# has its flow's message to support or reconciliation's flag, never both (uncredited.py).
_CREDIT_NOTES = select(invoices.c.credit_notes).where(invoices.c.order_id == orders.c.id).scalar_subquery()
_MISSING = orders.c.refunds_paid_out - func.coalesce(_CREDIT_NOTES, 0)
_REFUNDS_WITHOUT_CREDIT_NOTE = select(func.coalesce(func.sum(_MISSING), 0)).where(
    orders.c.refunds_paid_out > 0, _MISSING > 0
)
_HELD_BY_SUPPORT = select(
    select(func.count()).where(
        notifications.c.id.like(team_notification_id("support", INVOICE_NOT_CREDITED_NOTICE, "%"))
    ).scalar_subquery()
    + select(func.count()).where(_discrepancies.c.id.like(discrepancy_id(FLAGGED, "%"))).scalar_subquery()
)


class DatabaseCollector(Collector):
    """Business gauges read at scrape time with read-only queries."""

    def __init__(self, engine: Engine, clock: Any = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.clock = clock
        self.errors = 0

    def collect(self) -> Iterator[Metric]:
        errors = CounterMetricFamily("settleflow_metrics_scrape_errors", "Scrapes whose database queries failed")
        try:
            metrics = list(self._read())
        except Exception as trouble:  # noqa: BLE001 - a scrape must answer even with the database down
            log.warning("metrics: database queries failed: %s", trouble)
            self.errors += 1
            metrics = []
        errors.add_metric([], self.errors)
        yield from metrics
        yield errors

    def _read(self) -> Iterator[Metric]:
        now = self.clock()
        with self.engine.connect() as connection:
            is_open = fraud_reviews.c.state["status"].as_string() == "open"
            count, oldest = connection.execute(
                select(func.count(), func.min(fraud_reviews.c.updated_at)).where(is_open)
            ).one()
            inspector = inspect(connection)
            has_discrepancies = inspector.has_table("discrepancies")
            awaiting_credit_notes = _refunds_awaiting_credit_note(connection, inspector)
            kind = _discrepancies.c.state["kind"].as_string().label("kind")
            discrepancies = (
                connection.execute(
                    select(_discrepancies.c.status, kind, func.count()).group_by(_discrepancies.c.status, kind)
                ).all()
                if has_discrepancies
                else []
            )
        oldest = fraud_reviews.c.updated_at.type.process_result_value(oldest, None) if oldest is not None else None
        yield _gauge("settleflow_fraud_reviews_open", "Fraud reviews waiting for an analyst", count)
        yield _gauge(
            "settleflow_fraud_review_oldest_age_seconds", "Age of the oldest open fraud review",
            (now - oldest).total_seconds() if oldest else 0.0,
        )  # fmt: skip
        state = lag(self.engine)
        age = (now - state.oldest_unpublished).total_seconds() if state.oldest_unpublished else 0.0
        yield _gauge("settleflow_outbox_unpublished", "Outbox rows not yet published", state.unpublished)
        yield _gauge("settleflow_outbox_lag_seconds", "Age of the oldest unpublished outbox row", max(age, 0.0))
        yield _gauge("settleflow_outbox_parked", "Outbox rows the relay cannot publish", state.parked)
        if awaiting_credit_notes is not None:
            yield _gauge("settleflow_refunds_awaiting_credit_note",
                         "Refunds paid out with no credit note that nobody has in hand yet", awaiting_credit_notes)  # fmt: skip
        if has_discrepancies:
            family = GaugeMetricFamily(
                "settleflow_reconciliation_discrepancies", "Reconciliation discrepancies", labels=["status", "kind"]
            )
            for status, kind, n in discrepancies:
                family.add_metric([status or "", kind or ""], n)
            yield family


def _refunds_awaiting_credit_note(connection: Any, inspector: Any) -> int | None:
    """None before migration 0010 (an ops server ahead of the workers' first start), or when its
    queries fail: that gauge is left out, the others still answer."""
    try:
        if "refunds_paid_out" not in {column["name"] for column in inspector.get_columns("orders")}:
            return None
        missing = connection.execute(_REFUNDS_WITHOUT_CREDIT_NOTE).scalar_one()
        return max(0, missing - connection.execute(_HELD_BY_SUPPORT).scalar_one())
    except Exception as trouble:  # noqa: BLE001 - one gauge's query must not cost the scrape the others
        log.warning("metrics: refunds awaiting a credit note could not be read: %s", trouble)
        return None


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


_database_registries: dict[int, CollectorRegistry] = {}


def exposition(engine: Engine | None) -> bytes:
    """The /metrics body: the process's counters, then the database gauges."""
    body = generate_latest(REGISTRY)
    if engine is not None:
        if (registry := _database_registries.get(id(engine))) is None:
            registry = _database_registries[id(engine)] = CollectorRegistry(auto_describe=False)
            registry.register(DatabaseCollector(engine))
        body += generate_latest(registry)
    return body
