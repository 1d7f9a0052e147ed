"""Failed-payment recovery and cancellation on the time-skipping server."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio.client import WorkflowUpdateFailedError

from domain.shared.actor import Actor
from domain.shared.messages import ID_MAX
from tests.workflows.flows import deliver, keep_history, place_order, ship, wait_for_status
from workflows.payment import CancellationRequest, NewPaymentMethod, PaymentWorkflow
from tests.tokens import signed
from simulators.control import one_time_token

CUSTOMER = Actor.parse("customer:c-1")
SUPPORT = Actor.parse("support:sam")


def captures_of(harness, order_id: str) -> list[dict]:
    return [c for c in harness.ledger()["captures"] if c["reference"] == order_id]


def attempts(harness, order_id: str) -> int:
    return len(harness.payment(order_id).attempts)


def kinds(harness) -> list[str]:
    return sorted(m["kind"] for m in harness.messages("customer:c-1"))


def handle_of(harness, order_id: str):
    return harness.client.get_workflow_handle_for(PaymentWorkflow.run, f"payment-{order_id}")


async def test_a_declined_card_is_retried_after_1_3_and_7_days_then_abandoned_and_the_order_cancelled(harness):
    order_id, view = await place_order(harness, card="tok_capture_declined")
    assert (view["status"], view["attempts"]) == ("recovering", 1)
    handle = handle_of(harness, order_id)

    await harness.env.sleep(timedelta(hours=23))
    assert attempts(harness, order_id) == 1
    await harness.env.sleep(timedelta(hours=2))  # day 1 has passed
    assert attempts(harness, order_id) == 2
    await harness.env.sleep(timedelta(days=2, hours=22))
    assert attempts(harness, order_id) == 2
    await harness.env.sleep(timedelta(hours=2))  # three more days
    assert attempts(harness, order_id) == 3
    await harness.env.sleep(timedelta(days=7, hours=1))  # seven more days: the fourth attempt
    result = await handle.result()
    await keep_history(handle, "payment_abandoned")

    assert (result.status, result.reason, result.attempts) == ("abandoned", "attempts_exhausted", 4)
    assert captures_of(harness, order_id) == []
    order = harness.order(order_id)
    assert (order.cancelled, order.cancellation_reason) == (True, "payment_failed")
    assert kinds(harness) == ["payment_abandoned", "payment_declined", "payment_declined", "payment_declined"]


async def test_the_retry_a_day_after_a_decline_charges_the_card_saved_from_the_customers_one_time_token(harness):
    # The customer's token was used up by the first attempt (Stripe's are good for one use):
    # the retry charges the card as the first attempt saved it, and the order is paid.
    token = one_time_token(harness.gateway_url, "tok_declined_once")
    order_id, view = await place_order(harness, card=token)
    assert (view["status"], view["attempts"]) == ("recovering", 1)
    handle = handle_of(harness, order_id)

    await harness.env.sleep(timedelta(days=1, hours=1))
    view = await wait_for_status(handle, "paid", env=harness.env)

    payment = harness.payment(order_id)
    [first, retry] = payment.attempts
    assert (first.card_token, first.decline_code) == (token, "insufficient_funds")
    assert retry.card_token == first.saved_card != "" and retry.status.value == "captured"
    assert [c["id"] for c in captures_of(harness, order_id)] == [retry.gateway_reference]
    assert (view.attempts, harness.order(order_id).paid.amount) == (2, Decimal("120.00"))
    assert kinds(harness) == ["payment_declined", "payment_received"]


async def test_a_new_card_mid_wait_is_tried_at_once_and_the_order_is_paid_and_invoiced(harness):
    order_id, _ = await place_order(harness, card="tok_capture_declined")
    handle = handle_of(harness, order_id)

    status = await handle.execute_update(
        PaymentWorkflow.update_payment_method, NewPaymentMethod(card_token="tok_visa", given_by=CUSTOMER, **signed(CUSTOMER))
    )
    view = await wait_for_status(handle, "paid")
    await ship(harness, order_id)
    await deliver(harness, order_id)  # billing records it, and the payment process closes
    await handle.result()
    await keep_history(handle, "payment_recovered")

    assert status == "paid"
    assert (view.attempts, view.invoice_number != "") == (2, True)
    assert len(captures_of(harness, order_id)) == 1
    assert harness.order(order_id).paid.amount == Decimal("120.00")
    assert harness.payment(order_id).card_token == "tok_visa"
    assert kinds(harness) == ["payment_declined", "payment_received"]


async def test_a_hard_decline_ends_recovery_at_once(harness):
    order_id, view = await place_order(harness, card="tok_card_stolen")

    assert (view["status"], view["reason"], view["attempts"]) == ("abandoned", "hard_decline:card_stolen", 1)
    assert harness.order(order_id).cancelled
    assert kinds(harness) == ["payment_abandoned"]


@pytest.mark.parametrize("card, code", [("pm_card_chargeDeclinedStolenCard", "stolen_card"),
                                        ("pm_card_chargeDeclinedLostCard", "lost_card")])
async def test_stripes_own_stolen_and_lost_card_declines_end_recovery_at_once(harness, card, code):
    order_id, view = await place_order(harness, card=card)

    assert (view["status"], view["reason"], view["attempts"]) == ("abandoned", f"hard_decline:{code}", 1)
    assert harness.order(order_id).cancelled
    assert kinds(harness) == ["payment_abandoned"]


async def test_cancelling_during_recovery_stops_the_retries(harness):
    order_id, _ = await place_order(harness, card="tok_capture_declined")
    handle = handle_of(harness, order_id)

    answer = await handle.execute_update(
        PaymentWorkflow.cancel_order, CancellationRequest(requested_by=CUSTOMER, **signed(CUSTOMER), reason="found it cheaper")
    )
    result = await handle.result()
    await harness.env.sleep(timedelta(days=30))
    await keep_history(handle, "payment_cancelled_while_recovering")

    assert (answer, result.status) == ("cancelled", "cancelled")
    assert attempts(harness, order_id) == 1
    assert captures_of(harness, order_id) == []
    assert harness.order(order_id).cancelled


async def test_cancelling_a_paid_order_in_transit_refunds_it_and_intercepts_the_parcel(harness):
    order_id, _ = await place_order(harness)
    await ship(harness, order_id)
    handle = handle_of(harness, order_id)

    answer = await handle.execute_update(
        PaymentWorkflow.cancel_order, CancellationRequest(requested_by=SUPPORT, **signed(SUPPORT), reason="customer moved")
    )
    result = await handle.result()
    await keep_history(handle, "payment_cancelled_and_refunded")

    assert (answer, result.status) == ("cancelled", "refunded")
    child = await harness.client.get_workflow_handle(result.refund_workflow_id).query("status")
    assert child["status"] == "completed"
    charge = harness.payment(order_id).capture.gateway_reference
    assert [r["amount"] for r in harness.ledger()["refunds"] if r["charge"] == charge] == ["120.00"]
    with harness.uow_factory() as uow:
        assert uow.shipments.get(order_id).status == "intercepted"
    order = harness.order(order_id)
    assert (order.cancelled, order.refunded.amount) == (True, Decimal("120.00"))


async def test_the_longest_ids_a_person_may_give_fit_every_id_the_flows_derive_from_them(harness):
    """Command ids (`payment-{id}/notify-payment_received-{id}`) and a cancellation's refund
    id (`{id}-cancellation`) are longer than the ids they are made of: they still fit."""
    order_id = ("o-'quoted'; DROP TABLE orders;--" + "x" * ID_MAX)[:ID_MAX]
    await place_order(harness, order_id=order_id, customer="c-" + "y" * (ID_MAX - 2))
    await ship(harness, order_id)
    handle = handle_of(harness, order_id)

    await handle.execute_update(PaymentWorkflow.cancel_order, CancellationRequest(requested_by=SUPPORT, **signed(SUPPORT)))
    result = await handle.result()

    assert result.status == "refunded"
    assert harness.order(order_id).refunded.amount == Decimal("120.00")
    assert [m["kind"] for m in harness.messages()].count("refund_completed") == 1


async def test_billing_refuses_a_customer_cancelling_after_shipping_or_someone_elses_order(harness):
    order_id, _ = await place_order(harness)
    handle = handle_of(harness, order_id)

    with pytest.raises(WorkflowUpdateFailedError) as stranger:
        await handle.execute_update(
            PaymentWorkflow.cancel_order, CancellationRequest(requested_by=Actor.parse("customer:c-2"), **signed(Actor.parse("customer:c-2")))
        )
    await ship(harness, order_id)
    with pytest.raises(WorkflowUpdateFailedError) as shipped:
        await handle.execute_update(PaymentWorkflow.cancel_order, CancellationRequest(requested_by=CUSTOMER, **signed(CUSTOMER)))

    assert "belongs to another customer" in str(stranger.value.cause)
    assert "only support can cancel it now" in str(shipped.value.cause)
    assert not harness.order(order_id).cancelled
    assert (await handle.query(PaymentWorkflow.status_view)).status == "paid"
    await handle.terminate("test done")


async def test_a_new_card_is_refused_without_a_token_or_once_the_order_is_paid(harness):
    order_id, _ = await place_order(harness, card="tok_capture_declined")
    handle = handle_of(harness, order_id)

    with pytest.raises(WorkflowUpdateFailedError) as empty:
        await handle.execute_update("update_payment_method", {"card_token": " "})
    with pytest.raises(WorkflowUpdateFailedError) as nobody:
        await handle.execute_update(PaymentWorkflow.update_payment_method, NewPaymentMethod(card_token="tok_visa"))
    await handle.execute_update(
        PaymentWorkflow.update_payment_method, NewPaymentMethod(card_token="tok_visa", given_by=CUSTOMER, **signed(CUSTOMER))
    )
    with pytest.raises(WorkflowUpdateFailedError) as paid:
        await handle.execute_update(
            PaymentWorkflow.update_payment_method,
            NewPaymentMethod(card_token="tok_visa", given_by=CUSTOMER, **signed(CUSTOMER)),
        )

    assert "invalid NewPaymentMethod: card_token: Value error, must not be blank" in str(empty.value.cause)
    assert "nobody named" in str(nobody.value.cause)  # once taken as system; now refused
    assert "only taken while recovering" in str(paid.value.cause)
    await handle.terminate("test done")
