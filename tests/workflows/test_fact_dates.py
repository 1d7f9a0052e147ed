"""Facts dated before the facts they depend on are refused by their owner with a reason
code, through the same flows the warehouse uses; an order placed earlier (`placed_at`,
`starter.py place-order --at`) keeps its date, so facts after it are taken."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError

from domain.shared.actor import Actor, Role
from domain.shared.money import Money
from tests.workflows.flows import deliver, finished, new_id, place_order, real_time, ship, start_refund, wait_for_status
from workflows.payment import OrderRequest, PaymentWorkflow
from workflows.process import FLOWS_QUEUE
from tests.tokens import signed


async def test_a_shipment_dated_before_its_order_was_placed_is_refused_and_billing_keeps_the_order_unshipped(harness):
    order_id, _ = await place_order(harness)
    placed_at = harness.order(order_id).placed_at

    with pytest.raises(WorkflowFailureError) as failed:
        await ship(harness, order_id, at=placed_at - timedelta(days=3))

    assert "was placed at" in str(failed.value.cause) and "cannot have shipped earlier" in str(failed.value.cause)
    assert harness.order(order_id).fulfilment == "pending"
    with harness.uow_factory() as uow:
        assert uow.shipments.find(order_id) is None  # billing said no before shipping recorded anything


async def test_an_order_placed_fifty_days_ago_ships_and_delivers_in_the_past_and_its_window_is_closed(harness):
    now = await harness.env.get_current_time()
    order_id = new_id("o")
    async with real_time(harness.env):
        handle = harness.track(await harness.client.start_workflow(
            PaymentWorkflow.run,
            OrderRequest(order_id=order_id, customer_id="c-1", amount=Money.of("80.00", "EUR"), card_token="tok_visa",
                         placed_by=Actor(role=Role.CUSTOMER, id="c-1"), **signed(Actor(role=Role.CUSTOMER, id="c-1")), placed_at=now - timedelta(days=50)),
            id=f"payment-{order_id}", task_queue=FLOWS_QUEUE,
        ))
    await wait_for_status(handle, "paid")
    await ship(harness, order_id, at=now - timedelta(days=45))
    await deliver(harness, order_id, at=now - timedelta(days=40))

    result = await finished(harness, await start_refund(harness, order_id))

    order = harness.order(order_id)
    assert order.placed_at == now - timedelta(days=50) and order.fulfilment == "delivered"
    assert (result.status, result.reason) == ("rejected", "refund_window_closed")
