"""What billing has recorded of an order's parcel, for a payment process told that its order
was delivered or came back.

Those tellings are signals (`order_delivered`, `order_returned`), and a signal names no
sender: anyone who may signal a workflow could send one. So before the payment process stops
taking cancellations it asks billing, which recorded the delivery or the return itself, and
ends only on billing's word (README "Security").
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from domain.billing.order import Fulfilment


class RecordedFulfilment(BaseModel):
    model_config = ConfigDict(frozen=True)
    activity_name: ClassVar[str] = "billing.RecordedFulfilment"  # a read of billing's order

    order_id: str
    fulfilment: Fulfilment

    @property
    def ends_cancelling(self) -> bool:
        """Nothing is left to cancel: the goods were delivered (a refund is the way back now),
        or the parcel was stopped for a full refund and comes back."""
        return self.fulfilment in (Fulfilment.DELIVERED, Fulfilment.RETURNED)

    @property
    def returned(self) -> bool:
        return self.fulfilment is Fulfilment.RETURNED
