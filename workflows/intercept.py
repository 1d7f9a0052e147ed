"""Stopping a parcel on the road for the refund paying its order back, as one step of two
flows: a refund of all of a parcel in transit (workflows/refund.py), and a parcel that left
for an order cancelled meanwhile (workflows/shipping.py).

  ShipmentInterceptRequested → InterceptShipment → shipping → ShipmentIntercepted
      | ShipmentInterceptFailed → RecordInterceptOutcome → billing → ParcelReturned
      | ParcelStillInTransit; ParcelReturned → signal `order_returned` to the order's payment
      process (nothing is left to cancel); ParcelStillInTransit + ReturnedParcelDelivered (the
      stop took, but billing had the parcel delivered already) → NotifyTeam(support)
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from domain.contracts import (
    InterceptShipment,
    Outcome,
    ParcelReturned,
    NotifyTeam,
    RecordInterceptOutcome,
    ReturnedParcelDelivered,
    ShipmentIntercepted,
    ShipmentInterceptFailed,
    ShipmentInterceptRequested,
)
from workflows.messages import ask_again
from workflows.process import TELLS_SUPPORT_A_STOP_AFTER_DELIVERY


class StopsTheParcel:
    """Mixed into a Process (before it)."""

    async def intercept(
        self: Any, requested: ShipmentInterceptRequested, decide: Any, attempt: int = 1, tell_beside: bool = False
    ) -> Outcome:
        """Ask shipping to stop the parcel, and tell billing what shipping answered; billing's
        answer is returned. `attempt`: the request's, for the commands' ids (`ask_again`).
        `tell_beside`: support's notice goes out beside the flow (a refund pays meanwhile)."""
        answered = await self.send(
            self.command(
                InterceptShipment, ask_again("intercept", attempt), order_id=requested.order_id,
                refund_id=requested.refund_id,
            ),
            decide,
        )
        if answered.has(ShipmentIntercepted):
            outcome: dict[str, Any] = dict(intercepted=True)
        else:
            failed = answered.first(ShipmentInterceptFailed)
            assert failed is not None, "shipping answers an intercept with success or failure"
            outcome = dict(intercepted=False, reason=failed.reason)
        recorded = await self.send(
            self.command(
                RecordInterceptOutcome, ask_again("record-intercept", attempt), order_id=requested.order_id,
                refund_id=requested.refund_id, **outcome,
            ),
            decide,
        )
        if recorded.has(ParcelReturned):
            # The parcel comes back: the order's payment process has nothing left to cancel.
            try:
                await workflow.get_external_workflow_handle(f"payment-{requested.order_id}").signal("order_returned")
            except Exception:  # noqa: BLE001 - it may have ended already; nothing to tell then
                pass
        late = recorded.first(ReturnedParcelDelivered)
        if late is not None and self.folded_in(TELLS_SUPPORT_A_STOP_AFTER_DELIVERY):  # a run begun before has none
            # The customer has the goods and the refund: whether to ask for them back is support's.
            notice = self.command(
                NotifyTeam, ask_again("tell-support-stopped-after-delivery", attempt), team="support",
                kind="returned_parcel_delivered_support", subject=late.order_id,
                facts={"order_id": late.order_id, "delivered_at": late.delivered_at.isoformat(),
                       "returned_at": late.returned_at.isoformat()},
            )
            if tell_beside:
                self.send_beside(notice, decide, "support's notice of the stop after delivery")
            else:  # a run begun before tells first
                await self.send(notice, decide)
        return recorded
