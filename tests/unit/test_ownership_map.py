"""docs/ownership.md is generated from the code (`python starter.py map`): it may not drift."""

from __future__ import annotations

from cli import ownership


def test_the_committed_ownership_map_is_what_the_code_generates():
    assert ownership.committed() == ownership.generate(), "docs/ownership.md is stale: run `python starter.py map`"


def test_the_map_names_every_command_with_its_owner_roles_events_reactions_and_subject():
    text = ownership.generate()
    for command in ownership.commands():
        assert f"| `{command.__name__}` |" in text
    row = next(line for line in text.splitlines() if line.startswith("| `RequestRefund` |"))
    assert row == (
        "| `RequestRefund` | customer, support, system | `RefundApproved` | RefundWorkflow.refund, reporting (consumer) | "
        "`settleflow.billing.refund_approved.v1` on `settleflow.billing.refund_approved` |"
    )
    assert "| `UpdatePaymentMethod` | customer, support, system | `PaymentMethodUpdated` | - | not published: carries a card token |" in text


def test_every_event_an_owner_records_appears_in_the_map():
    recorded = set().union(*ownership.recorded_events().values())
    assert recorded == ownership.EVENT_NAMES
