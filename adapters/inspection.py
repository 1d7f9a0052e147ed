"""Read-only views of the outbox and the inbox, for tests and command-line tools."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from adapters.tables import outbox, processed_commands


def outbox_rows(engine: Engine, correlation_id: str | None = None) -> list[dict[str, Any]]:
    """Outbox rows as dicts (payload parsed), in the order they were recorded;
    only those of one process when `correlation_id` is given."""
    statement = select(outbox).order_by(
        outbox.c.recorded_at,
        outbox.c.aggregate_type,
        outbox.c.aggregate_id,
        outbox.c.aggregate_version,
        outbox.c.position,
    )
    if correlation_id is not None:
        statement = statement.where(outbox.c.correlation_id == correlation_id)
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(statement).mappings()]


def processed_count(engine: Engine) -> int:
    """How many commands have been handled (each counted once, however often delivered)."""
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(processed_commands)).scalar_one()
