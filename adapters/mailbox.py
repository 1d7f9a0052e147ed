"""The local mailbox: each message is one JSON file named after its notification.

Writing the same notification again replaces the file with identical content,
so a retried delivery can never become a second message.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from domain.notifications.events import MessageSent


class FileMailbox:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def deliver(self, message: MessageSent) -> None:
        path = self._path_for(message.notification_id)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
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

    def messages(self, recipient: str | None = None) -> list[dict]:
        found = [json.loads(p.read_text()) for p in sorted(self.folder.glob("*.json"))]
        return [m for m in found if recipient is None or m["to"] == recipient]

    def _path_for(self, notification_id: str) -> Path:
        # Ids carry arbitrary text (customer ids, refund ids): hash them into a safe name.
        return self.folder / f"{hashlib.sha256(notification_id.encode()).hexdigest()[:32]}.json"
