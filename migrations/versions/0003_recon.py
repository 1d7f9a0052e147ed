"""Reconciliation: discrepancies for support, and the columns reconciliation searches by.

Revision ID: 0003_recon (after 0002_events)
Revises: 0001
Create Date: 2026-12-01

Written by hand and kept free of application imports.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_recon"
down_revision: str | None = "0002_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("orders", sa.Column("reserved_since", Timestamp, nullable=True))
    op.create_index("ix_orders_reserved_since", "orders", ["reserved_since"])
    op.add_column("payments", sa.Column("open_since", Timestamp, nullable=True))
    op.create_index("ix_payments_open_since", "payments", ["open_since"])
    op.create_table(
        "discrepancies",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_discrepancies"),
    )
    op.create_index("ix_discrepancies_status", "discrepancies", ["status"])


def downgrade() -> None:
    op.drop_index("ix_discrepancies_status", table_name="discrepancies")
    op.drop_table("discrepancies")
    op.drop_index("ix_payments_open_since", table_name="payments")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("open_since")
    op.drop_index("ix_orders_reserved_since", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("reserved_since")
