"""Notification: one message to one recipient about one subject, sent at most once.

The design names it CustomerNotification; team alerts (fraud reminders,
support escalations) follow the same once-per-(recipient, kind, subject) rule,
so both live here.
"""

from __future__ import annotations

from domain.notifications.commands import NotificationsCommand, NotifyCustomer, NotifyTeam
from domain.notifications.events import MessageSent
from domain.notifications.templates import render
from domain.shared.aggregate import AggregateRoot


def recipient_of(command: NotificationsCommand) -> str:
    if isinstance(command, NotifyCustomer):
        return f"customer:{command.customer_id}"
    assert isinstance(command, NotifyTeam)
    return f"team:{command.team}"


def notification_id(command: NotificationsCommand) -> str:
    return f"{recipient_of(command)}/{command.kind}/{command.subject}"


def team_notification_id(team: str, kind: str, subject: str) -> str:
    """The id of the one message of `kind` about `subject` to `team` (whether it was sent is its own)."""
    return f"team:{team}/{kind}/{subject}"


class Notification(AggregateRoot):
    recipient: str
    kind: str
    subject: str
    title: str = ""
    body: str = ""
    sent: bool = False

    @classmethod
    def new(cls, command: NotificationsCommand) -> Notification:
        return cls(id=notification_id(command), recipient=recipient_of(command), kind=command.kind, subject=command.subject)

    def send(self, command: NotificationsCommand) -> None:
        """Send once. Asking again for the same message is not an error; it changes nothing."""
        if self.sent:
            return
        self.title, self.body = render(command.kind, command.facts)
        self.sent = True
        self.record(
            command,
            MessageSent(
                notification_id=self.id,
                recipient=self.recipient,
                kind=self.kind,
                subject=self.subject,
                title=self.title,
                body=self.body,
            ),
        )


CustomerNotification = Notification
