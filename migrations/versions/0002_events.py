"""Outbox rows the relay could not publish are parked with a reason; what each row went out as;
what caused each processed command.

Revision ID: 0002_events
Revises: 0001
Create Date: 2026-12-01

`published_as` holds the CloudEvents types a row was published as (space separated),
NULL for an event that stays inside settleflow. `parked_at`/`park_reason` mark a row
that can never be published as it is (an unknown type): shown by `starter.py outbox`,
never silently skipped. The index serves the relay's "what is still unpublished" query.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_events"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("published_as", sa.Text(), nullable=True))
        batch.add_column(sa.Column("parked_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("park_reason", sa.Text(), nullable=True))
    op.create_index("ix_outbox_published_at", "outbox", ["published_at"])
    with op.batch_alter_table("processed_commands") as batch:
        batch.add_column(sa.Column("causation_id", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("processed_commands") as batch:
        batch.drop_column("causation_id")
    op.drop_index("ix_outbox_published_at", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("park_reason")
        batch.drop_column("parked_at")
        batch.drop_column("published_as")
