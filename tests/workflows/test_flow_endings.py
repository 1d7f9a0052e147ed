"""Every way a refund or a payment can end is a right one: a parcel is stopped only when
its money is sure to go back, money owed after a cancellation goes back, no Update hangs
or kills a flow, a delivery that comes first is kept, and decisions are judged at the time
the request reached settleflow. Time-skipping server, real activities, temporary database."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.billing import BillingActivities
from activities.fraud import FraudActivities
from activities.registry import OWNER_QUEUES, activities_for
from activities.shipping import ShippingActivities

from simulators.control import configure
from domain.billing.fulfilment import RecordedFulfilment
from domain.contracts import ConfirmDelivery, Outcome, RecordDelivery, RecordShipment, ResolveFraudReview, ReviewDecision
from domain.shared.actor import Actor
from domain.shared.money import Money
from tests.workflows.flows import (
    WAREHOUSE,
    deliver,
    delivered_order,
    finished,
    keep_history,
    new_id,
    place_order,
    real_time,
    ship,
    start_refund,
    wait_for_status,
    wait_for_trail,
)
from workflows.messages import RefundRequest
from workflows.payment import CancellationRequest, NewPaymentMethod, OrderRequest, PaymentWorkflow
from workflows.process import FLOWS_QUEUE
from workflows.refund import RefundWorkflow, ReviewResolution
from workflows.registry import WORKFLOWS
from workflows.shipping import WAIT_FOR_SHIPMENT, ConfirmDeliveryWorkflow, DeliveryRequest, ShipmentRequest, ShipOrderWorkflow
from tests.tokens import signed, token_for
from tests.workflows.test_refund_workflow import mailbox_down

CUSTOMER = Actor.parse("customer:c-1")
OTHER_CUSTOMER = Actor.parse("customer:c-2")
SUPPORT = Actor.parse("support:sam")
ANALYST = Actor.parse("fraud_analyst:alice")
ANSWER_WITHIN = 30  # seconds of real time an Update may take before it counts as hanging


def payment_handle(harness, order_id: str):
    return harness.client.get_workflow_handle_for(PaymentWorkflow.run, f"payment-{order_id}")


def shipment_status(harness, order_id: str) -> str:
    with harness.uow_factory() as uow:
        return uow.shipments.get(order_id).status


def refunds_of(harness, order_id: str) -> list[str]:
    charge = harness.payment(order_id).capture.gateway_reference
    return [r["amount"] for r in harness.ledger()["refunds"] if r["charge"] == charge]


class slow_gateway:
    """Every gateway answer takes a little while (under the client's timeout), so that a
    person can act while a capture is under way."""

    def __init__(self, harness, latency_ms: int = 300) -> None:
        self.url, self.latency_ms = harness.gateway_url, latency_ms

    def __enter__(self) -> None:
        configure(self.url, latency_ms=self.latency_ms)

    def __exit__(self, *exc: object) -> None:
        configure(self.url, latency_ms=0)


# == 1. a parcel is stopped only when all its money is sure to go back ==================================
async def test_a_review_rejected_on_an_in_transit_refund_leaves_the_parcel_moving(harness):
    order_id, _ = await place_order(harness, amount="1500.00")
    await ship(harness, order_id)
    handle = await start_refund(harness, order_id)  # all of it: billing asks for an intercept
    await wait_for_status(handle, "under_review")

    await handle.execute_update(
        RefundWorkflow.resolve_review, ReviewResolution(decision=ReviewDecision.REJECT, reviewer=ANALYST, **signed(ANALYST))
    )
    result = await finished(harness, handle)
    await keep_history(handle, "refund_in_transit_review_rejected")

    assert result.status == "cancelled"
    assert shipment_status(harness, order_id) == "in_transit"
    assert harness.order(order_id).fulfilment == "shipped"
    assert refunds_of(harness, order_id) == []


async def test_a_small_refund_of_a_parcel_in_transit_pays_it_back_and_leaves_the_parcel_moving(harness):
    order_id, _ = await place_order(harness, amount="100.00")
    await ship(harness, order_id)

    result = await finished(harness, await start_refund(harness, order_id, "1.00"))

    assert result.status == "completed"
    assert not any("InterceptShipment" in step for step in result.trail)
    assert shipment_status(harness, order_id) == "in_transit"
    assert refunds_of(harness, order_id) == ["1.00"]


async def test_an_intercepted_parcel_is_recorded_by_billing_as_returned_and_the_payment_process_ends(harness):
    order_id, _ = await place_order(harness, amount="100.00")
    await ship(harness, order_id)

    handle = await start_refund(harness, order_id)
    result = await finished(harness, handle)
    payment = await finished(harness, payment_handle(harness, order_id))
    await keep_history(handle, "refund_parcel_returned")
    await keep_history(payment_handle(harness, order_id), "payment_ended_by_return")

    assert result.status == "completed"
    assert any("RecordInterceptOutcome → billing → ParcelReturned" in step for step in result.trail)
    order = harness.order(order_id)
    assert order.fulfilment == "returned" and order.returned_at is not None
    assert shipment_status(harness, order_id) == "intercepted"
    assert payment.status == "returned"  # closed: nothing left to cancel, the money went back


async def test_a_parcel_brought_back_after_another_refund_said_no_tells_support_what_is_owed(harness):
    order_id, _ = await place_order(harness, amount="2500.00")
    await ship(harness, order_id)
    first = await start_refund(harness, order_id, "1000.00")  # reviewed: large
    await wait_for_status(first, "under_review")
    rest = await start_refund(harness, order_id)  # the other 1,500.00: billing asks to stop the parcel
    await wait_for_status(rest, "under_review")

    async with real_time(harness.env):
        await first.execute_update(RefundWorkflow.resolve_review, ReviewResolution(
            decision=ReviewDecision.REJECT, reviewer=ANALYST, **signed(ANALYST)))
        await rest.execute_update(RefundWorkflow.resolve_review, ReviewResolution(
            decision=ReviewDecision.APPROVE, reviewer=ANALYST, **signed(ANALYST)))
    result = await finished(harness, rest)

    assert result.status == "completed"
    order = harness.order(order_id)
    assert (order.fulfilment, order.owed) == ("returned", Money.of("1000.00", "EUR"))  # the goods are back
    [told] = [m for m in harness.messages("team:support") if m["kind"] == "refund_owed_support"]
    assert "1000.00 EUR is still owed" in told["body"]
    assert refunds_of(harness, order_id) == ["1500.00"]


async def test_a_stopped_parcels_late_delivery_scan_is_recorded_and_support_is_told(harness):
    order_id, _ = await place_order(harness, amount="100.00")
    await ship(harness, order_id)
    left_at = harness.order(order_id).shipped_at
    assert (await finished(harness, await start_refund(harness, order_id))).status == "completed"
    assert harness.order(order_id).fulfilment == "returned"

    # The carrier's scan comes in late: the parcel was delivered before the stop took.
    async with real_time(harness.env):
        handle = await harness.client.start_workflow(
            ConfirmDeliveryWorkflow.run,
            DeliveryRequest(order_id=order_id, delivered_at=left_at, requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            id=f"deliver-{order_id}", task_queue=FLOWS_QUEUE,
        )
        delivered = await handle.result()
    await keep_history(handle, "confirm_delivery_of_a_stopped_parcel")

    assert delivered.status == "delivered"  # kept, not failed as "intercepted"
    assert shipment_status(harness, order_id) == "delivered"
    order = harness.order(order_id)
    assert (order.fulfilment, order.delivered_at, order.owed_since) == ("delivered", left_at, None)
    [told] = harness.messages("team:support")
    assert told["kind"] == "returned_parcel_delivered_support" and left_at.isoformat() in told["body"]
    assert refunds_of(harness, order_id) == ["100.00"]  # the refund stands; support decides about the goods


async def test_a_stop_after_delivery_pays_the_refund_while_the_mailbox_is_down_and_tells_support_once_it_is_back(
        harness):
    order_id, _ = await place_order(harness, amount="1500.00")
    await ship(harness, order_id)
    handle = await start_refund(harness, order_id, task_timeout=SHORT_TASKS)
    await wait_for_status(handle, "under_review")
    record_delivery_in_billing(harness, order_id, await _workflow_now(harness))  # shipping's record is late

    with mailbox_down(harness):  # support's notice of the stop cannot go out
        async with real_time(harness.env):
            await asyncio.wait_for(handle.execute_update(RefundWorkflow.resolve_review, ReviewResolution(
                decision=ReviewDecision.APPROVE, reviewer=ANALYST, **signed(ANALYST))), timeout=ANSWER_WITHIN)
            paid_while_the_mailbox_was_down = await refunded_within(harness, order_id, seconds=30)
        told_while_down = harness.messages("team:support")
        still_running = (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
    result = await closed_once_the_receipt_went_out(harness, handle)
    await keep_history(handle, "refund_paid_while_support_notice_of_a_stop_was_held_up")

    assert (paid_while_the_mailbox_was_down, told_while_down) == (["1500.00"], [])
    assert still_running  # it ends only once support has been told
    assert result.status == "completed"
    [told] = harness.messages("team:support")
    assert told["kind"] == "returned_parcel_delivered_support"


async def test_a_return_that_leaves_money_owed_pays_the_refund_while_the_mailbox_is_down(harness):
    order_id, _ = await place_order(harness, amount="2500.00")
    await ship(harness, order_id)
    first = await start_refund(harness, order_id, "1000.00")  # reviewed: large
    await wait_for_status(first, "under_review")
    rest = await start_refund(harness, order_id, task_timeout=SHORT_TASKS)  # the other 1,500.00: stops the parcel
    await wait_for_status(rest, "under_review")
    async with real_time(harness.env):
        await first.execute_update(RefundWorkflow.resolve_review, ReviewResolution(
            decision=ReviewDecision.REJECT, reviewer=ANALYST, **signed(ANALYST)))
        await finished(harness, first)

    with mailbox_down(harness):  # support's notice of what is owed cannot go out
        async with real_time(harness.env):
            await asyncio.wait_for(rest.execute_update(RefundWorkflow.resolve_review, ReviewResolution(
                decision=ReviewDecision.APPROVE, reviewer=ANALYST, **signed(ANALYST))), timeout=ANSWER_WITHIN)
            paid_while_the_mailbox_was_down = await refunded_within(harness, order_id, seconds=30)
        told_while_down = harness.messages("team:support")
    result = await closed_once_the_receipt_went_out(harness, rest)

    assert (paid_while_the_mailbox_was_down, told_while_down) == (["1500.00"], [])
    assert result.status == "completed"
    [told] = [m for m in harness.messages("team:support") if m["kind"] == "refund_owed_support"]
    assert "1000.00 EUR is still owed" in told["body"]


def record_delivery_in_billing(harness, order_id: str, delivered_at: datetime) -> None:
    BillingActivities(harness.uow_factory).record_delivery(RecordDelivery(
        command_id=f"deliver-{order_id}/record-delivery", actor=Actor.system("shipping"), issued_at=delivered_at,
        correlation_id=f"order-{order_id}", causation_id="test", order_id=order_id, delivered_at=delivered_at,
    ))


async def refunded_within(harness, order_id: str, seconds: float) -> list[str]:
    """The refunds of the order's payment in the gateway's ledger, once there are any (or the time is up)."""
    for _ in range(int(seconds * 10)):
        if paid := refunds_of(harness, order_id):
            return paid
        await asyncio.sleep(0.1)
    return refunds_of(harness, order_id)


async def test_a_stop_that_took_after_billing_recorded_the_parcel_delivered_is_told_to_support(harness):
    order_id, _ = await place_order(harness, amount="1500.00")
    await ship(harness, order_id)
    handle = await start_refund(harness, order_id)  # all of it: the parcel is to be stopped once fraud lets it go
    await wait_for_status(handle, "under_review")
    # While the refund waits for its analyst the parcel arrives, and billing records it; shipping's
    # own record of the delivery is late, so the stop is still carried out there.
    delivered_at = await _workflow_now(harness)
    BillingActivities(harness.uow_factory).record_delivery(RecordDelivery(
        command_id=f"deliver-{order_id}/record-delivery", actor=Actor.system("shipping"), issued_at=delivered_at,
        correlation_id=f"order-{order_id}", causation_id="test", order_id=order_id, delivered_at=delivered_at,
    ))

    await handle.execute_update(
        RefundWorkflow.resolve_review, ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=ANALYST, **signed(ANALYST))
    )
    result = await finished(harness, handle)
    await keep_history(handle, "refund_stopped_after_delivery")

    assert result.status == "completed"
    assert any("InterceptShipment → shipping → ShipmentIntercepted" in step for step in result.trail)
    assert any("RecordInterceptOutcome → billing → ParcelStillInTransit" in step for step in result.trail)
    [told] = harness.messages("team:support")  # the customer has the goods and the refund
    assert told["kind"] == "returned_parcel_delivered_support" and delivered_at.isoformat() in told["body"]
    assert harness.order(order_id).fulfilment == "delivered"
    assert refunds_of(harness, order_id) == ["1500.00"]


async def test_a_parcel_that_could_not_be_stopped_is_recorded_as_still_on_its_way_and_the_money_goes_back(harness):
    order_id, _ = await place_order(harness, amount="100.00")
    await ship(harness, order_id)
    # The parcel arrived; shipping knows it, billing does not yet (its delivery flow is late).
    ShippingActivities(harness.uow_factory).confirm_delivery(
        ConfirmDelivery(
            command_id=f"scan-{order_id}", actor=WAREHOUSE, credential=token_for(WAREHOUSE), issued_at=await _workflow_now(harness), order_id=order_id
        )
    )

    result = await finished(harness, await start_refund(harness, order_id))

    assert result.status == "completed"
    assert any("InterceptShipment → shipping → ShipmentInterceptFailed" in step for step in result.trail)
    assert any("RecordInterceptOutcome → billing → ParcelStillInTransit" in step for step in result.trail)
    assert harness.order(order_id).fulfilment == "shipped"  # its delivery, when recorded, opens the window
    assert refunds_of(harness, order_id) == ["100.00"]


# == 2. money owed after a cancellation goes back ========================================================
async def cancelled_by_support_until_paid_back(harness, handle, order_id: str) -> str:
    """Support cancels the paid order; the Update's answer, once the refund has paid it back (in real time)."""
    answer = await handle.execute_update(
        PaymentWorkflow.cancel_order, CancellationRequest(requested_by=SUPPORT, **signed(SUPPORT), reason="lost")
    )
    for _ in range(300):
        if refunds_of(harness, order_id):
            break
        await asyncio.sleep(0.1)
    return answer


async def closed_once_the_receipt_went_out(harness, handle):
    """The flow's result, once its receipt's (or notice's) next try, its back-off grown during an
    outage, has sent it."""
    async with real_time(harness.env):
        for _ in range(900):
            if (await handle.describe()).status is not WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(0.1)
    return await finished(harness, handle)



async def test_a_cancelled_paid_orders_money_goes_back_while_the_mailbox_is_down(harness):
    order_id, _ = await place_order(harness, amount="80.00")
    handle = payment_handle(harness, order_id)

    with mailbox_down(harness):  # the customer's notice of the cancellation cannot go out
        async with real_time(harness.env):
            answer = await cancelled_by_support_until_paid_back(harness, handle, order_id)
        paid_back_while_the_mailbox_was_down = refunds_of(harness, order_id)
        told_while_down = [m["kind"] for m in harness.messages("customer:c-1")]
    result = await finished(harness, handle)

    assert (answer, result.status) == ("cancelled", "refunded")
    assert (paid_back_while_the_mailbox_was_down, told_while_down) == (["80.00"], ["payment_received"])
    assert sorted(m["kind"] for m in harness.messages("customer:c-1")) == [
        "order_cancelled", "payment_received", "refund_completed",  # once the mailbox was back
    ]


async def test_a_paid_orders_receipt_held_up_by_the_mailbox_holds_up_neither_its_cancellation_nor_its_refund(harness):
    with mailbox_down(harness):  # the customer's receipt cannot go out
        async with real_time(harness.env):
            # Short workflow tasks: a local activity retried within one shows its progress sooner.
            order_id, view = await place_order(harness, amount="80.00", task_timeout=SHORT_TASKS)  # paid all the same
            handle = payment_handle(harness, order_id)
            answer = await cancelled_by_support_until_paid_back(harness, handle, order_id)
        paid_back_while_the_mailbox_was_down = refunds_of(harness, order_id)
        told_while_down = harness.messages("customer:c-1")
        still_running = (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
    result = await closed_once_the_receipt_went_out(harness, handle)

    await keep_history(handle, "payment_cancelled_while_its_receipt_was_held_up")
    assert view["status"] == "paid" and (answer, result.status) == ("cancelled", "refunded")
    assert (paid_back_while_the_mailbox_was_down, told_while_down) == (["80.00"], [])
    assert still_running  # it ends only once the receipt has gone out
    # Once the mailbox was back: the receipt first, then the cancellation's notice.
    written = sorted(harness.mailbox.folder.glob("*.json"), key=lambda path: path.stat().st_mtime_ns)
    kinds = [json.loads(path.read_text())["kind"] for path in written]
    assert kinds.index("payment_received") < kinds.index("order_cancelled")
    assert sorted(kinds) == ["order_cancelled", "payment_received", "refund_completed"]


async def test_a_cancellation_asked_while_a_delivered_orders_flow_waits_for_its_receipt_is_refused_and_the_flow_ends(harness):
    with mailbox_down(harness):  # the receipt cannot go out
        async with real_time(harness.env):
            order_id, _ = await place_order(harness, amount="80.00", task_timeout=SHORT_TASKS)
            handle = payment_handle(harness, order_id)
            await ship(harness, order_id)
            delivered_at = await _workflow_now(harness)
            BillingActivities(harness.uow_factory).record_delivery(RecordDelivery(
                command_id=f"deliver-{order_id}/record-delivery", actor=Actor.system("shipping"),
                issued_at=delivered_at, correlation_id=f"order-{order_id}", causation_id="test", order_id=order_id,
                delivered_at=delivered_at,
            ))
            await handle.signal(PaymentWorkflow.order_delivered)
            await wait_for_trail(handle, "the customer's receipt is still going out", harness.env)  # ending
            with pytest.raises(WorkflowUpdateFailedError) as refused:  # accepted, it would never be answered
                await asyncio.wait_for(handle.execute_update(
                    PaymentWorkflow.cancel_order,
                    CancellationRequest(requested_by=SUPPORT, **signed(SUPPORT), reason="too late"),
                ), ANSWER_WITHIN)
    result = await closed_once_the_receipt_went_out(harness, handle)

    assert "its payment process is ending" in str(refused.value.cause)
    assert result.status == "paid" and not harness.order(order_id).cancelled
    assert [m["kind"] for m in harness.messages("customer:c-1")] == ["payment_received"]


async def test_recoverys_next_attempt_is_timed_from_the_decline_however_late_its_notice_goes_out(harness):
    with mailbox_down(harness):  # the customer's notice of the decline cannot go out
        async with real_time(harness.env):
            declined_at = await _workflow_now(harness)
            order_id, view = await place_order(harness, card="tok_capture_declined", task_timeout=SHORT_TASKS)
            told_while_down = harness.messages("customer:c-1")

    assert (view["status"], told_while_down) == ("recovering", [])
    next_attempt_at = datetime.fromisoformat(view["next_attempt_at"])
    assert timedelta(days=1) <= next_attempt_at - declined_at < timedelta(days=1, minutes=5)
    handle = payment_handle(harness, order_id)
    await wait_for_trail(handle, "Notify", harness.env)
    assert [m["kind"] for m in harness.messages("customer:c-1")] == ["payment_declined"]


async def test_a_cancelled_paid_orders_money_goes_back_even_when_its_review_would_expire(harness):
    order_id, _ = await place_order(harness, amount="1500.00")  # large: an ordinary refund is reviewed
    handle = payment_handle(harness, order_id)

    answer = await handle.execute_update(
        PaymentWorkflow.cancel_order, CancellationRequest(requested_by=SUPPORT, **signed(SUPPORT), reason="out of stock")
    )
    await harness.env.sleep(timedelta(hours=80))  # past the 72 h a review may wait
    result = await handle.result()

    assert answer == "cancelled"
    assert result.status == "refunded"
    assert refunds_of(harness, order_id) == ["1500.00"]
    order = harness.order(order_id)
    assert order.cancelled and order.refundable.amount == Decimal("0.00")


async def test_a_partial_refund_in_flight_at_cancellation_that_is_rejected_leaves_its_money_owed_and_tells_support(
    harness,
):
    order_id, _ = await place_order(harness, amount="1500.00")
    await ship(harness, order_id)
    partial = await start_refund(harness, order_id, "1000.00")  # large: waits for a review
    await wait_for_status(partial, "under_review")
    payment = payment_handle(harness, order_id)
    await payment.execute_update(
        PaymentWorkflow.cancel_order, CancellationRequest(requested_by=SUPPORT, **signed(SUPPORT), reason="parcel lost")
    )
    cancelled = await finished(harness, payment)  # the rest (500.00) went back at once

    await partial.execute_update(
        RefundWorkflow.resolve_review, ReviewResolution(decision=ReviewDecision.REJECT, reviewer=ANALYST, **signed(ANALYST))
    )
    rejected = await finished(harness, partial)

    assert (cancelled.status, rejected.status) == ("refunded", "cancelled")
    assert refunds_of(harness, order_id) == ["500.00"]
    assert harness.order(order_id).owed.amount == Decimal("1000.00")
    [told] = harness.messages("team:support")
    assert told["kind"] == "refund_owed_support" and "1000.00" in told["body"]


# == 3. every Update is refused or answered; an owner's refusal never fails the flow =====================
async def test_an_update_refused_by_the_owner_leaves_the_flow_running(harness):
    order_id, _ = await place_order(harness, card="tok_capture_declined")
    handle = payment_handle(harness, order_id)

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await asyncio.wait_for(
            handle.execute_update(
                PaymentWorkflow.update_payment_method, NewPaymentMethod(card_token="tok_visa", given_by=OTHER_CUSTOMER, **signed(OTHER_CUSTOMER))
            ),
            ANSWER_WITHIN,
        )
    assert "another customer" in str(refused.value.cause)
    assert (await handle.query(PaymentWorkflow.status_view)).status == "recovering"

    status = await handle.execute_update(
        PaymentWorkflow.update_payment_method, NewPaymentMethod(card_token="tok_visa", given_by=CUSTOMER, **signed(CUSTOMER))
    )
    assert status == "paid"
    assert harness.payment(order_id).card_token == "tok_visa"


async def test_a_cancellation_accepted_while_capturing_is_answered_when_payments_gives_up(harness):
    order_id = new_id("o")
    with slow_gateway(harness):
        handle = harness.track(await harness.client.start_workflow(
            PaymentWorkflow.run,
            _order(order_id, card="tok_card_stolen"),
            id=f"payment-{order_id}",
            task_queue=FLOWS_QUEUE,
        ))
        await wait_for_status(handle, "capturing")
        answer = await asyncio.wait_for(
            handle.execute_update(
                PaymentWorkflow.cancel_order, CancellationRequest(requested_by=CUSTOMER, **signed(CUSTOMER), reason="changed my mind")
            ),
            ANSWER_WITHIN,
        )
    result = await finished(harness, handle)

    assert (answer, result.status) == ("abandoned", "abandoned")
    assert harness.order(order_id).cancelled


async def test_a_new_card_given_during_a_retry_is_refused_and_the_flow_still_ends(harness):
    order_id, _ = await place_order(harness, card="tok_capture_declined")
    handle = payment_handle(harness, order_id)
    with slow_gateway(harness):
        first = await handle.start_update(
            PaymentWorkflow.update_payment_method,
            NewPaymentMethod(card_token="tok_visa", given_by=CUSTOMER, **signed(CUSTOMER)),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        for _ in range(400):  # until the retry with the new card is under way
            view = await handle.query(PaymentWorkflow.status_view)
            if view.attempts == 2 or view.status != "recovering":
                break
            await asyncio.sleep(0.01)
        with pytest.raises(WorkflowUpdateFailedError):
            await asyncio.wait_for(
                handle.execute_update(
                    PaymentWorkflow.update_payment_method, NewPaymentMethod(card_token="tok_other", given_by=CUSTOMER, **signed(CUSTOMER))
                ),
                ANSWER_WITHIN,
            )
        answer = await asyncio.wait_for(first.result(), ANSWER_WITHIN)
    await ship(harness, order_id)
    await deliver(harness, order_id)  # billing records it, and the payment process closes
    result = await finished(harness, handle)

    assert (answer, result.status) == ("paid", "paid")
    assert harness.payment(order_id).card_token == "tok_visa"


class database_held:
    """Another connection holds the database's write lock (every transaction here takes it),
    so an owner's step waits, as behind a long transaction; released on leaving."""

    def __init__(self, harness) -> None:
        self.path = harness.engine.url.database

    def __enter__(self) -> None:
        self.connection = sqlite3.connect(self.path, isolation_level=None)
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, *exc: object) -> None:
        self.connection.execute("ROLLBACK")
        self.connection.close()


# Workflow tasks of 2 s: a step held longer outlives its task, and an Update arrives while it runs.
SHORT_TASKS = timedelta(seconds=2)
HELD = 3  # seconds of real time a step is held


async def test_a_cancellation_accepted_while_a_new_card_is_recorded_goes_before_any_charge(harness):
    order_id, _ = await place_order(harness, card="tok_capture_declined", task_timeout=SHORT_TASKS)
    handle = payment_handle(harness, order_id)
    with database_held(harness):
        new_card = await handle.start_update(
            PaymentWorkflow.update_payment_method,
            NewPaymentMethod(card_token="tok_visa", given_by=CUSTOMER, **signed(CUSTOMER)),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        await asyncio.sleep(HELD)  # payments is still recording the new card
        cancellation = await handle.start_update(
            PaymentWorkflow.cancel_order,
            CancellationRequest(requested_by=CUSTOMER, **signed(CUSTOMER), reason="found it cheaper"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
    answers = await asyncio.wait_for(asyncio.gather(cancellation.result(), new_card.result()), ANSWER_WITHIN)
    result = await finished(harness, handle)
    await keep_history(handle, "payment_cancelled_while_its_new_card_was_recorded")

    assert answers == ["cancelled", "cancelled"]
    assert (result.status, result.attempts) == ("cancelled", 1)
    assert [c for c in harness.ledger()["captures"] if c["reference"] == order_id] == []  # nothing charged
    assert harness.order(order_id).cancelled
    assert harness.payment(order_id).card_token == "tok_visa"  # the card was recorded all the same


async def test_a_cancellation_accepted_while_the_order_is_placed_goes_before_its_first_charge(harness):
    order_id = new_id("o")
    with database_held(harness):  # billing is slow to record the order
        handle = harness.track(await harness.client.start_workflow(
            PaymentWorkflow.run,
            OrderRequest(order_id=order_id, customer_id="c-1", amount=Money.of("45.00", "EUR"), card_token="tok_visa",
                         placed_by=CUSTOMER, **signed(CUSTOMER)),
            id=f"payment-{order_id}", task_queue=FLOWS_QUEUE, task_timeout=SHORT_TASKS,
        ))
        await asyncio.sleep(HELD)  # PlaceOrder is still running
        cancellation = await handle.start_update(
            PaymentWorkflow.cancel_order,
            CancellationRequest(requested_by=CUSTOMER, **signed(CUSTOMER), reason="ordered by mistake"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
    answer = await asyncio.wait_for(cancellation.result(), ANSWER_WITHIN)
    result = await finished(harness, handle)
    await keep_history(handle, "payment_cancelled_while_it_was_placed")

    assert (answer, result.status, result.attempts) == ("cancelled", "cancelled", 0)
    assert [c for c in harness.ledger()["captures"] if c["reference"] == order_id] == []  # nothing charged
    order = harness.order(order_id)
    assert order.cancelled and not order.paid.is_positive


async def test_a_cancellation_accepted_while_the_delivery_is_read_is_refused_as_delivered(harness):
    order_id, _ = await place_order(harness, task_timeout=SHORT_TASKS)
    handle = payment_handle(harness, order_id)
    await ship(harness, order_id)
    # Billing records the delivery; the payment process is told, and reads billing's record.
    delivered_at = await _workflow_now(harness)
    BillingActivities(harness.uow_factory).record_delivery(RecordDelivery(
        command_id=f"deliver-{order_id}/record-delivery", actor=Actor.system("shipping"), issued_at=delivered_at,
        correlation_id=f"order-{order_id}", causation_id="test", order_id=order_id, delivered_at=delivered_at,
    ))
    with database_held(harness):
        await handle.signal(PaymentWorkflow.order_delivered)
        await asyncio.sleep(HELD)  # the read of billing's record is still running
        cancellation = await handle.start_update(
            PaymentWorkflow.cancel_order,
            CancellationRequest(requested_by=CUSTOMER, **signed(CUSTOMER), reason="changed my mind"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await asyncio.wait_for(cancellation.result(), ANSWER_WITHIN)
    result = await finished(harness, handle)

    assert "was delivered; nothing left to cancel" in str(refused.value.cause)
    assert result.status == "paid"
    assert not harness.order(order_id).cancelled


async def test_a_departure_recorded_after_the_cancellation_it_preceded_is_recorded_and_its_parcel_stopped(harness):
    order_id, _ = await place_order(harness, amount="80.00")
    payment = payment_handle(harness, order_id)
    await harness.env.sleep(timedelta(hours=3))
    left_at = await _workflow_now(harness) - timedelta(hours=1)  # before the cancellation below
    await payment.execute_update(
        PaymentWorkflow.cancel_order, CancellationRequest(requested_by=SUPPORT, **signed(SUPPORT), reason="out of stock")
    )
    assert (await finished(harness, payment)).status == "refunded"  # all of it went back at once

    async with real_time(harness.env):  # the warehouse records the departure late: `ship --at`
        handle = await harness.client.start_workflow(
            ShipOrderWorkflow.run,
            ShipmentRequest(order_id=order_id, tracking=new_id("TRK"), shipped_at=left_at, requested_by=WAREHOUSE,
                            **signed(WAREHOUSE)),
            id=f"ship-{order_id}", task_queue=FLOWS_QUEUE,
        )
        shipped = await handle.result()
    await keep_history(handle, "ship_order_stopped_for_its_cancelled_order")

    assert shipped.status == "stopped"
    assert any("InterceptShipment → shipping → ShipmentIntercepted" in step for step in shipped.trail)
    assert shipment_status(harness, order_id) == "intercepted"
    order = harness.order(order_id)
    assert (order.fulfilment, order.shipped_at) == ("returned", left_at)
    assert refunds_of(harness, order_id) == ["80.00"]  # the money went back once


async def test_a_parcel_whose_delivery_was_confirmed_first_is_not_stopped_for_a_cancellation_and_support_is_told(
    harness,
):
    order_id, _ = await place_order(harness, amount="80.00")
    payment = payment_handle(harness, order_id)
    await harness.env.sleep(timedelta(hours=3))
    left_at = await _workflow_now(harness) - timedelta(hours=1)
    delivery = harness.track(await harness.client.start_workflow(  # the carrier's scan comes first
        ConfirmDeliveryWorkflow.run, DeliveryRequest(order_id=order_id, requested_by=WAREHOUSE, **signed(WAREHOUSE)),
        id=f"deliver-{order_id}", task_queue=FLOWS_QUEUE,
    ))
    await wait_for_trail(delivery, "no shipment yet", harness.env)
    await payment.execute_update(  # billing knows of no parcel yet: the cancellation is accepted
        PaymentWorkflow.cancel_order, CancellationRequest(requested_by=SUPPORT, **signed(SUPPORT), reason="changed")
    )
    await finished(harness, payment)

    await ship_at(harness, order_id, left_at)
    delivered = await finished(harness, delivery)
    await keep_history(delivery, "confirm_delivery_of_an_order_cancelled_meanwhile")

    assert delivered.status == "delivered"  # the delivery is kept, not refused as "intercepted"
    assert shipment_status(harness, order_id) == "delivered"
    order = harness.order(order_id)
    assert (order.cancelled, order.fulfilment) == (True, "delivered")
    assert sorted(m["kind"] for m in harness.messages("team:support")) == [
        "cancelled_order_delivered_support",  # the delivery flow, once billing recorded it
        "cancelled_order_not_stopped_support",  # the shipment flow, which did not stop the parcel
    ]


# == 4. a delivery that comes before its shipment is kept ================================================
async def delivery_before_its_shipment(harness, **start):
    """A paid order whose delivery is confirmed before its shipment is recorded (the parcel left
    two hours ago, arrived one hour ago): (order id, payment flow, delivery flow, shipped at, delivered at)."""
    order_id, _ = await place_order(harness)
    payment = payment_handle(harness, order_id)
    await harness.env.sleep(timedelta(hours=3))  # the parcel leaves well after the order was placed
    now = await _workflow_now(harness)
    shipped_at, delivered_at = now - timedelta(hours=2), now - timedelta(hours=1)
    delivery = harness.track(await harness.client.start_workflow(
        ConfirmDeliveryWorkflow.run,
        DeliveryRequest(order_id=order_id, delivered_at=delivered_at, requested_by=WAREHOUSE, **signed(WAREHOUSE)),
        id=f"deliver-{order_id}",
        task_queue=FLOWS_QUEUE,
        **start,
    ))
    return order_id, payment, delivery, shipped_at, delivered_at


async def test_a_delivery_confirmed_before_its_shipment_waits_for_it_and_closes_the_window(harness):
    order_id, payment, delivery, shipped_at, delivered_at = await delivery_before_its_shipment(harness)
    for _ in range(400):
        if (await delivery.query(ConfirmDeliveryWorkflow.status_view)).status == "waiting_for_shipment":
            break
        await asyncio.sleep(0.025)
    await ship_at(harness, order_id, shipped_at)
    delivered = await finished(harness, delivery)
    await finished(harness, payment)
    await keep_history(delivery, "confirm_delivery_before_shipment")

    assert delivered.status == "delivered"
    order = harness.order(order_id)
    assert order.fulfilment == "delivered" and order.delivered_at == delivered_at
    assert shipment_status(harness, order_id) == "delivered"


async def test_a_delivery_whose_shipment_comes_after_thirty_days_is_kept_told_to_support_and_recorded_with_it(
    harness,
):
    order_id, payment, delivery, shipped_at, delivered_at = await delivery_before_its_shipment(harness)
    await wait_for_trail(delivery, "no shipment yet", harness.env)

    await harness.env.sleep(WAIT_FOR_SHIPMENT + timedelta(days=1))  # no timer drops the delivery
    await wait_for_trail(delivery, "no shipment within 30 days", harness.env)
    assert (await delivery.query(ConfirmDeliveryWorkflow.status_view)).status == "waiting_for_shipment"
    [told] = harness.messages("team:support")
    assert told["kind"] == "delivery_without_shipment_support" and order_id in told["body"]

    await ship_at(harness, order_id, shipped_at)  # the shipment's record comes at last
    assert (await finished(harness, delivery)).status == "delivered"
    assert (await finished(harness, payment)).status == "paid"
    order = harness.order(order_id)
    assert order.fulfilment == "delivered" and order.delivered_at == delivered_at  # the window ran from it
    assert shipment_status(harness, order_id) == "delivered"
    await keep_history(delivery, "confirm_delivery_shipped_after_thirty_days")


async def test_an_undated_delivery_confirmed_before_its_undated_shipment_is_recorded_dated_when_the_parcel_left(
    harness,
):
    # Neither `--at`: each is dated when it reached settleflow, the delivery first.
    order_id, _ = await place_order(harness)
    payment = payment_handle(harness, order_id)
    delivery = harness.track(await harness.client.start_workflow(
        ConfirmDeliveryWorkflow.run, DeliveryRequest(order_id=order_id, requested_by=WAREHOUSE, **signed(WAREHOUSE)),
        id=f"deliver-{order_id}", task_queue=FLOWS_QUEUE,
    ))
    await wait_for_trail(delivery, "no shipment yet", harness.env)
    await harness.env.sleep(timedelta(hours=1))  # the shipment's record reaches settleflow an hour later

    await ship(harness, order_id)
    delivered = await finished(harness, delivery)
    await finished(harness, payment)

    assert delivered.status == "delivered"
    order = harness.order(order_id)
    assert order.fulfilment == "delivered" and order.delivered_at == order.shipped_at
    assert shipment_status(harness, order_id) == "delivered"


async def test_a_delivery_woken_by_a_shipment_shipping_does_not_know_waits_on_and_is_recorded_once_it_ships(harness):
    order_id, payment, delivery, shipped_at, _ = await delivery_before_its_shipment(harness)
    await wait_for_trail(delivery, "no shipment yet", harness.env)

    await delivery.signal(ConfirmDeliveryWorkflow.shipment_recorded)  # anyone may send it; nothing shipped
    await wait_for_trail(delivery, "told of a shipment shipping does not know", harness.env)
    assert (await delivery.query(ConfirmDeliveryWorkflow.status_view)).status == "waiting_for_shipment"

    await ship_at(harness, order_id, shipped_at)  # the real shipment: the delivery is recorded, the window closes
    assert (await finished(harness, delivery)).status == "delivered"
    assert (await finished(harness, payment)).status == "paid"
    assert shipment_status(harness, order_id) == "delivered"
    await keep_history(delivery, "confirm_delivery_woken_before_its_shipment")


async def test_a_delivery_told_of_a_shipment_before_it_first_asked_shipping_waits_on_all_the_same(harness):
    order_id, payment, delivery, shipped_at, _ = await delivery_before_its_shipment(
        harness, start_signal="shipment_recorded"  # in its very first workflow task
    )
    await wait_for_trail(delivery, "told of a shipment shipping does not know", harness.env)
    assert (await delivery.query(ConfirmDeliveryWorkflow.status_view)).status == "waiting_for_shipment"

    await ship_at(harness, order_id, shipped_at)
    assert (await finished(harness, delivery)).status == "delivered"
    assert (await finished(harness, payment)).status == "paid"


async def test_a_delivery_billing_held_closes_the_payment_process_once_the_shipment_is_recorded(harness):
    # Shipping has the parcel, billing has not recorded the shipment yet (its RecordShipment
    # step is failing): the delivery arrives in that window, billing holds it, and the payment
    # process — which ends only on billing's record — is told when billing applies it.
    billing = BillingActivities(harness.deps.uow_factory)
    billing_down, billing_was_asked = threading.Event(), threading.Event()
    billing_down.set()

    @activity.defn(name=RecordShipment.activity_name())
    def record_shipment_while_billing_is_down(command: RecordShipment) -> Outcome:
        if billing_down.is_set():
            billing_was_asked.set()
            raise ApplicationError("billing's database is down")
        return billing.record_shipment(command)

    local = [
        a
        for owner in OWNER_QUEUES
        for a in activities_for(owner, harness.deps.uow_factory, harness.deps.gateway, harness.deps.mailbox)
        if a.__temporal_activity_definition.name != RecordShipment.activity_name()
    ] + [record_shipment_while_billing_is_down]
    queue = f"{FLOWS_QUEUE}-stubbed-{new_id('q')}"
    order_id, _ = await place_order(harness)
    payment = payment_handle(harness, order_id)

    with ThreadPoolExecutor(max_workers=2) as executor:
        async with Worker(harness.client, task_queue=queue, workflows=WORKFLOWS, activities=local,
                          activity_executor=executor):
            async with real_time(harness.env):
                shipping = await harness.client.start_workflow(
                    ShipOrderWorkflow.run,
                    ShipmentRequest(order_id=order_id, tracking=new_id("TRK"), requested_by=WAREHOUSE, **signed(WAREHOUSE)),
                    id=f"ship-{order_id}",
                    task_queue=queue,
                )
                await asyncio.to_thread(billing_was_asked.wait, 30)
                await deliver_without_waiting(harness, order_id)

                assert harness.order(order_id).fulfilment == "pending"  # held: billing has no shipment
                assert (await payment.query(PaymentWorkflow.status_view)).status == "paid"

                billing_down.clear()
                shipped = await shipping.result()
                closed = await payment.result()
    await keep_history(shipping, "ship_order_applying_a_held_delivery")

    assert (shipped.status, closed.status) == ("shipped", "paid")
    assert harness.order(order_id).fulfilment == "delivered"
    assert "told payment process: delivered" in shipped.trail
    assert not any("still open" in line for line in closed.trail)


async def test_an_unpaid_order_does_not_ship(harness):
    order_id, _ = await place_order(harness, card="tok_capture_declined")

    async with real_time(harness.env):
        result = await harness.client.execute_workflow(
            ShipOrderWorkflow.run,
            ShipmentRequest(order_id=order_id, tracking="TRK-1", requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            id=f"ship-{order_id}",
            task_queue=FLOWS_QUEUE,
        )

    assert result.status == "refused"
    assert harness.order(order_id).fulfilment == "pending"
    with harness.uow_factory() as uow, pytest.raises(Exception, match="no shipment"):
        uow.shipments.get(order_id)


async def test_a_shipment_refused_as_not_paid_is_asked_again_once_paid_and_ships(harness):
    """The warehouse asks too early: billing refuses (not paid), which its inbox keeps as the
    answer to that request. Asked again once the order is paid — the command line's next
    request, `attempt` 2, with commands of its own — it ships."""
    order_id, _ = await place_order(harness, card="tok_capture_declined")
    request = ShipmentRequest(order_id=order_id, tracking="TRK-1", requested_by=WAREHOUSE, **signed(WAREHOUSE))
    async with real_time(harness.env):
        first = await harness.client.execute_workflow(
            ShipOrderWorkflow.run, request, id=f"ship-{order_id}", task_queue=FLOWS_QUEUE
        )
    await payment_handle(harness, order_id).execute_update(
        PaymentWorkflow.update_payment_method, NewPaymentMethod(card_token="tok_visa", given_by=CUSTOMER, **signed(CUSTOMER))
    )
    await wait_for_status(payment_handle(harness, order_id), "paid")

    async with real_time(harness.env):
        again = harness.track(await harness.client.start_workflow(
            ShipOrderWorkflow.run, request.model_copy(update={"attempt": 2}), id=f"ship-{order_id}",
            task_queue=FLOWS_QUEUE, id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        ))
        second = await again.result()
    await keep_history(again, "ship_order_asked_again_once_paid")

    assert (first.status, second.status) == ("refused", "shipped")
    assert harness.order(order_id).fulfilment == "shipped"
    with harness.uow_factory() as uow:  # each request got its own answer, the first one kept
        answers = [uow.processed_result(f"ship-{order_id}/{step}") for step in ("clear", "clear-2")]
        assert uow.shipments.get(order_id).tracking == "TRK-1"
    assert [[e["type"] for e in answer["events"]] for answer in answers] == [
        ["ShippingRefused"], ["OrderClearedForShipping"]
    ]


# == 6. decisions take their time from the request ======================================================
async def test_a_refund_asked_on_day_29_is_judged_on_day_29_even_when_no_worker_gets_to_it_for_two_days(harness):
    order_id = await delivered_order(harness)
    await harness.env.sleep(timedelta(days=29))
    refund_id = new_id("r")
    # The request reaches settleflow on day 29; its first workflow task is held back for two
    # days, as when every worker is down or far behind (the test server cannot skip time
    # while a task waits for a worker, so the delay is the server's own start delay).
    handle = harness.track(await harness.client.start_workflow(
        RefundWorkflow.run,
        RefundRequest(
            refund_id=refund_id, order_id=order_id, amount=None, reason="arrived damaged", requested_by=CUSTOMER
        , **signed(CUSTOMER)),
        id=f"refund-{refund_id}",
        task_queue=FLOWS_QUEUE,
        start_delay=timedelta(days=2),
    ))
    result = await handle.result()

    assert result.status == "completed", result.reason
    assert refunds_of(harness, order_id) == ["120.00"]


async def test_a_paid_order_never_delivered_can_still_be_cancelled_after_120_days(harness):
    order_id, _ = await place_order(harness)
    handle = payment_handle(harness, order_id)
    await ship(harness, order_id)
    await harness.env.sleep(timedelta(days=120))

    await support_cancels_and_the_money_goes_back(harness, handle, order_id)


async def test_a_delivery_or_return_billing_never_recorded_leaves_the_order_open_for_cancelling(harness):
    order_id, _ = await place_order(harness)
    handle = payment_handle(harness, order_id)
    await ship(harness, order_id)

    # Anyone who may signal the workflow says the parcel arrived, then that it came back.
    await handle.signal(PaymentWorkflow.order_delivered)
    await wait_for_trail(handle, "told the order was delivered or returned", harness.env)
    await handle.signal(PaymentWorkflow.order_returned)
    trail = await wait_for_trail(handle, "told the order was delivered or returned", harness.env, times=2)

    assert trail[-1].endswith("billing records it shipped: still open")
    assert (await handle.query("status"))["status"] == "paid"
    await support_cancels_and_the_money_goes_back(harness, handle, order_id)



class held_fulfilment_read:
    """Billing's record of a parcel is read, then held before its answer goes back (as a read
    that outlived its workflow task), once; reads after it answer at once."""

    def __init__(self) -> None:
        self.read, self.release = threading.Event(), threading.Event()

    def install(self, monkeypatch) -> None:
        real = BillingActivities.recorded_fulfilment
        held = self

        @activity.defn(name=RecordedFulfilment.activity_name)
        def recorded_fulfilment(self, order_id: str) -> RecordedFulfilment:
            recorded = real(self, order_id)
            if not held.read.is_set():
                held.read.set()
                held.release.wait(ANSWER_WITHIN)
            return recorded

        monkeypatch.setattr(BillingActivities, "recorded_fulfilment", recorded_fulfilment)


@pytest.fixture
def held_read(monkeypatch) -> held_fulfilment_read:
    held = held_fulfilment_read()
    held.install(monkeypatch)  # before the harness builds its workers
    return held


async def test_a_genuine_delivery_told_while_a_forged_one_is_read_closes_the_payment_process(held_read, harness):
    order_id, _ = await place_order(harness, task_timeout=SHORT_TASKS)
    handle = payment_handle(harness, order_id)
    await ship(harness, order_id)

    # Someone says the parcel arrived before it did; billing's record (shipped) is read and held.
    await handle.signal(PaymentWorkflow.order_delivered)
    await asyncio.to_thread(held_read.read.wait, ANSWER_WITHIN)
    # The parcel really arrives: billing records it and the process is told, while that read runs.
    await deliver_without_waiting(harness, order_id)
    await asyncio.sleep(HELD)  # the read outlives its workflow task; the genuine word is taken meanwhile
    held_read.release.set()
    result = await ended_within(harness, handle, ANSWER_WITHIN)
    await keep_history(handle, "payment_delivered_while_a_forged_delivery_was_read")

    assert result.status == "paid"
    assert any(line.startswith("told again while billing's record was read") for line in result.trail)
    assert harness.order(order_id).fulfilment == "delivered"


# -- helpers ----------------------------------------------------------------------------------------
async def support_cancels_and_the_money_goes_back(harness, handle, order_id: str) -> None:
    """Support cancels the lost parcel's order: billing accepts, and all 120.00 is refunded."""
    answer = await asyncio.wait_for(
        handle.execute_update(
            PaymentWorkflow.cancel_order, CancellationRequest(requested_by=SUPPORT, **signed(SUPPORT), reason="parcel lost")
        ),
        ANSWER_WITHIN,
    )
    result = await handle.result()

    assert (answer, result.status) == ("cancelled", "refunded")
    assert refunds_of(harness, order_id) == ["120.00"]


async def ended_within(harness, handle, seconds: float):
    """The flow's result once it ends within `seconds` of real time, whatever it waits for;
    an AssertionError with its trail when it is still open then."""
    async with real_time(harness.env):
        for _ in range(int(seconds * 10)):
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                return await handle.result()
            await asyncio.sleep(0.1)
        trail = (await handle.query("status"))["trail"]
    raise AssertionError(f"{handle.id} is still open after {seconds} s: " + " | ".join(trail[-4:]))


def _order(order_id: str, card: str):
    from workflows.messages import OrderRequest

    return OrderRequest(
        order_id=order_id, customer_id="c-1", amount=Money.of("120.00", "EUR"), card_token=card, placed_by=CUSTOMER
    , **signed(CUSTOMER))


async def deliver_without_waiting(harness, order_id: str) -> None:
    """Confirm the delivery, and wait for that flow alone (not for the payment process)."""
    await harness.client.execute_workflow(
        ConfirmDeliveryWorkflow.run,
        DeliveryRequest(order_id=order_id, requested_by=WAREHOUSE, **signed(WAREHOUSE)),
        id=f"deliver-{order_id}",
        task_queue=FLOWS_QUEUE,
    )


async def _workflow_now(harness) -> datetime:
    """The test server's clock (it runs ahead of the wall clock once time was skipped)."""
    return (await harness.env.get_current_time()).astimezone(UTC)


async def ship_at(harness, order_id: str, at: datetime) -> None:
    async with real_time(harness.env):
        await harness.client.execute_workflow(
            ShipOrderWorkflow.run,
            ShipmentRequest(order_id=order_id, tracking=new_id("TRK"), shipped_at=at, requested_by=WAREHOUSE, **signed(WAREHOUSE)),
            id=f"ship-{order_id}",
            task_queue=FLOWS_QUEUE,
        )


# -- an owner refusing a review decision (fraud refuses nothing today that the validator
# lets through, so a stub stands in for it under the real activity's name) --------------
async def test_a_review_decision_the_owner_refuses_is_answered_and_the_review_keeps_waiting(harness):
    deps = harness.deps
    fraud = FraudActivities(deps.uow_factory)

    @activity.defn(name=ResolveFraudReview.activity_name())
    def resolve_refusing_mallory(command: ResolveFraudReview) -> Outcome:
        if command.actor.id == "mallory":
            raise ApplicationError("mallory asked for this refund", type="NotAuthorized", non_retryable=True)
        return fraud.resolve_fraud_review(command)

    local = [
        a
        for owner in OWNER_QUEUES
        for a in activities_for(owner, deps.uow_factory, deps.gateway, deps.mailbox)
        if a.__temporal_activity_definition.name != ResolveFraudReview.activity_name()
    ] + [resolve_refusing_mallory]
    queue = f"{FLOWS_QUEUE}-stubbed-{new_id('q')}"
    order_id = await delivered_order(harness, amount="1500.00")

    with ThreadPoolExecutor(max_workers=2) as executor:
        async with Worker(harness.client, task_queue=queue, workflows=WORKFLOWS, activities=local,
                          activity_executor=executor):
            refund_id = new_id("r")
            handle = harness.track(await harness.client.start_workflow(
                RefundWorkflow.run,
                RefundRequest(refund_id=refund_id, order_id=order_id, amount=None, reason="broken",
                              requested_by=CUSTOMER, **signed(CUSTOMER)),
                id=f"refund-{refund_id}",
                task_queue=queue,
            ))
            await wait_for_status(handle, "under_review")
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await asyncio.wait_for(
                    handle.execute_update(
                        RefundWorkflow.resolve_review,
                        ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=Actor.parse("fraud_analyst:mallory"), **signed(Actor.parse("fraud_analyst:mallory"))),
                    ),
                    ANSWER_WITHIN,
                )
            assert "mallory asked for this refund" in str(refused.value.cause)
            assert (await handle.query(RefundWorkflow.status_view)).status == "under_review"

            await handle.execute_update(
                RefundWorkflow.resolve_review, ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=ANALYST, **signed(ANALYST))
            )
            result = await finished(harness, handle)

    assert result.status == "completed"
    assert refunds_of(harness, order_id) == ["1500.00"]
