"""`processed_commands.fingerprint`: what each command id stood for.

Revision ID: 0008_inbox_fingerprint
Revises: 0007_owed_since
Create Date: 2026-12-06

The inbox answered a command id it had seen with its first result, whatever the command now
carrying that id asked: a refund id used again for another order (once Temporal forgot the
first flow) was answered with the first order's facts. Each row now keeps the command's
fingerprint (`Command.fingerprint`: its type and the ids of what it concerns), and
the same id for another command is refused (`command_id_reused`). Rows recorded before have
none, and are taken as before: what they stood for is not known.

Written by hand and kept free of application imports.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_inbox_fingerprint"
down_revision: str | None = "0007_owed_since"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("processed_commands", sa.Column("fingerprint", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("processed_commands") as batch:
        batch.drop_column("fingerprint")
