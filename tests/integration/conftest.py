"""Integration fixtures: a migrated database, on SQLite always and on PostgreSQL
when SETTLEFLOW_TEST_POSTGRES_URL names one (CI sets it; then nothing skips).

Every PostgreSQL test gets a schema of its own, dropped afterwards, and the
URL carries it as the connection's search_path: the tests start from nothing
and never see each other's rows, without the cost of a database per test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from adapters.db import make_engine, normalise_url, upgrade

POSTGRES_URL_VARIABLE = "SETTLEFLOW_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The PostgreSQL database to test against; created if it does not exist yet."""
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_URL_VARIABLE}, "
            "e.g. postgresql://postgres@127.0.0.1:5432/settleflow_test"
        )
    url = normalise_url(url)
    _create_database_if_missing(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'settleflow.db'}"
        return

    with fresh_schema(request.getfixturevalue("postgres_server_url")) as url:
        yield url


@contextmanager
def fresh_schema(server_url: str) -> Iterator[str]:
    """A URL whose connections see only a new, empty schema, dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield (
            make_url(server_url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _create_database_if_missing(url: str) -> None:
    probe = create_engine(url)
    try:
        with probe.connect():
            return
    except OperationalError as error:
        if "does not exist" not in str(error):
            raise
    finally:
        probe.dispose()
    target = make_url(url)
    maintenance = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with maintenance.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    except ProgrammingError as error:
        if "already exists" not in str(error):  # the other process of a parallel run made it first
            raise
    finally:
        maintenance.dispose()
