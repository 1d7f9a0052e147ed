"""Fill `payments.open_since` and `orders.reserved_since` for rows saved before 0003.

Revision ID: 0006_backfill_recon_columns
Revises: 0005_parked_index
Create Date: 2026-12-06

0003 added the two columns reconciliation searches by (requests still waiting for the
gateway's answer; refunds holding money reserved) but left them empty: only a row saved
again got them. A payment with a refund or capture still `sent` from before 0003, and an
order with a refund in flight, were then never found: nobody asked the gateway, nobody told
support. Here each such row's aggregate is read as the application reads it (adapters/
repository.py `load_state`) and the columns get what a save would write. An empty value
stays empty: nothing is open there. Unlike the other migrations this one imports the
application, because the answer is the aggregate's own (`Payment.open_since`,
`Order.reserved_since`); it only reads state, and rows of every earlier version still load.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_backfill_recon_columns"
down_revision: str | None = "0005_parked_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    from adapters import tables
    from adapters.repository import load_state
    from domain.billing.order import Order
    from domain.payments.payment import Payment

    bind = op.get_bind()
    for table, aggregate_type, name in ((tables.payments, Payment, "open_since"), (tables.orders, Order, "reserved_since")):
        column = table.c[name]  # its own type: times are written as every save writes them
        rows = bind.execute(sa.select(table.c.id, table.c.version, table.c.state).where(column.is_(None))).all()
        for row in rows:
            state = json.loads(row.state) if isinstance(row.state, str) else row.state
            value = getattr(load_state(aggregate_type, row.id, row.version, state), name)
            if value is not None:
                bind.execute(sa.update(table).where(table.c.id == row.id).values({name: value}))


def downgrade() -> None:
    pass  # the columns keep their values; 0003's downgrade drops them
