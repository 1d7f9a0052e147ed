"""The local mailbox: each message is one JSON file named after its notification.

Writing the same notification again replaces the file with identical content,
so a retried delivery can never become a second message.

A message is written under `.writing/` (same folder tree, so the rename is atomic) and
then renamed into place. Keeping the half-written files apart means the sweep after a
delivery lists only messages being written now, never the whole mailbox: listing the
mailbox itself made every delivery cost more as messages piled up (0.3 ms of CPU at 100
messages, 3 ms at 5,000).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from domain.notifications.events import MessageSent

WRITING = ".writing"  # half-written messages, beside the mailbox (README "Persistence")


class FileMailbox:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.writing = self.folder / WRITING
        self.writing.mkdir(parents=True, exist_ok=True)
        self._sweep_earlier_layout()

    def deliver(self, message: MessageSent) -> None:
        path = self._path_for(message.notification_id)
        # One file per writing thread (a timed-out local activity and its retry may deliver the
        # same message at once in one process); the pid comes last, for the sweep.
        temporary = self.writing / f"{path.stem}.{threading.get_ident()}.{os.getpid()}.tmp"
        temporary.write_text(
            json.dumps(
                {
                    "notification_id": message.notification_id,
                    "to": message.recipient,
                    "kind": message.kind,
                    "subject": message.subject,
                    "title": message.title,
                    "body": message.body,
                },
                indent=2,
            )
        )
        temporary.replace(path)  # atomic: a reader sees the whole message or none
        self._sweep_left_behind(path)

    def half_written(self) -> list[Path]:
        """Messages being written now, or left by a writer killed before its rename."""
        return sorted(self.writing.glob("*.tmp"))

    def _sweep_left_behind(self, path: Path) -> None:
        """A writer killed between writing and renaming leaves its `.writing/<name>.<thread>.<pid>.tmp`.
        Once the message is delivered whole, those of processes no longer alive go (a live one
        may still be writing the same message: it finishes by replacing the same file)."""
        # os.scandir and plain string tests: pathlib's glob compiled its pattern anew on
        # every delivery, most of the sweep's cost.
        _sweep_dead_writers(self.writing, f"{path.stem}.")

    def _sweep_earlier_layout(self) -> None:
        """Mailboxes written before `.writing/` kept half-written files beside the messages,
        where no delivery sweeps any more: those of writers no longer alive go once, at start."""
        _sweep_dead_writers(self.folder, "")

    def messages(self, recipient: str | None = None) -> list[dict]:
        found = [json.loads(p.read_text()) for p in sorted(self.folder.glob("*.json"))]
        return [m for m in found if recipient is None or m["to"] == recipient]

    def _path_for(self, notification_id: str) -> Path:
        # Ids carry arbitrary text (customer ids, refund ids): hash them into a safe name.
        return self.folder / f"{hashlib.sha256(notification_id.encode()).hexdigest()[:32]}.json"


def _sweep_dead_writers(folder: Path, prefix: str) -> None:
    """Remove the `<name>.<pid>.tmp` files in `folder` whose name starts with `prefix` and
    whose writing process is gone."""
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            pid = name[: -len(".tmp")].rpartition(".")[2]
            if pid.isascii() and pid.isdigit() and not _alive(int(pid)):
                Path(entry.path).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
