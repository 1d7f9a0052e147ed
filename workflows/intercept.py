"""Stopping a parcel on the road for the refund paying its order back, as one step of two
flows: a refund of all of a parcel in transit (workflows/refund.py), and a parcel that left
for an order cancelled meanwhile (workflows/shipping.py).

  ShipmentInterceptRequested → InterceptShipment → shipping → ShipmentIntercepted
      | ShipmentInterceptFailed → RecordInterceptOutcome → billing → ParcelReturned
      | ParcelStillInTransit; ParcelReturned → signal `order_returned` to the order's payment
      process (nothing is left to cancel)
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from domain.contracts import (
    InterceptShipment,
    Outcome,
    ParcelReturned,
    RecordInterceptOutcome,
    ShipmentIntercepted,
    ShipmentInterceptFailed,
    ShipmentInterceptRequested,
)
from workflows.messages import ask_again


class StopsTheParcel:
    """Mixed into a Process (before it)."""

    async def intercept(self: Any, requested: ShipmentInterceptRequested, decide: Any, attempt: int = 1) -> Outcome:
        """Ask shipping to stop the parcel, and tell billing what shipping answered; billing's
        answer is returned. `attempt`: the request's, for the commands' ids (`ask_again`)."""
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
        return recorded
