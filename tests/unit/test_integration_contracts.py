"""Public integration events: what leaves settleflow, in which shape, and that a published
version is never broken (the committed JSON Schemas are the promise)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import pytest

from domain import contracts as domain
from domain.shared.money import Money
from integration import contracts as public
from integration import schemas
from integration.envelope import CloudEvent
from integration.translation import TABLE, TABLE_VERSION, NotPublished, Unpublishable, table_version, translate

WHEN = datetime(2031, 3, 4, 5, 6, 7, tzinfo=UTC)


def outbox_row(event: Any, **overrides: Any) -> dict[str, Any]:
    """An outbox row as the unit of work stores it (money in minor units)."""
    row = {
        "event_id": "e-1",
        "event_type": type(event).__name__,
        "schema_version": 1,
        "payload": event.model_dump(mode="json", context={"money": "minor_units"}),
        "aggregate_type": "orders",
        "aggregate_id": "o-1",
        "aggregate_version": 3,
        "position": 0,
        "correlation_id": "order-o-1",
        "causation_id": "refund-r-1/request",
        "occurred_at": WHEN,
        "recorded_at": WHEN,
    }
    return row | overrides


def test_every_domain_event_type_is_either_translated_or_listed_as_not_published():
    assert set(TABLE) == set(domain.EVENT_TYPES)


def test_the_events_the_issue_names_are_published():
    published = {c.type_name() for entry in TABLE.values() if not isinstance(entry, NotPublished) for c, _ in entry}
    for name in (
        "billing.order_placed", "billing.order_paid", "billing.order_cancelled",
        "payments.payment_captured", "payments.payment_abandoned",
        "billing.refund_approved", "billing.refund_rejected", "billing.refund_completed",
        "billing.refund_failed", "billing.refund_cancelled",
        "payments.gateway_refund_settled", "payments.gateway_refund_declined",
        "fraud.fraud_review_opened", "fraud.fraud_review_decided",
        "invoicing.invoice_created", "shipping.shipment_intercepted",
    ):  # fmt: skip
        assert f"settleflow.{name}.v1" in published


def test_a_refund_approval_becomes_a_cloudevent_with_its_trace_and_the_amount_as_a_decimal_string():
    event = domain.RefundApproved(
        order_id="o-1", refund_id="r-1", customer_id="c-1", amount=Money(amount=Decimal("12.30"), currency="EUR")
    )
    [message] = translate(outbox_row(event))
    envelope = CloudEvent.from_json(message.envelope.to_json())  # survives the wire
    assert message.subject == "settleflow.billing.refund_approved"
    assert message.message_id == "e-1"
    assert envelope.specversion == "1.0"
    assert (envelope.id, envelope.source, envelope.type) == ("e-1", "settleflow/billing", "settleflow.billing.refund_approved.v1")
    assert (envelope.subject, envelope.time, envelope.datacontenttype) == ("o-1", WHEN, "application/json")
    assert (envelope.correlationid, envelope.causationid) == ("order-o-1", "refund-r-1/request")
    assert (envelope.aggregatetype, envelope.aggregateversion) == ("orders", 3)
    assert envelope.data == {
        "refund_id": "r-1", "order_id": "o-1", "customer_id": "c-1", "amount": "12.30", "currency": "EUR"
    }  # fmt: skip


def test_a_credit_note_leaves_as_invoice_credited_with_its_numbers_and_the_amount_as_a_decimal_string():
    event = domain.InvoiceCredited(
        credit_note_number="CN-1", invoice_number="INV-1", order_id="o-1", customer_id="c-1", refund_id="r-1",
        amount=Money(amount=Decimal("5000"), currency="JPY"),
    )
    [message] = translate(outbox_row(event, aggregate_type="invoices", aggregate_id="INV-1"))
    envelope = CloudEvent.from_json(message.envelope.to_json())
    assert message.subject == "settleflow.invoicing.invoice_credited"
    assert (envelope.type, envelope.subject) == ("settleflow.invoicing.invoice_credited.v1", "INV-1")
    assert envelope.data == {
        "credit_note_number": "CN-1", "invoice_number": "INV-1", "order_id": "o-1", "customer_id": "c-1",
        "refund_id": "r-1", "amount": "5000", "currency": "JPY",
    }  # fmt: skip


def test_a_card_token_never_leaves_settleflow():
    event = domain.PaymentMethodUpdated(order_id="o-1", card_token="tok_visa_secret")
    assert translate(outbox_row(event, aggregate_type="payments")) == []
    for contract in public.CONTRACTS:
        assert not any("card" in name or "token" in name for name in contract.model_fields), contract


def test_an_event_type_the_table_does_not_know_cannot_be_published():
    row = outbox_row(domain.OrderPaid(order_id="o-1", amount=Money(amount=Decimal(5), currency="EUR")))
    with pytest.raises(Unpublishable, match="unknown event type 'OrderRefunded'"):
        translate(row | {"event_type": "OrderRefunded"})
    with pytest.raises(Unpublishable, match="payload does not fit"):
        translate(row | {"payload": {"order_id": "o-1"}})


def test_an_event_its_contract_refuses_is_unpublishable_so_the_relay_parks_it_and_goes_on(monkeypatch):
    import integration.translation as translation

    refusing = ((public.OrderPaidV1, lambda e: public.OrderPaidV1(order_id=e.order_id, amount="a lot", currency="EUR")),)
    monkeypatch.setitem(translation.BY_NAME, "OrderPaid", refusing)
    row = outbox_row(domain.OrderPaid(order_id="o-1", amount=Money(amount=Decimal(5), currency="EUR")))
    with pytest.raises(Unpublishable, match="OrderPaid does not fit settleflow.billing.order_paid.v1"):
        translate(row)


def test_a_field_this_table_does_not_read_is_left_aside_and_the_event_still_goes_out():
    # A newer worker's event with a field added, met by this relay in a rolling deploy.
    event = domain.OrderPaid(order_id="o-1", amount=Money(amount=Decimal(5), currency="EUR"))
    row = outbox_row(event)
    [message] = translate(row | {"payload": {**row["payload"], "paid_with": "instalments"}})
    assert message.envelope.data == {"order_id": "o-1", "amount": "5.00", "currency": "EUR"}


def test_the_table_version_changes_when_an_events_fields_change_so_another_relays_parks_are_tried_again():
    class OrderPaid(domain.OrderPaid):  # the same event, a field added
        paid_with: str = "card"

    changed = {OrderPaid if event_type is domain.OrderPaid else event_type: entry for event_type, entry in TABLE.items()}
    assert table_version(changed) != TABLE_VERSION
    assert table_version(dict(reversed(list(TABLE.items())))) == TABLE_VERSION  # the table's order is no change


def test_the_table_version_changes_when_a_translation_is_fixed_so_the_rows_it_parked_are_tried_again(monkeypatch):
    import integration.translation as translation

    fixed = translation._translation_code().replace('"amount": str(money.amount)', '"amount": format(money.amount, "f")')
    assert fixed != translation._translation_code()  # the same table, one translation's code changed
    monkeypatch.setattr(translation, "_translation_code", lambda: fixed)

    assert table_version(TABLE) != TABLE_VERSION


# -- compatibility of published versions -----------------------------------------------------------------------------
def test_every_published_version_is_compatible_with_its_committed_schema():
    assert schemas.check() == []


def test_the_committed_schemas_are_exactly_what_the_code_generates():
    """Run `python -m integration.schemas` after adding an optional field, and commit the result."""
    assert schemas.committed() == schemas.current()


class _Published(public.Contract):
    owner: ClassVar[str] = "billing"
    event: ClassVar[str] = "example"
    refund_id: str
    amount: str
    note: str | None = None


def _changed(**fields: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__annotations__": {}, "owner": "billing", "event": "example"}
    for name, (annotation, default) in fields.items():
        namespace["__annotations__"][name] = annotation
        if default is not ...:
            namespace[name] = default
    namespace["__annotations__"] |= {"owner": ClassVar[str], "event": ClassVar[str]}
    return schemas.schema_of(type("Changed", (public.Contract,), namespace))


@pytest.mark.parametrize(
    ("change", "fields", "problem"),
    [
        ("removed", {"refund_id": (str, ...), "note": (str | None, None)}, "'amount' was removed"),
        ("renamed", {"refund_id": (str, ...), "value": (str, ...), "note": (str | None, None)}, "'amount' was removed"),
        ("retyped", {"refund_id": (str, ...), "amount": (int, ...), "note": (str | None, None)}, "'amount' changed type"),
        ("made required", {"refund_id": (str, ...), "amount": (str, ...), "note": (str, ...)}, "'note' became required"),
        ("new required", {"refund_id": (str, ...), "amount": (str, ...), "note": (str | None, None),
                          "reason": (str, ...)}, "'reason' became required"),
    ],
)  # fmt: skip
def test_a_breaking_change_to_a_published_version_is_caught(change, fields, problem):
    old = json.loads(json.dumps(schemas.schema_of(_Published)))
    assert any(problem in p for p in schemas.breaking_changes(old, _changed(**fields))), change


def test_adding_an_optional_field_keeps_a_published_version_compatible():
    old = schemas.schema_of(_Published)
    new = _changed(refund_id=(str, ...), amount=(str, ...), note=(str | None, None), channel=(str | None, None))
    assert schemas.breaking_changes(old, new) == []


def test_check_reports_a_published_version_whose_field_was_dropped(tmp_path):
    for name, schema in schemas.current().items():
        (tmp_path / name).write_text(json.dumps(schema))
    target = tmp_path / public.RefundApprovedV1.schema_file()
    promised = json.loads(target.read_text())
    promised["properties"]["reason_code"] = {"type": "string"}
    target.write_text(json.dumps(promised))
    assert schemas.check(tmp_path) == [
        "settleflow.billing.refund_approved.v1.json: field 'reason_code' was removed or renamed"
    ]


@pytest.mark.parametrize(("cancelled_by", "reason", "published"), [
    ("customer:c-1", "my address is 12 Rue X, call me on +33 6 12 34 56 78", "requested_by_customer"),
    ("support:sam", "customer phoned, see ticket 4411", "requested_by_support"),
    ("system:payment-o-1", "payment_failed", "payment_failed"),
])
def test_a_cancellation_leaves_as_a_reason_code_never_in_a_persons_own_words(cancelled_by, reason, published):
    event = domain.OrderCancelled(order_id="o-1", customer_id="c-1", reason=reason, cancelled_by=cancelled_by)
    [message] = translate(outbox_row(event))
    assert message.envelope.data["reason"] == published
    assert reason.encode() not in message.envelope.to_json() or reason == published
