"""A partial index of the outbox's parked rows, by aggregate.

Revision ID: 0005_parked_index
Revises: 0004_trace
Create Date: 2026-12-06

A parked row holds its aggregate's later rows (adapters/outbox.py HELD): the relay asks, for
each pending row, whether its aggregate has a parked row. This index holds only parked rows
(usually none), so that question is one probe of a tiny index instead of a walk over all of
the aggregate's rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_parked_index"
down_revision: str | None = "0004_trace"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARKED = sa.text("parked_at IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_outbox_parked_aggregate", "outbox", ["aggregate_type", "aggregate_id"],
        sqlite_where=PARKED, postgresql_where=PARKED,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_parked_aggregate", table_name="outbox")
