"""Command workflows for the warehouse: a parcel leaves, a parcel arrives.

They start no longer process, but going through Temporal means the commands are
retried and show in the web UI like everything else.

  ClearOrderForShipping → billing → OrderClearedForShipping | ShippingRefused (not paid,
      cancelled: nothing ships. Done. A parcel that left before the cancellation, recorded
      late with `--at`, is cleared: it did leave)
  ShipOrder → shipping → OrderShipped → RecordShipment → billing → ShipmentRecorded
      (+ DeliveryRecorded when the delivery came first → signal `order_delivered` to the
      order's payment process) → signal `shipment_recorded` to a delivery flow waiting for it
      (+ ShipmentInterceptRequested when the order was cancelled meanwhile: its money is going
      back → InterceptShipment → shipping → RecordInterceptOutcome → billing, workflows/
      intercept.py; status `stopped` when the parcel comes back)
  ConfirmDelivery → shipping → OrderDelivered → RecordDelivery → billing → DeliveryRecorded
      → signal `order_delivered` to the order's payment process (+ CancelledOrderDelivered when
      the order was cancelled meanwhile → NotifyTeam(support): the customer has the goods;
      + ReturnedParcelDelivered when its parcel had been stopped for a refund — a late scan, a
      stop that did not take → NotifyTeam(support): the customer has the goods and the refund)
      (or DeliveryHeld when billing has not recorded the shipment yet: applied with it, and
      the shipment flow tells the payment process)
      Shipping has no parcel yet (NotFound): the delivery waits for `shipment_recorded`, then
      asks again — a delivery is never lost for arriving first; woken while shipping still
      knows no parcel (the signal names no sender), it waits on. Still none after
      WAIT_FOR_SHIPMENT → NotifyTeam(support), and it waits on for as long as it takes.

Both are judged at the time their request reached settleflow (the workflow's start).
A request refused or failed may be asked again (`starter.py ship` / `deliver` do): a new
run of the same workflow id with `attempt` n, whose commands carry ids of their own.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.contracts import (
        ClearOrderForShipping,
        ConfirmDelivery,
        CancelledOrderDelivered,
        DeliveryRecorded,
        NotifyTeam,
        OrderDelivered,
        ParcelReturned,
        OrderShipped,
        RecordDelivery,
        RecordShipment,
        ReturnedParcelDelivered,
        ShipOrder,
        ShipmentInterceptRequested,
        ShippingRefused,
    )
    from workflows.intercept import StopsTheParcel
    from workflows.messages import DeliveryRequest, ShipmentRequest, TrailView, ask_again
    from workflows.process import INVALID_REQUEST, VERIFIED_FULFILMENT, WAITS_ON_AFTER_A_FALSE_WAKE, Process, Refused, Step, from_outside
    from workflows.process import STOPS_A_CANCELLED_ORDERS_PARCEL, TELLS_SUPPORT_A_CANCELLED_ORDER_ARRIVED, retry_until_done
    from workflows.process import DELIVERY_WAITS_ON_FOR_ITS_SHIPMENT, TELLS_SUPPORT_A_STOPPED_PARCEL_ARRIVED

# -- Process concerns ------------------------------------------------------------
DECIDE = Step(start_to_close=timedelta(seconds=30), retry=retry_until_done(), local=True)
# A delivery confirmed before its parcel was shipped waits this long for the shipment, then
# tells support and waits on for as long as it takes (flows begun before flows-2026-12-06g
# fail at this point with the reason instead).
WAIT_FOR_SHIPMENT = timedelta(days=30)

# Patch ids: flows started before these changes replay along their old path.
BILLING_CLEARS_SHIPPING = "billing-clears-shipping"
DELIVERY_WAITS_FOR_SHIPMENT = "delivery-waits-for-shipment"


class TellsThePaymentProcess:
    """Mixed into a Process (before it): the order's payment process stays open for
    cancellations until delivery, and is told when billing has recorded it; support is told
    of a cancelled order's parcel that reached, or may reach, its customer."""

    async def tell_payment_process_delivered(self, order_id: str) -> None:
        try:
            await workflow.get_external_workflow_handle(f"payment-{order_id}").signal("order_delivered")
            self.note("told payment process: delivered")
        except Exception:  # noqa: BLE001 - it may have ended already; nothing to tell then
            self.note("payment process already closed")

    async def tell_support(self: Any, kind: str, order_id: str, attempt: int, **facts: str) -> None:
        await self.send(
            self.command(
                NotifyTeam, ask_again(f"tell-support-{kind}", attempt), team="support", kind=kind, subject=order_id,
                facts={"order_id": order_id, **facts},
            ),
            DECIDE,
        )


@workflow.defn(failure_exception_types=INVALID_REQUEST)
class ShipOrderWorkflow(StopsTheParcel, TellsThePaymentProcess, Process):
    flow_name = "shipping"

    @workflow.run
    async def run(self, request: ShipmentRequest) -> TrailView:
        from_outside(request.requested_by)
        self.begin()
        self.runs_as(f"ship-{request.order_id}")
        stops_the_parcel = self.folded_in(STOPS_A_CANCELLED_ORDERS_PARCEL)  # a run begun before has none
        tells_support = self.folded_in(TELLS_SUPPORT_A_CANCELLED_ORDER_ARRIVED)
        self.set_status("shipping")
        patched = self.runs_with(BILLING_CLEARS_SHIPPING)
        if patched:
            # Billing decides first whether the order may ship; shipping acts after.
            cleared = await self.send(
                self.command(
                    ClearOrderForShipping, ask_again("clear", request.attempt), actor=request.requested_by, credential=request.token,
                    order_id=request.order_id, issued_at=self.started_at(),
                    shipped_at=request.shipped_at or self.started_at(),
                ),
                DECIDE,
            )
            if refused := cleared.first(ShippingRefused):
                self.set_status("refused")
                self.note(f"may not ship: {refused.detail}")
                return TrailView(status=self.status, trail=self.trail)
        shipped = await self.send(
            self.command(
                ShipOrder,
                ask_again("ship", request.attempt),
                actor=request.requested_by,
                credential=request.token,
                issued_at=self.started_at(),
                order_id=request.order_id,
                tracking=request.tracking,
                shipped_at=request.shipped_at,
            ),
            DECIDE,
        )
        fact = shipped.first(OrderShipped)
        assert fact is not None
        recorded = await self.send(
            self.command(
                RecordShipment, ask_again("record-shipment", request.attempt), order_id=fact.order_id, tracking=fact.tracking, shipped_at=fact.shipped_at
            ),
            DECIDE,
        )
        if recorded.has(DeliveryRecorded) and self.takes(VERIFIED_FULFILMENT):
            # Billing applied a delivery it had held: only now does its record say delivered,
            # so only now may the payment process (which reads that record) close.
            await self.tell_payment_process_delivered(fact.order_id)
        if tells_support and (arrived := recorded.first(CancelledOrderDelivered)) is not None:
            # A delivery billing held, applied now, of an order cancelled meanwhile.
            await self.tell_support(
                "cancelled_order_delivered_support", arrived.order_id, request.attempt,
                delivered_at=arrived.delivered_at.isoformat(),
            )
        delivery_confirmed = False
        if patched:
            # A delivery that arrived first may be waiting for this shipment.
            try:
                await workflow.get_external_workflow_handle(f"deliver-{fact.order_id}").signal("shipment_recorded")
                self.note("told the waiting delivery: shipped")
                delivery_confirmed = True
            except Exception:  # noqa: BLE001 - no delivery is waiting: nothing to tell
                pass
        stopped = False
        if stops_the_parcel and (stop := recorded.first(ShipmentInterceptRequested)) is not None:
            stopped = await self.stop_the_parcel(stop, delivery_confirmed, request.attempt)
        self.set_status("stopped" if stopped else "shipped")
        return TrailView(status=self.status, trail=self.trail)

    async def stop_the_parcel(self, stop: ShipmentInterceptRequested, delivery_confirmed: bool, attempt: int) -> bool:
        """The order was cancelled while its parcel left, and its money is going back: the
        parcel is stopped — unless a delivery of it is being confirmed (it reached settleflow
        before this shipment, so nobody knew when the order was cancelled): support is told,
        and the delivery, once recorded, tells support it arrived (`CancelledOrderDelivered`).
        Whether the parcel came back."""
        if delivery_confirmed:
            # Whether it arrives (and is recorded) or not (the delivery is refused), a person looks.
            self.note("a delivery of this parcel is being confirmed: it is not stopped; support is told")
            await self.tell_support(
                "cancelled_order_not_stopped_support", stop.order_id, attempt, refund_id=stop.refund_id,
                tracking=stop.tracking,
            )
            return False
        self.note("the order was cancelled meanwhile: stopping its parcel")
        return (await self.intercept(stop, DECIDE, attempt)).has(ParcelReturned)

    @workflow.query(name="status")
    def status_view(self) -> TrailView:
        return TrailView(status=self.status, trail=self.trail)


@workflow.defn(failure_exception_types=INVALID_REQUEST)
class ConfirmDeliveryWorkflow(TellsThePaymentProcess, Process):
    flow_name = "shipping"

    def __init__(self) -> None:
        super().__init__()
        self.shipment_recorded = False
        self.waits_on_after_a_false_wake = False  # shipping knows no shipment yet: wait on (a release's change)

    @workflow.run
    async def run(self, request: DeliveryRequest) -> TrailView:
        from_outside(request.requested_by)
        self.begin()
        self.runs_as(f"deliver-{request.order_id}")
        # A flow of the release that folded it in waits on from the start (a wake before it
        # waited, too); an older one asks in the signal handler.
        self.waits_on_after_a_false_wake = self.folded_in(WAITS_ON_AFTER_A_FALSE_WAKE)
        tells_support = self.folded_in(TELLS_SUPPORT_A_CANCELLED_ORDER_ARRIVED)  # a run begun before has none
        tells_of_a_stopped_parcel = self.folded_in(TELLS_SUPPORT_A_STOPPED_PARCEL_ARRIVED)
        self.set_status("delivering")
        confirm = self.command(
            ConfirmDelivery,
            ask_again("confirm-delivery", request.attempt),
            actor=request.requested_by,
            credential=request.token,
            issued_at=self.started_at(),
            order_id=request.order_id,
            delivered_at=request.delivered_at,
        )
        if self.runs_with(DELIVERY_WAITS_FOR_SHIPMENT):
            delivered = await self.confirm_once_shipped(confirm, request.attempt)
        else:
            delivered = await self.send(confirm, DECIDE)
        fact = delivered.first(OrderDelivered)
        assert fact is not None
        recorded = await self.send(
            self.command(RecordDelivery, ask_again("record-delivery", request.attempt), order_id=fact.order_id, delivered_at=fact.delivered_at),
            DECIDE,
        )
        # The order's payment process stays open for cancellations until billing records the
        # delivery; one billing holds (no shipment recorded yet) is told by the shipment flow.
        if recorded.has(DeliveryRecorded) or not self.takes(VERIFIED_FULFILMENT):
            await self.tell_payment_process_delivered(fact.order_id)
        if tells_support and (arrived := recorded.first(CancelledOrderDelivered)) is not None:
            await self.tell_support(
                "cancelled_order_delivered_support", arrived.order_id, request.attempt,
                delivered_at=arrived.delivered_at.isoformat(),
            )
        if tells_of_a_stopped_parcel and (late := recorded.first(ReturnedParcelDelivered)) is not None:
            await self.tell_support(
                "returned_parcel_delivered_support", late.order_id, request.attempt,
                delivered_at=late.delivered_at.isoformat(), returned_at=late.returned_at.isoformat(),
            )
        self.set_status("delivered")
        return TrailView(status=self.status, trail=self.trail)

    async def confirm_once_shipped(self, confirm: ConfirmDelivery, attempt: int):
        """Shipping knows no parcel for the order yet: keep the delivery (same command, same
        time) until the shipment is recorded, then ask again."""
        try:
            return await self.send(confirm, DECIDE)
        except Refused as refused:
            if refused.kind != "NotFound":
                raise
        self.set_status("waiting_for_shipment")
        self.note("no shipment yet: the delivery waits for it")
        until = workflow.now() + WAIT_FOR_SHIPMENT
        waits_on = self.folded_in(DELIVERY_WAITS_ON_FOR_ITS_SHIPMENT)  # a run begun before fails at the end
        for woken in itertools.count():
            if until is None:
                await workflow.wait_condition(lambda: self.shipment_recorded)  # as long as it takes
            elif not await self.wait_for(lambda: self.shipment_recorded, until - workflow.now(), "waiting for the shipment"):
                if not waits_on:
                    raise ApplicationError(
                        f"no shipment of order {confirm.order_id} was recorded within {WAIT_FOR_SHIPMENT.days} days "
                        "of its delivery",
                        type="ShipmentNeverRecorded",
                        non_retryable=True,
                    )
                # The delivery is a fact: no timer drops it. Support is told, once, and it waits on.
                until = None
                self.note(f"no shipment within {WAIT_FOR_SHIPMENT.days} days: support is told, the delivery waits on")
                await self.tell_support(
                    "delivery_without_shipment_support", confirm.order_id, attempt,
                    delivered_at=(confirm.delivered_at or confirm.issued_at).isoformat(),
                    confirmed_at=confirm.issued_at.isoformat(), waited_days=str(WAIT_FOR_SHIPMENT.days),
                )
                self.set_status("waiting_for_shipment")
                continue
            self.set_status("delivering")
            if self.waits_on_after_a_false_wake:
                self.shipment_recorded = False  # a signal while shipping is asked wakes the next wait
            after = f"{confirm.command_id}-after-shipment" + (f"-{woken + 1}" if woken else "")
            try:
                return await self.send(confirm.model_copy(update={"command_id": after}), DECIDE)
            except Refused as refused:
                # The signal names no sender: shipping's answer decides whether a shipment came.
                if refused.kind != "NotFound" or not self.waits_on_after_a_false_wake:
                    raise
            self.set_status("waiting_for_shipment")
            self.note("told of a shipment shipping does not know: the delivery waits on")
        raise AssertionError("unreachable")

    @workflow.signal
    def shipment_recorded(self) -> None:
        if self.status == "waiting_for_shipment" and not self.waits_on_after_a_false_wake:
            self.waits_on_after_a_false_wake = self.takes(WAITS_ON_AFTER_A_FALSE_WAKE)  # where it wakes
        self.shipment_recorded = True

    @workflow.query(name="status")
    def status_view(self) -> TrailView:
        return TrailView(status=self.status, trail=self.trail)
