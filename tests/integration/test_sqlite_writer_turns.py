"""One SQLite file has one writer at a time: the threads of one process take turns on a
lock of the process (handed over the moment a transaction ends) instead of sleeping in
SQLite's busy handler; PostgreSQL transactions never wait for each other here."""

from __future__ import annotations

import threading

import pytest

from adapters.db import make_engine, upgrade
from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types

AGGREGATES = default_aggregate_types()


def open_in_thread(engine, entered: threading.Event, leave: threading.Event) -> threading.Thread:
    def work() -> None:
        with SqlUnitOfWork(engine, AGGREGATES):
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_a_second_thread_opens_its_sqlite_transaction_once_the_first_has_ended(tmp_path):
    url = f"sqlite:///{tmp_path / 'turns.db'}"
    upgrade(url)
    engine = make_engine(url)
    first_in, first_leave, second_in, second_leave = (threading.Event() for _ in range(4))

    first = open_in_thread(engine, first_in, first_leave)
    assert first_in.wait(10)
    second = open_in_thread(engine, second_in, second_leave)
    assert not second_in.wait(0.3), "two transactions of one process were open on the SQLite file at once"

    first_leave.set()
    assert second_in.wait(10), "the second transaction never got its turn"
    second_leave.set()
    first.join(10), second.join(10)
    engine.dispose()


def test_a_unit_of_work_that_fails_to_open_gives_its_turn_back(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'turns.db'}"
    upgrade(url)
    engine = make_engine(url)

    def broken(self, connection):
        raise RuntimeError("repositories could not be opened")

    with monkeypatch.context() as patched:
        patched.setattr(SqlUnitOfWork, "_open_repositories", broken)
        with pytest.raises(RuntimeError):
            with SqlUnitOfWork(engine, AGGREGATES):
                pass

    entered, leave = threading.Event(), threading.Event()
    thread = open_in_thread(engine, entered, leave)
    assert entered.wait(10), "the failed unit of work kept the file's turn"
    leave.set()
    thread.join(10)
    engine.dispose()


@pytest.mark.postgres
def test_postgresql_transactions_of_one_process_are_open_at_the_same_time(postgres_server_url):
    from tests.integration.conftest import fresh_schema

    with fresh_schema(postgres_server_url) as url:
        upgrade(url)
        engine = make_engine(url)
        first_in, first_leave, second_in, second_leave = (threading.Event() for _ in range(4))
        first = open_in_thread(engine, first_in, first_leave)
        assert first_in.wait(10)
        second = open_in_thread(engine, second_in, second_leave)
        assert second_in.wait(10), "a PostgreSQL transaction waited for another one of the same process"
        first_leave.set(), second_leave.set()
        first.join(10), second.join(10)
        engine.dispose()
