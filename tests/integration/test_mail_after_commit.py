"""A message to a customer leaves only after its record is committed, and exactly once:
a commit that fails sends nothing; a delivery that fails after the commit is made good by
the retry of the same command, which finds the stored outcome and delivers it again."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from activities.notifications import NotificationsActivities
from adapters import tables
from adapters.mailbox import FileMailbox
from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types
from domain.notifications.commands import NotifyCustomer
from domain.notifications.events import MessageSent
from tests.unit.builders import command

FACTS = {"refund_id": "r-1", "order_id": "o-1", "amount": "30.00 EUR"}


def notify() -> NotifyCustomer:
    return command(NotifyCustomer, customer_id="c-1", kind="refund_completed", subject="r-1", facts=FACTS,
                   command_id="refund-r-1/notify-completed")


class DatabaseGoneAtCommit(SqlUnitOfWork):
    def commit(self, *args, **kwargs):
        raise ConnectionError("the database went away at commit")


class MailboxDownOnce(FileMailbox):
    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.down = True

    def deliver(self, message: MessageSent) -> None:
        if self.down:
            self.down = False
            raise ConnectionError("the mail server went away")
        super().deliver(message)


def notification_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(tables.notifications)).scalar_one()


def test_a_message_whose_record_is_not_committed_is_not_sent(engine, tmp_path):
    mailbox = FileMailbox(tmp_path / "mailbox")
    failing = NotificationsActivities(lambda: DatabaseGoneAtCommit(engine, default_aggregate_types()), mailbox)
    with pytest.raises(ConnectionError):
        failing.notify_customer(notify())
    assert mailbox.messages() == []
    assert notification_rows(engine) == 0


def test_a_message_committed_but_not_delivered_is_delivered_by_the_retry_once(engine, tmp_path):
    mailbox = MailboxDownOnce(tmp_path / "mailbox")
    activities = NotificationsActivities(lambda: SqlUnitOfWork(engine, default_aggregate_types()), mailbox)
    with pytest.raises(ConnectionError):
        activities.notify_customer(notify())
    assert notification_rows(engine) == 1 and mailbox.messages() == []

    retried = activities.notify_customer(notify())  # Temporal retries the same command
    again = activities.notify_customer(notify())

    assert [type(e).__name__ for e in retried.events] == ["MessageSent"] == [type(e).__name__ for e in again.events]
    [message] = mailbox.messages("customer:c-1")
    assert message["title"] == "Your refund is on its way"
    assert notification_rows(engine) == 1


def dead_pid() -> int:
    """A process id that no longer runs: a child that has exited and been reaped."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_writer_killed_before_its_rename_leaves_nothing_once_the_retry_delivers(engine, tmp_path):
    mailbox = FileMailbox(tmp_path / "mailbox")
    activities = NotificationsActivities(lambda: SqlUnitOfWork(engine, default_aggregate_types()), mailbox)
    activities.notify_customer(notify())
    [delivered] = list((tmp_path / "mailbox").glob("*.json"))
    # What a worker SIGKILLed between writing and renaming leaves behind, and what a live
    # process writing the same message at this moment has on disk.
    killed = mailbox.writing / f"{delivered.stem}.{dead_pid()}.tmp"
    killed.write_text('{"notification_id": "half')
    writing = mailbox.writing / f"{delivered.stem}.{os.getppid()}.tmp"
    writing.write_text('{"notification_id": "half')

    activities.notify_customer(notify())  # the retry of the same command delivers it again

    assert not killed.exists()
    assert writing.exists()  # still being written by a live process: left to it
    assert mailbox.half_written() == [writing]
    assert [m["title"] for m in mailbox.messages("customer:c-1")] == ["Your refund is on its way"]
    assert notification_rows(engine) == 1


def test_half_written_files_of_the_earlier_mailbox_layout_go_when_a_worker_starts(tmp_path):
    """Before `.writing/`, half-written messages sat beside the delivered ones, where no
    delivery sweeps now: a dead writer's go at start, a live writer's and every message stay."""
    folder = tmp_path / "mailbox"
    folder.mkdir()
    message = folder / "0123456789abcdef0123456789abcdef.json"
    message.write_text('{"notification_id": "n-1"}')
    killed = folder / f"{message.stem}.{dead_pid()}.tmp"
    killed.write_text('{"notification_id": "half')
    writing = folder / f"{message.stem}.{os.getppid()}.tmp"
    writing.write_text('{"notification_id": "half')

    FileMailbox(folder)

    assert not killed.exists()
    assert writing.exists() and message.exists()


def test_the_same_message_delivered_by_two_threads_at_once_is_read_whole_and_kept_once(tmp_path):
    """A timed-out local activity and its retry may deliver one message at the same moment in
    one worker: each thread writes its own half-written file, so neither tears the other's,
    and a reader meanwhile sees the whole message or none."""
    mailbox = FileMailbox(tmp_path / "mailbox")
    message = MessageSent(notification_id="n-1", recipient="customer:c-1", kind="refund_completed",
                          subject="r-1", title="Your refund is on its way", body="30.00 EUR")

    def deliver_often() -> None:
        for _ in range(200):
            mailbox.deliver(message)

    def read_often() -> int:
        return sum(len(mailbox.messages("customer:c-1")) for _ in range(200))

    with ThreadPoolExecutor(3) as pool:
        writers = [pool.submit(deliver_often) for _ in range(2)]
        reader = pool.submit(read_often)
        for writer in writers:
            writer.result()  # no FileNotFoundError from a rename of a file the other thread moved
        reader.result()  # no JSONDecodeError from a torn file

    assert [m["title"] for m in mailbox.messages()] == ["Your refund is on its way"]
    assert mailbox.half_written() == []
