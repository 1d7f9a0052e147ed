"""Each outbox row keeps the trace context of the step that recorded it.

Revision ID: 0004_trace
Revises: 0003_recon
Create Date: 2026-12-01

`trace_parent` is the W3C traceparent of the span the owner's activity ran in (NULL when
nothing was traced): the relay's `publish` span continues that trace, so one trace runs
from a starter command through the workflow, the activity and its SQL to the publish and
the consumer's apply.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_trace"
down_revision: str | None = "0003_recon"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("trace_parent", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("trace_parent")
