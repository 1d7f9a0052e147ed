"""Reconciliation against the real Stripe-shaped simulator (its own process): the scenario
tokens lose answers or refuse requests, and the look-ups by business id tell the truth."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from domain.payments.payment import AttemptStatus, GatewayRefundStatus
from tests.workflows.flows import delivered_order, start_refund, wait_for_status
from tests.workflows.test_reconciliation import reconcile, start_payment


def refunds_in_ledger(harness, order_id: str) -> list[dict]:
    charge = harness.payment(order_id).capture.gateway_reference
    return [r for r in harness.ledger()["refunds"] if r["charge"] == charge]


async def test_a_refund_the_simulator_paid_but_whose_answers_were_all_lost_ends_settled_and_paid_once(harness):
    order_id = await delivered_order(harness, card="tok_refund_answer_lost")
    handle = await start_refund(harness, order_id, "30.00")
    refund_id = handle.id.removeprefix("refund-")
    await wait_for_status(handle, "sending", env=harness.env)
    await harness.env.sleep(timedelta(hours=25))
    await wait_for_status(handle, "awaiting_reconciliation", env=harness.env)
    assert harness.payment(order_id).refunds[refund_id].status is GatewayRefundStatus.UNKNOWN

    await reconcile(harness)
    result = await handle.result()

    assert result.status == "completed"
    assert [r["amount"] for r in refunds_in_ledger(harness, order_id)] == ["30.00"]
    assert harness.order(order_id).refunded.amount == Decimal("30.00")


async def test_a_capture_the_simulator_refused_is_reconciled_as_not_charged(harness):
    order_id, handle = await start_payment(harness, "tok_capture_refused")
    await wait_for_status(handle, "awaiting_reconciliation", env=harness.env)
    assert harness.payment(order_id).attempts[0].status is AttemptStatus.UNKNOWN
    # "Not found" is taken once no send can still be on the wire (the client's timeouts).
    await harness.env.sleep(timedelta(minutes=1))

    await reconcile(harness)
    view = await wait_for_status(handle, "recovering", env=harness.env)

    assert view.decline_code == "not_charged"
    assert [c for c in harness.ledger()["captures"] if c["reference"] == order_id] == []
