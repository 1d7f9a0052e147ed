"""PaymentWorkflow and the warehouse's command workflows on the time-skipping server."""

from __future__ import annotations

from decimal import Decimal

from domain.shared.actor import Actor
from tests.workflows.flows import (
    FLOWS_QUEUE,
    WAREHOUSE,
    keep_history,
    place_order,
    real_time,
)
from workflows.payment import PaymentWorkflow
from workflows.shipping import ConfirmDeliveryWorkflow, DeliveryRequest, ShipmentRequest, ShipOrderWorkflow
from tests.tokens import signed


def captures_of(harness, order_id: str) -> list[dict]:
    return [c for c in harness.ledger()["captures"] if c["reference"] == order_id]


def kinds(harness, recipient: str = "customer:c-1") -> list[str]:
    return sorted(m["kind"] for m in harness.messages(recipient))


async def test_a_placed_order_is_captured_once_invoiced_once_and_the_customer_told(harness):
    order_id, view = await place_order(harness)

    assert view["status"] == "paid"
    assert view["invoice_number"].startswith("INV-")
    assert [c["amount"] for c in captures_of(harness, order_id)] == ["120.00"]
    assert harness.order(order_id).paid.amount == Decimal("120.00")
    with harness.uow_factory() as uow:
        assert uow.invoices.for_order(order_id).id == view["invoice_number"]
    [message] = harness.messages("customer:c-1")
    assert message["kind"] == "payment_received" and view["invoice_number"] in message["body"]


async def test_a_capture_that_timed_out_after_charging_is_not_charged_twice(harness):
    order_id, view = await place_order(harness, card="tok_timeout")

    assert view["status"] == "paid"
    assert len(captures_of(harness, order_id)) == 1


async def test_shipping_and_delivery_are_recorded_and_close_the_payment_process(harness):
    order_id, _ = await place_order(harness)
    async with real_time(harness.env):
        ship = await harness.client.start_workflow(
            ShipOrderWorkflow.run,
            ShipmentRequest(order_id=order_id, tracking="TRK-9", requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            id=f"ship-{order_id}",
            task_queue=FLOWS_QUEUE,
        )
        shipped = await ship.result()
        deliver = await harness.client.start_workflow(
            ConfirmDeliveryWorkflow.run,
            DeliveryRequest(order_id=order_id, requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            id=f"deliver-{order_id}",
            task_queue=FLOWS_QUEUE,
        )
        delivered = await deliver.result()
        payment = await harness.client.get_workflow_handle_for(PaymentWorkflow.run, f"payment-{order_id}").result()
    await keep_history(ship, "ship_order")
    await keep_history(deliver, "confirm_delivery")

    assert (shipped.status, delivered.status, payment.status) == ("shipped", "delivered", "paid")
    order = harness.order(order_id)
    assert (order.fulfilment, order.tracking) == ("delivered", "TRK-9")
    assert order.delivered_at is not None
