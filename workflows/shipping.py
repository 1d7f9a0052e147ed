"""Command workflows for the warehouse: a parcel leaves, a parcel arrives.

They start no longer process, but going through Temporal means the commands are
retried and show in the web UI like everything else.

  ShipOrder → shipping → OrderShipped → RecordShipment → billing → ShipmentRecorded
  ConfirmDelivery → shipping → OrderDelivered → RecordDelivery → billing → DeliveryRecorded
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.contracts import (
        ConfirmDelivery,
        OrderDelivered,
        OrderShipped,
        RecordDelivery,
        RecordShipment,
        ShipOrder,
    )
    from workflows.messages import DeliveryRequest, ShipmentRequest, TrailView
    from workflows.process import INVALID_REQUEST, Process, Step, retry_until_done

# -- Process concerns ------------------------------------------------------------
DECIDE = Step(start_to_close=timedelta(seconds=30), retry=retry_until_done(), local=True)


@workflow.defn(failure_exception_types=INVALID_REQUEST)
class ShipOrderWorkflow(Process):
    flow_name = "shipping"

    @workflow.run
    async def run(self, request: ShipmentRequest) -> TrailView:
        self.set_status("shipping")
        shipped = await self.send(
            self.command(
                ShipOrder,
                "ship",
                actor=request.requested_by,
                order_id=request.order_id,
                tracking=request.tracking,
                shipped_at=request.shipped_at,
            ),
            DECIDE,
        )
        fact = shipped.first(OrderShipped)
        assert fact is not None
        await self.send(
            self.command(
                RecordShipment, "record-shipment", order_id=fact.order_id, tracking=fact.tracking, shipped_at=fact.shipped_at
            ),
            DECIDE,
        )
        self.set_status("shipped")
        return TrailView(status=self.status, trail=self.trail)

    @workflow.query(name="status")
    def status_view(self) -> TrailView:
        return TrailView(status=self.status, trail=self.trail)


@workflow.defn(failure_exception_types=INVALID_REQUEST)
class ConfirmDeliveryWorkflow(Process):
    flow_name = "shipping"

    @workflow.run
    async def run(self, request: DeliveryRequest) -> TrailView:
        self.set_status("delivering")
        delivered = await self.send(
            self.command(
                ConfirmDelivery,
                "confirm-delivery",
                actor=request.requested_by,
                order_id=request.order_id,
                delivered_at=request.delivered_at,
            ),
            DECIDE,
        )
        fact = delivered.first(OrderDelivered)
        assert fact is not None
        await self.send(
            self.command(RecordDelivery, "record-delivery", order_id=fact.order_id, delivered_at=fact.delivered_at),
            DECIDE,
        )
        # The order's payment process stays open for cancellations until delivery.
        try:
            await workflow.get_external_workflow_handle(f"payment-{fact.order_id}").signal("order_delivered")
            self.note("told payment process: delivered")
        except Exception:  # noqa: BLE001 - it may have ended already; nothing to tell then
            self.note("payment process already closed")
        self.set_status("delivered")
        return TrailView(status=self.status, trail=self.trail)

    @workflow.query(name="status")
    def status_view(self) -> TrailView:
        return TrailView(status=self.status, trail=self.trail)
