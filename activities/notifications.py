"""The notifications owner's activities: decide once, commit, then deliver (once)."""

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
        return self._deliver(decide(self.uow, command, lambda uow: self._send(uow, command)))

    @activity.defn(name=NotifyTeam.activity_name())
    def notify_team(self, command: NotifyTeam) -> Outcome:
        return self._deliver(decide(self.uow, command, lambda uow: self._send(uow, command)))

    @staticmethod
    def _send(uow: Any, command: NotificationsCommand) -> None:
        notification = uow.notifications.find(notification_id(command)) or uow.notifications.add(
            Notification.new(command)
        )
        notification.send(command)

    def _deliver(self, outcome: Outcome) -> Outcome:
        """Messages leave only after their record is committed. If delivery fails (or the
        worker dies) after the commit, the activity is retried with the same command id:
        `decide` then returns the stored outcome, whose messages are delivered again. The
        mailbox keys each message by its notification id, so it still arrives once."""
        for message in outcome.events:
            if isinstance(message, MessageSent):
                self.mailbox.deliver(message)
        return outcome
