"""RefundWorkflow on the time-skipping server: every branch, with real owners,
a real database and the real gateway simulator. Days pass in milliseconds."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowUpdateFailedError

from domain.fraud.commands import ReviewDecision
from domain.shared.actor import Actor
from tests.workflows import flows
from tests.workflows.flows import (
    deliver,
    delivered_order,
    finished,
    keep_history,
    new_id,
    place_order,
    ship,
    start_refund,
)
from tests.workflows.flows import wait_for_status as wait_until
from tests.workflows.flows import real_time
from workflows.process import FLOWS_QUEUE
from workflows.refund import RefundRequest, RefundWorkflow, ReviewResolution
from tests.tokens import signed

ANALYST = Actor.parse("fraud_analyst:alice")
CUSTOMER = Actor.parse("customer:c-1")


def refunds_in_ledger(harness, order_id: str) -> list[dict]:
    charge = harness.payment(order_id).capture.gateway_reference
    return [r for r in harness.ledger()["refunds"] if r["charge"] == charge]


def kinds(messages: list[dict]) -> list[str]:
    return sorted(m["kind"] for m in messages)


async def test_a_delivered_order_is_refunded_once_and_the_customer_told_once(harness):
    order_id = await delivered_order(harness)
    handle = await start_refund(harness, order_id, "20.00")

    result = await finished(harness, handle)
    await keep_history(handle, "refund_completed")

    assert result.status == "completed"
    assert [r["amount"] for r in refunds_in_ledger(harness, order_id)] == ["20.00"]
    order = harness.order(order_id)
    assert order.refunded.amount == Decimal("20.00")
    assert order.refundable.amount == Decimal("100.00")
    assert kinds(harness.messages("customer:c-1")) == ["payment_received", "refund_completed"]
    [note] = harness.invoice(order_id).credit_notes  # the money went back: the invoice is credited
    assert (note.refund_id, note.amount.amount) == (result.refund_id, Decimal("20.00"))


async def test_a_refund_of_an_order_left_without_an_invoice_is_paid_and_support_told_no_credit_note_went_out(harness):
    order_id = await delivered_order(harness)
    with harness.engine.begin() as conn:  # an order whose invoicing never happened (its flow ended before)
        conn.execute(text("DELETE FROM invoices WHERE order_id = :order_id"), {"order_id": order_id})

    result = await finished(harness, await start_refund(harness, order_id, "20.00"))

    assert result.status == "completed" and any("no credit note" in line for line in result.trail)
    assert [r["amount"] for r in refunds_in_ledger(harness, order_id)] == ["20.00"]
    [told] = harness.messages("team:support")
    assert told["kind"] == "invoice_not_credited_support" and "no invoice" in told["body"]
    assert "refund_completed" in kinds(harness.messages("customer:c-1"))


async def test_no_amount_refunds_everything_still_refundable(harness):
    order_id = await delivered_order(harness)
    await finished(harness, await start_refund(harness, order_id, "20.00"))

    result = await finished(harness, await start_refund(harness, order_id))

    assert result.status == "completed"
    assert result.amount.amount == Decimal("100.00")
    assert harness.order(order_id).refundable.amount == Decimal("0.00")
    invoice = harness.invoice(order_id)
    assert [n.amount.amount for n in invoice.credit_notes] == [Decimal("20.00"), Decimal("100.00")]
    assert invoice.credited == invoice.total  # every cent billed is credited back


async def test_a_refund_after_the_30_day_window_is_rejected_and_no_money_moves(harness):
    order_id, _ = await place_order(harness)
    await ship(harness, order_id)  # a parcel never leaves before its order was placed
    await deliver(harness, order_id)
    await harness.env.sleep(timedelta(days=40))

    handle = await start_refund(harness, order_id, "20.00")
    result = await finished(harness, handle)
    await keep_history(handle, "refund_rejected")

    assert (result.status, result.reason) == ("rejected", "refund_window_closed")
    assert refunds_in_ledger(harness, order_id) == []
    assert "refund_rejected" in kinds(harness.messages("customer:c-1"))


async def test_a_refund_above_what_remains_is_rejected(harness):
    order_id = await delivered_order(harness)
    await finished(harness, await start_refund(harness, order_id, "100.00"))

    result = await finished(harness, await start_refund(harness, order_id, "50.00"))

    assert (result.status, result.reason) == ("rejected", "exceeds_refundable")
    assert [r["amount"] for r in refunds_in_ledger(harness, order_id)] == ["100.00"]


async def test_a_refund_of_a_parcel_in_transit_intercepts_it(harness):
    order_id, _ = await place_order(harness)
    await ship(harness, order_id)

    handle = await start_refund(harness, order_id)
    result = await finished(harness, handle)
    await keep_history(handle, "refund_intercepted")

    assert result.status == "completed"
    assert any("InterceptShipment → shipping → ShipmentIntercepted" in step for step in result.trail)
    with harness.uow_factory() as uow:
        assert uow.shipments.get(order_id).status == "intercepted"


async def test_a_customer_cannot_refund_another_customers_order(harness):
    order_id = await delivered_order(harness)

    result = await finished(harness, await start_refund(harness, order_id, "20.00", by="customer:c-2"))

    assert result.status == "rejected"
    assert "belongs to another customer" in result.reason
    assert harness.order(order_id).refunds == {}
    assert refunds_in_ledger(harness, order_id) == []


async def test_a_large_refund_waits_for_a_person_and_is_paid_after_approval(harness):
    order_id = await delivered_order(harness, amount="1500.00")
    handle = await start_refund(harness, order_id)
    await wait_for_status(handle, "under_review")

    status = await handle.execute_update(
        RefundWorkflow.resolve_review, ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=ANALYST, **signed(ANALYST))
    )
    result = await handle.result()
    await keep_history(handle, "refund_review_approved")

    assert status in {"sending", "completed"}
    assert result.status == "completed"
    assert [r["amount"] for r in refunds_in_ledger(harness, order_id)] == ["1500.00"]


async def test_a_rejected_review_cancels_the_refund_and_releases_the_amount(harness):
    order_id = await delivered_order(harness, amount="1500.00")
    handle = await start_refund(harness, order_id)
    await wait_for_status(handle, "under_review")

    await handle.execute_update(
        RefundWorkflow.resolve_review,
        ReviewResolution(decision=ReviewDecision.REJECT, reviewer=ANALYST, **signed(ANALYST), note="pattern of abuse"),
    )
    result = await handle.result()
    await keep_history(handle, "refund_review_rejected")

    assert (result.status, result.reason) == ("cancelled", "rejected_by_analyst")
    assert refunds_in_ledger(harness, order_id) == []
    assert harness.order(order_id).refundable.amount == Decimal("1500.00")
    assert "refund_cancelled" in kinds(harness.messages("customer:c-1"))


async def test_a_review_decision_is_taken_once_and_only_by_a_fraud_analyst(harness):
    order_id = await delivered_order(harness, amount="1500.00")
    handle = await start_refund(harness, order_id)
    await wait_for_status(handle, "under_review")

    with pytest.raises(WorkflowUpdateFailedError) as wrong_role:
        await handle.execute_update(
            RefundWorkflow.resolve_review,
            ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=Actor.parse("support:sam"), **signed(Actor.parse("support:sam"))),
        )
    assert "a support cannot decide a fraud review" in str(wrong_role.value.cause)
    # Two analysts decide at the same moment: exactly one decision is taken.
    decisions = await asyncio.gather(
        handle.execute_update(
            RefundWorkflow.resolve_review, ReviewResolution(decision=ReviewDecision.REJECT, reviewer=ANALYST, **signed(ANALYST))
        ),
        handle.execute_update(
            RefundWorkflow.resolve_review,
            ReviewResolution(decision=ReviewDecision.REJECT, reviewer=Actor.parse("fraud_analyst:bob"), **signed(Actor.parse("fraud_analyst:bob"))),
        ),
        return_exceptions=True,
    )
    refused = [d for d in decisions if isinstance(d, WorkflowUpdateFailedError)]
    assert len(refused) == 1 and "already been decided" in str(refused[0].cause)
    assert (await handle.result()).status == "cancelled"
    assert refunds_in_ledger(harness, order_id) == []


async def test_an_unanswered_review_reminds_the_fraud_team_at_24h_and_expires_at_72h(harness):
    order_id = await delivered_order(harness, amount="1500.00")
    handle = await start_refund(harness, order_id)
    await wait_for_status(handle, "under_review")

    await harness.env.sleep(timedelta(hours=23))
    assert harness.messages("team:fraud") == []
    await harness.env.sleep(timedelta(hours=2))
    assert kinds(harness.messages("team:fraud")) == ["fraud_review_reminder"]
    assert (await handle.query(RefundWorkflow.status_view)).status == "under_review"

    result = await handle.result()
    await keep_history(handle, "refund_review_expired")

    assert (result.status, result.reason) == ("cancelled", "review_expired")
    assert kinds(harness.messages("team:fraud")) == ["fraud_review_reminder"]
    assert refunds_in_ledger(harness, order_id) == []


class mailbox_down:
    """The mailbox refuses every message for a while (its writing folder is a file), as in
    an outage: notifications are retried until it is back."""

    def __init__(self, harness) -> None:
        self.writing = harness.mailbox.writing
        self.away = self.writing.with_name(".writing-away")

    def __enter__(self) -> None:
        self.writing.rename(self.away)
        self.writing.write_text("")

    def __exit__(self, *exc: object) -> None:
        self.writing.unlink()
        self.away.rename(self.writing)


async def review_an_hour_before_its_reminder(harness):
    """A refund of 1,500.00 under review for 23 h. Its workflow tasks last 2 s: a reminder held up
    for longer comes back in a later task, at a later workflow time, as a longer outage would
    (the test server cannot skip time while a local activity is retried)."""
    order_id = await delivered_order(harness, amount="1500.00")
    refund_id = new_id("r")
    handle = harness.track(await harness.client.start_workflow(
        RefundWorkflow.run,
        RefundRequest(refund_id=refund_id, order_id=order_id, amount=None, reason="arrived damaged",
                      requested_by=CUSTOMER, **signed(CUSTOMER)),
        id=f"refund-{refund_id}", task_queue=FLOWS_QUEUE, task_timeout=timedelta(seconds=2),
    ))
    await wait_until(handle, "under_review")
    await harness.env.sleep(timedelta(hours=23))
    return order_id, refund_id, handle


async def test_a_reminder_held_up_by_a_mailbox_outage_does_not_move_the_reviews_expiry(harness):
    order_id, refund_id, handle = await review_an_hour_before_its_reminder(harness)

    with mailbox_down(harness):
        held_up = asyncio.create_task(harness.env.sleep(timedelta(hours=2)))  # the reminder falls due
        await asyncio.sleep(4)
    await held_up
    result = await handle.result()

    timers = [e for e in (await handle.fetch_history()).events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
    reminder_started, expiry_started = timers[0], timers[-1]
    reminder_due = reminder_started.event_time.ToDatetime() + reminder_started.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
    expiry_due = expiry_started.event_time.ToDatetime() + expiry_started.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
    # The expiry's timer starts as the reminder falls due, not once the reminder has gone out:
    # 72 h after the review opened (give or take the workflow task that starts it).
    assert expiry_due - reminder_due <= timedelta(hours=48, seconds=2)
    assert (result.status, result.reason) == ("cancelled", "review_expired")
    assert kinds(harness.messages("team:fraud")) == ["fraud_review_reminder"]


async def test_a_reviewers_decision_during_a_mailbox_outage_pays_at_once_and_the_reminder_follows_it(harness):
    order_id, refund_id, handle = await review_an_hour_before_its_reminder(harness)

    with mailbox_down(harness):
        held_up = asyncio.create_task(harness.env.sleep(timedelta(hours=2)))  # the reminder falls due
        await asyncio.sleep(3)
        # The reminder cannot go out; the analyst's decision is taken anyway, and the money goes.
        status = await asyncio.wait_for(handle.execute_update(
            RefundWorkflow.resolve_review,
            ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=ANALYST, **signed(ANALYST)),
        ), timeout=30)
        for _ in range(300):
            if refunds_in_ledger(harness, order_id):
                break
            await asyncio.sleep(0.1)
        paid_while_the_mailbox_was_down = [r["amount"] for r in refunds_in_ledger(harness, order_id)]
        assert kinds(harness.messages("team:fraud")) == []
    await held_up
    result = await handle.result()
    await keep_history(handle, "refund_review_decided_while_its_reminder_was_held_up")

    assert status != "under_review"
    assert paid_while_the_mailbox_was_down == ["1500.00"]
    assert result.status == "completed"
    assert kinds(harness.messages("team:fraud")) == ["fraud_review_reminder"]  # once the mailbox was back


async def test_a_review_cancelled_while_its_reminder_is_held_up_ends_only_once_the_reminder_went_out(harness):
    order_id, refund_id, handle = await review_an_hour_before_its_reminder(harness)

    with mailbox_down(harness):
        held_up = asyncio.create_task(harness.env.sleep(timedelta(hours=2)))  # the reminder falls due
        await asyncio.sleep(3)
        await handle.cancel()  # an operator's Cancel while the reminder cannot go out
        await asyncio.sleep(3)
        still_running = (await handle.describe()).status
    await held_up
    with pytest.raises(WorkflowFailureError):
        await handle.result()

    assert still_running is WorkflowExecutionStatus.RUNNING
    assert (await handle.describe()).status is WorkflowExecutionStatus.CANCELED
    assert kinds(harness.messages("team:fraud")) == ["fraud_review_reminder"]
    assert refunds_in_ledger(harness, order_id) == []


class reminder_undeliverable:
    """Only this refund's reminder to the fraud team cannot be delivered (its message's place
    in the mailbox is taken by a folder): every other message goes out."""

    def __init__(self, harness, refund_id: str) -> None:
        name = hashlib.sha256(f"team:fraud/fraud_review_reminder/{refund_id}".encode()).hexdigest()[:32]
        self.blocker = harness.mailbox.folder / f"{name}.json"

    def __enter__(self) -> None:
        self.blocker.mkdir()

    def __exit__(self, *exc: object) -> None:
        self.blocker.rmdir()


async def test_a_cancel_after_the_refund_was_decided_waits_for_the_reminder_and_the_refund_stays_completed(harness):
    order_id, refund_id, handle = await review_an_hour_before_its_reminder(harness)

    with reminder_undeliverable(harness, refund_id):
        held_up = asyncio.create_task(harness.env.sleep(timedelta(hours=2)))  # the reminder falls due
        await asyncio.sleep(3)
        await asyncio.wait_for(handle.execute_update(
            RefundWorkflow.resolve_review,
            ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=ANALYST, **signed(ANALYST)),
        ), timeout=30)
        for _ in range(300):
            if (await handle.query(RefundWorkflow.status_view)).status == "completed":
                break
            await asyncio.sleep(0.1)
        await handle.cancel()  # too late: the refund is paid; only the reminder is still going out
        await asyncio.sleep(3)
        still_running = (await handle.describe()).status
    await held_up
    result = await handle.result()

    assert still_running is WorkflowExecutionStatus.RUNNING
    assert result.status == "completed"
    assert (await handle.describe()).status is WorkflowExecutionStatus.COMPLETED
    assert [r["amount"] for r in refunds_in_ledger(harness, order_id)] == ["1500.00"]
    assert kinds(harness.messages("team:fraud")) == ["fraud_review_reminder"]
    assert any("it goes out first" in line for line in result.trail)


async def test_a_gateway_decline_fails_the_refund_and_the_amount_becomes_refundable_again(harness):
    order_id = await delivered_order(harness, card="tok_refund_declined")

    handle = await start_refund(harness, order_id, "30.00")
    result = await handle.result()
    await keep_history(handle, "refund_gateway_declined")

    assert (result.status, result.reason) == ("failed", "declined:expired_or_canceled_card")
    assert refunds_in_ledger(harness, order_id) == []
    assert harness.order(order_id).refundable.amount == Decimal("120.00")
    assert "refund_failed" in kinds(harness.messages("customer:c-1"))
    assert kinds(harness.messages("team:support")) == ["refund_failed_support"]
    assert harness.invoice(order_id).credit_notes == []  # no money went back: nothing is credited


async def test_a_gateway_down_for_a_day_is_retried_then_the_refund_fails_once_the_gateway_confirms_it_never_paid(harness):
    from tests.workflows.test_reconciliation import reconcile  # noqa: PLC0415

    order_id = await delivered_order(harness, card="tok_refunds_unavailable")

    handle = await start_refund(harness, order_id, "30.00")
    await wait_until(handle, "sending", env=harness.env)
    await harness.env.sleep(timedelta(hours=25))  # a day of retries runs out
    waiting = await wait_until(handle, "awaiting_reconciliation", env=harness.env)
    assert harness.order(order_id).refundable.amount == Decimal("90.00")  # unknown frees nothing
    assert kinds(harness.messages("team:support")) == []
    await reconcile(harness)
    result = await handle.result()
    await keep_history(handle, "refund_gateway_unavailable")

    assert waiting.status == "awaiting_reconciliation"
    # 23 h after the request first left (Temporal's clock), payments sends nothing more under
    # its key (Stripe keeps one 24 h): the answer became unknown then, not when retries ran out.
    assert any("its key may be forgotten" in line for line in waiting.trail), waiting.trail
    assert (result.status, result.reason) == ("failed", "not_paid:GatewayRefundNotFound")
    assert refunds_in_ledger(harness, order_id) == []
    assert harness.order(order_id).refundable.amount == Decimal("120.00")
    assert kinds(harness.messages("team:support")) == ["refund_failed_support"]


async def test_a_flaky_gateway_is_retried_and_the_money_moves_once(harness):
    order_id = await delivered_order(harness, card="tok_flaky")

    result = await (await start_refund(harness, order_id, "25.00")).result()

    assert result.status == "completed"
    assert [r["amount"] for r in refunds_in_ledger(harness, order_id)] == ["25.00"]


async def test_a_gateway_timeout_after_the_money_moved_does_not_refund_twice(harness):
    order_id = await delivered_order(harness, card="tok_timeout")

    result = await (await start_refund(harness, order_id, "25.00")).result()

    assert result.status == "completed"
    assert [r["amount"] for r in refunds_in_ledger(harness, order_id)] == ["25.00"]
    assert len([c for c in harness.ledger()["captures"] if c["reference"] == order_id]) == 1


async def test_the_status_query_tells_the_trail_so_far(harness):
    order_id = await delivered_order(harness, amount="1500.00")
    handle = await start_refund(harness, order_id)
    await wait_for_status(handle, "under_review")

    view = await handle.query(RefundWorkflow.status_view)

    assert view.trail[:2] == [
        "RequestRefund → billing → RefundApproved",
        "ScreenRefund → fraud → FraudReviewOpened",
    ]
    await handle.terminate("test done")


async def wait_for_status(handle, status: str) -> None:
    for _ in range(200):
        if (await handle.query(RefundWorkflow.status_view)).status == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} never reached {status}")


async def test_a_review_decision_the_workflow_does_not_know_is_refused_and_changes_nothing(harness):
    order_id = await delivered_order(harness, amount="1500.00")
    handle = await start_refund(harness, order_id)
    await wait_for_status(handle, "under_review")

    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(
            "resolve_review", {"decision": "maybe", "reviewer": {"role": "fraud_analyst", "id": "a"}}
        )
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update("resolve_review", {"decision": "approve", "reviewer": {"role": "pirate", "id": "x"}})

    assert (await handle.query(RefundWorkflow.status_view)).status == "under_review"
    with harness.uow_factory() as uow:
        assert uow.fraud_reviews.get(handle.id.removeprefix("refund-")).status == "open"


async def test_a_refund_the_gateway_declined_no_longer_counts_toward_the_customers_frequent_refunds(harness):
    """Two refunds declined by the gateway, then a third within the week: only refunds
    paid count, so the third is cleared rather than sent to a person."""
    declined = []
    for _ in range(2):
        order_id = await delivered_order(harness, card="tok_refund_declined")
        declined.append(await finished(harness, await start_refund(harness, order_id, "10.00")))
    order_id = await delivered_order(harness)
    handle = await start_refund(harness, order_id, "10.00")
    async with real_time(harness.env):
        third = await flows.wait_for_status(handle, "completed", "under_review")

    assert [r.status for r in declined] == ["failed", "failed"]
    assert third.status == "completed"
    with harness.uow_factory() as uow:
        statuses = sorted(r.status.value for r in uow.fraud_reviews.for_customer("c-1"))
    assert statuses == ["cleared", "withdrawn", "withdrawn"]
