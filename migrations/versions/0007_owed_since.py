"""`orders.owed_since`: since when an order owes money back with no refund on its way.

Revision ID: 0007_owed_since
Revises: 0006_backfill_recon_columns
Create Date: 2026-12-06

Reconciliation's daily pass flags money a cancelled order has owed its customer for over an
hour with no refund on its way (`money_owed`), found by this column. Orders saved before it
have neither the column nor `Order.owed_since` in their state: each order that owes money back
now (cancelled, or its parcel returned) gets both, dated by its row's `updated_at` (the latest it can have started: the
flag comes no earlier than it should, never later than a day after the upgrade). Like 0006, it
imports the application, because what is owed is the aggregate's own answer (`Order.owed`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_owed_since"
down_revision: str | None = "0006_backfill_recon_columns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("orders", sa.Column("owed_since", Timestamp, nullable=True))
    op.create_index("ix_orders_owed_since", "orders", ["owed_since"])

    from adapters import tables
    from adapters.repository import dump_state, load_state
    from domain.billing.order import Order

    orders = tables.orders  # its own column types: times are written as every save writes them
    bind = op.get_bind()
    rows = bind.execute(sa.select(orders.c.id, orders.c.version, orders.c.state, orders.c.updated_at)).all()
    for row in rows:
        state = json.loads(row.state) if isinstance(row.state, str) else row.state
        if not (state.get("cancelled") or state.get("fulfilment") == "returned") or state.get("owed_since"):
            continue
        order = load_state(Order, row.id, row.version, state)
        if not order.owed.is_positive:
            continue
        order.owed_since = row.updated_at
        # A new version: a process that loaded the row before saves over it no more (its save
        # expects the old one), and reloads.
        bind.execute(sa.update(orders).where(orders.c.id == row.id).values(
            state=dump_state(order), owed_since=row.updated_at, version=row.version + 1,
        ))


def downgrade() -> None:
    op.drop_index("ix_orders_owed_since", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("owed_since")
