"""The notifications owner's activities: decide once, deliver once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities.handling import decide
from activities.ports import Mailbox
from domain.contracts import Outcome
from domain.notifications.commands import NotificationsCommand, NotifyCustomer, NotifyTeam
from domain.notifications.events import MessageSent
from domain.notifications.notification import Notification, notification_id


class NotificationsActivities:
    def __init__(self, uow_factory: Callable[[], Any], mailbox: Mailbox) -> None:
        self.uow = uow_factory
        self.mailbox = mailbox

    @activity.defn(name=NotifyCustomer.activity_name())
    def notify_customer(self, command: NotifyCustomer) -> Outcome:
        return decide(self.uow, command, lambda uow: self._send(uow, command))

    @activity.defn(name=NotifyTeam.activity_name())
    def notify_team(self, command: NotifyTeam) -> Outcome:
        return decide(self.uow, command, lambda uow: self._send(uow, command))

    def _send(self, uow: Any, command: NotificationsCommand) -> None:
        notification = uow.notifications.find(notification_id(command)) or uow.notifications.add(
            Notification.new(command)
        )
        notification.send(command)
        # Delivered inside the transaction, keyed by the notification id: if the
        # commit then fails, the retry rewrites the same message rather than a second one.
        for message in notification.pending_events:
            if isinstance(message, MessageSent):
                self.mailbox.deliver(message)
