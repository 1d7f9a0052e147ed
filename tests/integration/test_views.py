"""Billing's view of an order (`starter.py order`): read, then let go of the database;
no database to read is said plainly, and never created."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from activities.billing import BillingActivities
from adapters.db import make_engine, upgrade
from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types
from adapters.views import DatabaseUnavailable, order_view
from domain.billing.commands import OrderLine, PlaceOrder
from domain.shared.actor import Actor
from domain.shared.money import Money


def test_a_view_reads_the_order_and_leaves_no_connection_open(tmp_path):
    path = tmp_path / "settleflow.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    BillingActivities(lambda: SqlUnitOfWork(engine, default_aggregate_types())).place_order(PlaceOrder(
        command_id="payment-o-1/place", actor=Actor.system("test"), issued_at=datetime(2026, 11, 1, tzinfo=UTC),
        order_id="o-1", customer_id="c-1", lines=[OrderLine(description="goods", amount=Money.of("5.00", "EUR"))],
    ))
    engine.dispose()

    view = order_view(url, "o-1")

    assert view is not None and view.total == "5.00 EUR"
    # SQLite removes the write-ahead log when the last connection to the file closes.
    assert not (tmp_path / "settleflow.db-wal").exists()


def test_a_view_of_a_missing_sqlite_file_says_so_and_creates_nothing(tmp_path):
    missing = tmp_path / "var" / "settleflow.db"
    with pytest.raises(DatabaseUnavailable, match="no database at"):
        order_view(f"sqlite:///{missing}", "o-1")
    assert not missing.parent.exists()
