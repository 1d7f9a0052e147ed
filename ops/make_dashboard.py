"""Writes ops/grafana/settleflow.json, the Grafana dashboard (run once after editing PANELS).

    python ops/make_dashboard.py

Each panel: title, kind (timeseries | stat), PromQL expressions with legends, unit.
The same table feeds ops/dashboard.py, which draws the panels from scraped metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

W = "[1m]"
PANELS = [
    ("Refunds by outcome (per minute)", "timeseries", "short",
     [(f"sum by (outcome) (increase(settleflow_refunds_total{W}))", "{{outcome}}")]),
    ("Payments by outcome (per minute)", "timeseries", "short",
     [(f"sum by (outcome) (increase(settleflow_payments_total{W}))", "{{outcome}}")]),
    ("Open fraud reviews", "timeseries", "short",
     [("settleflow_fraud_reviews_open", "open reviews")]),
    ("Oldest open fraud review (age)", "timeseries", "s",
     [("settleflow_fraud_review_oldest_age_seconds", "oldest review")]),
    ("Gateway latency p50 / p95 by operation", "timeseries", "s",
     [(f"histogram_quantile(0.95, sum by (le, operation) (rate(settleflow_gateway_request_seconds_bucket{W})))", "p95 {{operation}}"),
      (f"histogram_quantile(0.5, sum by (le, operation) (rate(settleflow_gateway_request_seconds_bucket{W})))", "p50 {{operation}}")]),
    ("Gateway errors by kind (per minute)", "timeseries", "short",
     [(f"sum by (kind) (increase(settleflow_gateway_errors_total{W}))", "{{kind}}")]),
    ("Outbox lag (oldest unpublished row)", "timeseries", "s",
     [("settleflow_outbox_lag_seconds", "lag")]),
    ("Outbox: unpublished and parked rows", "timeseries", "short",
     [("settleflow_outbox_unpublished", "unpublished"), ("settleflow_outbox_parked", "parked")]),
    ("Reconciliation discrepancies (open), refunds awaiting a credit note", "timeseries", "short",
     [('sum by (kind) (settleflow_reconciliation_discrepancies{status="open"})', "{{kind}}"),
      ("max(settleflow_refunds_awaiting_credit_note)", "refunds awaiting a credit note")]),
    ("Temporal: activity execution latency p95", "timeseries", "ms",
     [(f"histogram_quantile(0.95, sum by (le) (rate(temporal_activity_execution_latency_bucket{W})))", "activities"),
      (f"histogram_quantile(0.95, sum by (le) (rate(temporal_local_activity_execution_latency_bucket{W})))", "local activities")]),
    ("Temporal: workflow task schedule-to-start p95", "timeseries", "ms",
     [(f"histogram_quantile(0.95, sum by (le) (rate(temporal_workflow_task_schedule_to_start_latency_bucket{W})))", "p95")]),
    ("Temporal: workflows completed / failed (per minute)", "timeseries", "short",
     [(f"sum by (workflow_type) (increase(temporal_workflow_completed{W}))", "completed {{workflow_type}}"),
      (f"sum by (workflow_type) (increase(temporal_workflow_failed{W}))", "failed {{workflow_type}}")]),
]  # fmt: skip


def dashboard() -> dict:
    panels = []
    for index, (title, kind, unit, targets) in enumerate(PANELS):
        panels.append({
            "id": index + 1,
            "type": kind,
            "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 8, "x": (index % 3) * 8, "y": (index // 3) * 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [
                {"refId": chr(ord("A") + n), "expr": expr, "legendFormat": legend}
                for n, (expr, legend) in enumerate(targets)
            ],
        })  # fmt: skip
    return {
        "title": "settleflow",
        "uid": "settleflow",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }


if __name__ == "__main__":
    target = Path(__file__).parent / "grafana" / "settleflow.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {target}")
