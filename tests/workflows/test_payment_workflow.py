"""PaymentWorkflow and the warehouse's command workflows on the time-skipping server."""

from __future__ import annotations

from decimal import Decimal

from tests.workflows.flows import FLOWS_QUEUE, WAREHOUSE, keep_history, new_id, place_order, real_time
from domain.shared.actor import Actor, Role
from domain.shared.money import Money
from workflows.payment import OrderRequest, PaymentWorkflow
from workflows.shipping import ConfirmDeliveryWorkflow, DeliveryRequest, ShipmentRequest, ShipOrderWorkflow


def captures_of(harness, order_id: str) -> list[dict]:
    return [c for c in harness.ledger()["captures"] if c["reference"] == order_id]


async def test_a_placed_order_is_captured_once_marked_paid_and_the_customer_told(harness):
    order_id = new_id("o")
    handle = await harness.client.start_workflow(
        PaymentWorkflow.run,
        OrderRequest(
            order_id=order_id,
            customer_id="c-1",
            amount=Money.of("120.00", "EUR"),
            card_token="tok_visa",
            placed_by=Actor(role=Role.CUSTOMER, id="c-1"),
        ),
        id=f"payment-{order_id}",
        task_queue=FLOWS_QUEUE,
    )
    result = await handle.result()
    await keep_history(handle, "payment_paid")

    assert result.status == "paid"
    assert [c["amount"] for c in captures_of(harness, order_id)] == ["120.00"]
    assert harness.order(order_id).paid.amount == Decimal("120.00")
    assert [m["kind"] for m in harness.messages("customer:c-1")] == ["payment_received"]


async def test_a_declined_card_leaves_the_order_unpaid_and_the_customer_told(harness):
    order_id, result = await place_order(harness, card="tok_capture_declined")

    assert (result["status"], result["decline_code"]) == ("declined", "insufficient_funds")
    assert captures_of(harness, order_id) == []
    assert harness.order(order_id).paid.amount == Decimal("0.00")
    assert [m["kind"] for m in harness.messages("customer:c-1")] == ["payment_declined"]


async def test_a_capture_that_timed_out_after_charging_is_not_charged_twice(harness):
    order_id, result = await place_order(harness, card="tok_timeout")

    assert result["status"] == "paid"
    assert len(captures_of(harness, order_id)) == 1


async def test_shipping_and_delivery_are_recorded_by_shipping_and_billing(harness):
    order_id, _ = await place_order(harness)
    async with real_time(harness.env):
        ship = await harness.client.start_workflow(
            ShipOrderWorkflow.run,
            ShipmentRequest(order_id=order_id, tracking="TRK-9", requested_by=WAREHOUSE),
            id=f"ship-{order_id}",
            task_queue=FLOWS_QUEUE,
        )
        shipped = await ship.result()
        deliver = await harness.client.start_workflow(
            ConfirmDeliveryWorkflow.run,
            DeliveryRequest(order_id=order_id, requested_by=WAREHOUSE),
            id=f"deliver-{order_id}",
            task_queue=FLOWS_QUEUE,
        )
        delivered = await deliver.result()
    await keep_history(ship, "ship_order")
    await keep_history(deliver, "confirm_delivery")

    assert (shipped.status, delivered.status) == ("shipped", "delivered")
    order = harness.order(order_id)
    assert (order.fulfilment, order.tracking) == ("delivered", "TRK-9")
    assert order.delivered_at is not None
