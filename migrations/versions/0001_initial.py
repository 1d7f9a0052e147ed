"""Aggregate documents, outbox and processed commands.

Revision ID: 0001
Revises:
Create Date: 2025-11-22

Written by hand and kept free of application imports, so that it creates the
same schema for as long as it exists, whatever later becomes of adapters/.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def _document_table(name: str, *extra: sa.Column | sa.Constraint) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        *extra,
        sa.PrimaryKeyConstraint("id", name=f"pk_{name}"),
    )


def upgrade() -> None:
    _document_table("orders", sa.Column("customer_id", sa.Text(), nullable=False))
    op.create_index("ix_orders_customer_id", "orders", ["customer_id"])

    _document_table("payments")

    _document_table(
        "fraud_reviews",
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("approved_at", Timestamp, nullable=True),
    )
    op.create_index("ix_fraud_reviews_customer_id", "fraud_reviews", ["customer_id"])
    op.create_index("ix_fraud_reviews_approved_at", "fraud_reviews", ["approved_at"])

    _document_table("shipments")
    _document_table("notifications")

    _document_table(
        "invoices",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.UniqueConstraint("order_id", name="uq_invoices_order_id"),
    )

    op.create_table(
        "outbox",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("aggregate_type", sa.Text(), nullable=False),
        sa.Column("aggregate_id", sa.Text(), nullable=False),
        sa.Column("aggregate_version", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("correlation_id", sa.Text(), nullable=False),
        sa.Column("causation_id", sa.Text(), nullable=False),
        sa.Column("occurred_at", Timestamp, nullable=True),
        sa.Column("recorded_at", Timestamp, nullable=False),
        sa.Column("published_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("event_id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_aggregate_type_aggregate_id", "outbox", ["aggregate_type", "aggregate_id"])
    op.create_index("ix_outbox_correlation_id", "outbox", ["correlation_id"])

    op.create_table(
        "processed_commands",
        sa.Column("command_id", sa.Text(), nullable=False),
        sa.Column("command_type", sa.Text(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("processed_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("command_id", name="pk_processed_commands"),
    )


def downgrade() -> None:
    op.drop_table("processed_commands")
    op.drop_index("ix_outbox_correlation_id", table_name="outbox")
    op.drop_index("ix_outbox_aggregate_type_aggregate_id", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("invoices")
    op.drop_table("notifications")
    op.drop_table("shipments")
    op.drop_index("ix_fraud_reviews_approved_at", table_name="fraud_reviews")
    op.drop_index("ix_fraud_reviews_customer_id", table_name="fraud_reviews")
    op.drop_table("fraud_reviews")
    op.drop_table("payments")
    op.drop_index("ix_orders_customer_id", table_name="orders")
    op.drop_table("orders")
