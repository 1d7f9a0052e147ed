"""`orders.refunds_paid_out` and `invoices.credit_notes`: refunds paid out beside their credit notes.

Revision ID: 0010_credit_note_counts
Revises: 0009_parcel_stop
Create Date: 2026-12-07

The daily reconciliation asks invoicing to credit refunds billing paid out that the order's
invoice holds no credit note for (refunds paid before credit notes existed, or by a flow that
ended between the two steps). Each save now writes both counts; one statement compares them
and only the orders that differ are loaded. Rows saved before are counted here from their
state (a refund's status `completed`, the invoice's list of notes), so the refunds paid out
before this upgrade are found by the first daily pass after it. On PostgreSQL the upgrade is one
transaction holding `ADD COLUMN`'s exclusive locks: reads and saves of orders and invoices (and
metric scrapes) wait until the counting is done — on a large database, run it in a quiet hour.

Written by hand and kept free of application imports.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0010_credit_note_counts"
down_revision: str | None = "0009_parcel_stop"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL_PAGE = 1000  # rows read at a time


def upgrade() -> None:
    op.add_column("orders", sa.Column("refunds_paid_out", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_orders_refunds_paid_out", "orders", ["refunds_paid_out"])
    op.add_column("invoices", sa.Column("credit_notes", sa.Integer(), nullable=False, server_default="0"))
    _count("orders", "refunds_paid_out", lambda state: sum(
        1 for refund in (state.get("refunds") or {}).values() if refund.get("status") == "completed"
    ))
    _count("invoices", "credit_notes", lambda state: len(state.get("credit_notes") or []))


def _count(table_name: str, column: str, count: Any) -> None:
    """Each row's count from its state, read a page at a time (by id: a long history of orders
    is never held in memory at once); rows whose count is 0 keep the server default."""
    table = sa.table(table_name, sa.column("id", sa.Text()), sa.column("state", sa.JSON()),
                     sa.column(column, sa.Integer()))
    bind = op.get_bind()
    after = ""
    while rows := bind.execute(
        sa.select(table.c.id, table.c.state).where(table.c.id > after).order_by(table.c.id).limit(BACKFILL_PAGE)
    ).all():
        for row in rows:
            state = json.loads(row.state) if isinstance(row.state, str) else row.state
            if (found := count(state)) > 0:
                bind.execute(sa.update(table).where(table.c.id == row.id).values({column: found}))
        after = rows[-1].id


def downgrade() -> None:
    op.drop_index("ix_orders_refunds_paid_out", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("refunds_paid_out")
    with op.batch_alter_table("invoices") as batch:
        batch.drop_column("credit_notes")
