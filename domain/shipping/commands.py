"""Commands shipping decides."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from domain.shared.actor import Role
from domain.shared.messages import Command, DerivedId, Id


class ShippingCommand(Command):
    owner: ClassVar[str] = "shipping"
    order_id: Id


class ShipOrder(ShippingCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.WAREHOUSE, Role.SUPPORT})
    tracking: Id
    shipped_at: datetime | None = None  # None: shipped when the command was issued


class ConfirmDelivery(ShippingCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.WAREHOUSE, Role.SUPPORT})
    delivered_at: datetime | None = None  # None: delivered when the command was issued


class InterceptShipment(ShippingCommand):
    issued_by: ClassVar[frozenset[Role]] = frozenset({Role.SYSTEM})
    refund_id: DerivedId
