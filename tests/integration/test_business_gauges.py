"""The gauges read from the database at scrape time: the fraud queue and its oldest
entry's age, reconciliation's discrepancies by status and kind, and refunds paid out that no
credit note answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from sqlalchemy import insert

from adapters.metrics import DatabaseCollector
from adapters.tables import discrepancies as discrepancy_table
from adapters.tables import fraud_reviews, invoices, notifications, orders

NOW = datetime(2031, 3, 4, 12, 0, tzinfo=UTC)


def gauges(engine) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(engine, clock=lambda: NOW))
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for family in registry.collect() for s in family.samples
    }


def review(engine, refund_id: str, status: str, waiting: timedelta) -> None:
    with engine.begin() as connection:
        connection.execute(insert(fraud_reviews).values(
            id=refund_id, version=1, state={"id": refund_id, "status": status}, updated_at=NOW - waiting,
            customer_id="c-1", approved_at=NOW - waiting,
        ))  # fmt: skip


def test_open_fraud_reviews_are_counted_and_the_oldest_ones_wait_is_its_age(engine):
    review(engine, "r-1", "open", timedelta(hours=5))
    review(engine, "r-2", "open", timedelta(minutes=10))
    review(engine, "r-3", "approved", timedelta(days=2))  # decided: not waiting

    found = gauges(engine)

    assert found[("settleflow_fraud_reviews_open", ())] == 2
    assert found[("settleflow_fraud_review_oldest_age_seconds", ())] == 5 * 3600
    assert ("settleflow_reconciliation_discrepancies", ()) not in found  # none recorded: no series


def test_discrepancies_are_counted_by_status_and_kind(engine):
    table = discrepancy_table
    with engine.begin() as connection:
        for n, (kind, status) in enumerate([("missing_at_gateway", "open"), ("missing_at_gateway", "open"),
                                            ("amount_mismatch", "resolved")]):  # fmt: skip
            connection.execute(insert(table).values(
                id=f"d-{n}", version=1, state={"kind": kind}, updated_at=NOW, status=status
            ))  # fmt: skip

    found = gauges(engine)

    discrepancies = {labels: v for (name, labels), v in found.items() if name == "settleflow_reconciliation_discrepancies"}
    assert discrepancies == {
        (("kind", "missing_at_gateway"), ("status", "open")): 2,
        (("kind", "amount_mismatch"), ("status", "resolved")): 1,
    }


def test_refunds_paid_out_with_no_credit_note_are_counted_less_those_support_has_in_hand(engine):
    with engine.begin() as connection:
        for order_id, paid_out, credit_notes in [("o-1", 2, 1), ("o-2", 1, None), ("o-3", 1, 1), ("o-4", 0, None),
                                                 ("o-5", 1, None), ("o-6", 1, 0)]:  # fmt: skip
            connection.execute(insert(orders).values(
                id=order_id, version=1, state={}, updated_at=NOW, customer_id="c-1", refunds_paid_out=paid_out,
            ))  # fmt: skip
            if credit_notes is not None:
                connection.execute(insert(invoices).values(
                    id=f"INV-{order_id}", version=1, state={}, updated_at=NOW, order_id=order_id,
                    credit_notes=credit_notes,
                ))  # fmt: skip
        # o-5's refund: invoicing refused it, and its flow told support; o-6's: reconciliation flagged it.
        connection.execute(insert(notifications).values(
            id="team:support/invoice_not_credited_support/r-5", version=1, state={}, updated_at=NOW,
        ))  # fmt: skip
        connection.execute(insert(discrepancy_table).values(
            id="refund_not_credited:r-6", version=1, state={"kind": "refund_not_credited"}, updated_at=NOW,
            status="resolved",
        ))  # fmt: skip

    # missing: one of o-1's, o-2's, o-5's, o-6's; support holds o-5's and o-6's
    assert gauges(engine)[("settleflow_refunds_awaiting_credit_note", ())] == 2
