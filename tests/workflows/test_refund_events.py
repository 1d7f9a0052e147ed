"""A refund end to end on the time-skipping server, with the real activities: its facts leave
through the relay and arrive on the real NATS stream as public events with one correlation id."""

from __future__ import annotations

import pytest

from sqlalchemy import select

from adapters.inspection import outbox_rows
from adapters.tables import processed_commands
from cli.events import order_chain
from domain.shared.actor import Actor
from integration.envelope import CloudEvent
from relay import Relay, RelaySettings
from reporting import store
from reporting.consumer import ReportingConsumer
from tests.nats_fixtures import stream_messages, stream_settings
from tests.workflows.flows import delivered_order, finished, place_order, ship, start_refund
from workflows.payment import CancellationRequest, PaymentWorkflow
from tests.tokens import signed

pytestmark = pytest.mark.nats


async def test_a_refunds_events_arrive_on_the_stream_with_one_correlation_id_from_request_to_settlement(
    harness, nats_server, jetstream, tmp_path
):
    _, js = jetstream
    order_id = await delivered_order(harness, amount="80.00")
    handle = await start_refund(harness, order_id, amount="30.00")
    result = await finished(harness, handle)
    assert result.status == "completed"

    relay = Relay(harness.engine, RelaySettings(once_timeout_seconds=30), stream_settings(nats_server.url))
    try:
        assert await relay.run(once=True) == 0
    finally:
        await relay.close()

    published = [CloudEvent.from_json(m.data) for m in await stream_messages(js)]
    refund_id = handle.id.removeprefix("refund-")
    chain = [e for e in published if e.data.get("refund_id") == refund_id]
    assert [e.type for e in chain] == [
        "settleflow.billing.refund_approved.v1",
        "settleflow.payments.gateway_refund_settled.v1",
        "settleflow.billing.refund_completed.v1",
        "settleflow.invoicing.invoice_credited.v1",  # the credit note for the money paid back
    ]
    # one business transaction: the order's payment, shipping, delivery and refund share its correlation id
    assert {e.correlationid for e in published} == {f"order-{order_id}"}
    assert [e.causationid.split("/")[0] for e in chain] == [handle.id] * 4  # each caused by a refund command
    credited = next(r for r in order_chain(harness.engine, order_id) if r["event_type"] == "InvoiceCredited")
    assert credited["command_type"] == "CreditInvoice"

    # every command records what caused it: completing the refund was caused by the settlement
    rows = order_chain(harness.engine, order_id)
    settled = next(r for r in rows if r["event_type"] == "GatewayRefundSettled")
    completed = next(r for r in rows if r["event_type"] == "RefundCompleted")
    assert (completed["command_type"], completed["command_caused_by"]) == ("CompleteRefund", settled["event_id"])
    requested = next(r for r in rows if r["event_type"] == "RefundApproved")
    assert requested["command_caused_by"] == f"{handle.id}/request"  # the customer's request
    assert all("card_token" not in e.data for e in published)

    reporting = store.open_store(f"sqlite:///{tmp_path / 'reporting.db'}")
    try:
        await ReportingConsumer(reporting, stream_settings(nats_server.url), fetch_timeout_seconds=0.5).run(once=True)
        report = store.report(reporting)
    finally:
        reporting.dispose()
    assert report.totals(report.refunds, "completed") == {"EUR": result_amount("30.00")}
    assert report.totals(report.payments, "captured") == {"EUR": result_amount("80.00")}


def result_amount(text: str):
    from decimal import Decimal

    return Decimal(text)


async def test_a_cancelled_orders_flows_and_its_child_refund_share_the_orders_correlation_id(harness):
    order_id, _ = await place_order(harness)
    await ship(harness, order_id)
    payment = harness.client.get_workflow_handle(f"payment-{order_id}")
    await payment.execute_update(
        PaymentWorkflow.cancel_order, CancellationRequest(requested_by=Actor.parse("support:sam"), **signed(Actor.parse("support:sam")), reason="moved")
    )
    result = await payment.result()
    assert result["status"] == "refunded"

    rows = outbox_rows(harness.engine)
    flows = {row["causation_id"].split("/")[0] for row in rows}
    assert {f"payment-{order_id}", f"ship-{order_id}", result["refund_workflow_id"]} <= flows
    assert {row["correlation_id"] for row in rows} == {f"order-{order_id}"}
    with harness.engine.connect() as connection:
        causes = connection.execute(select(processed_commands.c.causation_id)).scalars().all()
    assert causes and all(causes)
