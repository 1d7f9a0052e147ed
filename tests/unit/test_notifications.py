"""Notifications: each message goes out once per (recipient, kind, subject)."""

from __future__ import annotations

import pytest

from domain.notifications.commands import NotifyCustomer, NotifyTeam
from domain.notifications.events import MessageSent
from domain.notifications.notification import Notification, notification_id, recipient_of
from domain.notifications.templates import TEMPLATES, render
from domain.shared.errors import InvalidCommand
from tests.unit.builders import assert_refused, command

REFUND_FACTS = {"refund_id": "r-1", "order_id": "o-1", "amount": "30.00 EUR"}


def to_customer(kind: str = "refund_completed", subject: str = "r-1", facts=None, customer_id: str = "c-1"):
    return command(
        NotifyCustomer, customer_id=customer_id, kind=kind, subject=subject, facts=REFUND_FACTS if facts is None else facts
    )


def to_team(kind: str = "refund_completed", subject: str = "r-1", facts=None, team: str = "c-1"):
    return command(NotifyTeam, team=team, kind=kind, subject=subject, facts=REFUND_FACTS if facts is None else facts)


def test_a_customer_message_is_sent_with_its_template_filled_in():
    cmd = to_customer()
    notification = Notification.new(cmd)
    notification.send(cmd)
    [sent] = notification.pending_events
    assert isinstance(sent, MessageSent)
    assert sent.recipient == "customer:c-1" and sent.kind == "refund_completed" and sent.subject == "r-1"
    assert sent.title == "Your refund is on its way"
    assert sent.body == "We refunded 30.00 EUR for order o-1 (refund r-1)."
    assert sent.notification_id == notification.id == "customer:c-1/refund_completed/r-1"
    assert notification.sent and notification.title == sent.title and notification.body == sent.body


def test_sending_the_same_message_again_records_nothing():
    first = to_customer()
    notification = Notification.new(first)
    notification.send(first)
    notification.clear_events()
    before = notification.model_dump()
    notification.send(to_customer())  # another command, same recipient, kind and subject
    assert notification.pending_events == []
    assert notification.model_dump() == before


def test_sending_again_with_other_facts_does_not_change_the_message_already_sent():
    first = to_customer()
    notification = Notification.new(first)
    notification.send(first)
    notification.clear_events()
    notification.send(to_customer(facts={**REFUND_FACTS, "amount": "99.00 EUR"}))
    assert notification.pending_events == []
    assert "30.00 EUR" in notification.body


@pytest.mark.parametrize(
    "other",
    [
        dict(kind="refund_failed", facts={**REFUND_FACTS}),
        dict(subject="r-2"),
        dict(customer_id="c-2"),
    ],
    ids=["other_kind", "other_subject", "other_customer"],
)
def test_a_message_differing_in_recipient_kind_or_subject_is_another_message(other):
    assert notification_id(to_customer(**other)) != notification_id(to_customer())


def test_a_customer_and_a_team_with_the_same_name_get_different_notifications():
    customer, team = to_customer(customer_id="fraud"), to_team(team="fraud")
    assert recipient_of(customer) == "customer:fraud"
    assert recipient_of(team) == "team:fraud"
    assert notification_id(customer) != notification_id(team)


def test_a_team_message_is_sent_to_the_team():
    cmd = to_team(kind="fraud_review_reminder", team="fraud")
    notification = Notification.new(cmd)
    notification.send(cmd)
    [sent] = notification.pending_events
    assert sent.recipient == "team:fraud" and sent.title == "Fraud review waiting"
    assert sent.notification_id == "team:fraud/fraud_review_reminder/r-1"


def test_a_message_of_an_unknown_kind_is_refused():
    cmd = to_customer(kind="happy_birthday")
    notification = Notification.new(cmd)
    assert_refused(notification, lambda: notification.send(cmd), InvalidCommand, "unknown_message_kind")
    assert not notification.sent


def test_a_message_missing_a_fact_its_template_needs_is_refused():
    cmd = to_customer(facts={"refund_id": "r-1", "order_id": "o-1"})  # no amount
    notification = Notification.new(cmd)
    error = assert_refused(notification, lambda: notification.send(cmd), InvalidCommand, "missing_fact")
    assert "amount" in error.message
    assert not notification.sent


def test_extra_facts_are_ignored():
    title, body = render("refund_completed", {**REFUND_FACTS, "note": "unused"})
    assert body == "We refunded 30.00 EUR for order o-1 (refund r-1)."


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_every_known_kind_renders_when_its_facts_are_given(kind):
    import string

    needed = {field for _, field, _, _ in string.Formatter().parse(TEMPLATES[kind][1]) if field}
    title, body = render(kind, {field: f"<{field}>" for field in needed})
    assert title == TEMPLATES[kind][0]
    assert all(f"<{field}>" in body for field in needed)
