"""A refund end to end on the time-skipping server, with the real activities: its facts leave
through the relay and arrive on the real NATS stream as public events with one correlation id."""

from __future__ import annotations

import pytest

from integration.envelope import CloudEvent
from relay import Relay, RelaySettings
from reporting import store
from reporting.consumer import ReportingConsumer
from tests.nats_fixtures import stream_messages, stream_settings
from tests.workflows.flows import delivered_order, finished, start_refund

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
    ]
    assert len({e.correlationid for e in chain}) == 1 and chain[0].correlationid
    assert all(e.causationid for e in chain)
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
