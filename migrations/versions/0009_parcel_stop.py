"""`orders.parcel_stop_asked_at`: when billing asked for a stop of the parcel that has no answer yet.

Revision ID: 0009_parcel_stop
Revises: 0008_inbox_fingerprint
Create Date: 2026-12-06

Billing now keeps a stop of the parcel it asked for (`Order.parcel_stop`) until shipping's
answer is recorded, and the daily reconciliation asks about one unanswered for over an hour
whose flow no longer runs (`parcel_not_stopped`), found by this column. An order saved before
has no such record: a stop asked for before this migration and never answered is not found
(the state never said it was waiting for an answer).

Written by hand and kept free of application imports.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_parcel_stop"
down_revision: str | None = "0008_inbox_fingerprint"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("parcel_stop_asked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_orders_parcel_stop_asked_at", "orders", ["parcel_stop_asked_at"])


def downgrade() -> None:
    op.drop_index("ix_orders_parcel_stop_asked_at", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("parcel_stop_asked_at")
