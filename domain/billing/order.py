"""Order: billing's record of an order, and the owner of refund decisions."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar

from domain.billing.commands import (
    CancelOrder,
    CancelRefund,
    ClearOrderForShipping,
    CompleteRefund,
    FailRefund,
    MarkOrderPaid,
    OrderLine,
    PlaceOrder,
    RecordDelivery,
    RecordInterceptOutcome,
    RecordShipment,
    RequestRefund,
)
from domain.billing.events import (
    CancelledOrderDelivered,
    DeliveryHeld,
    DeliveryRecorded,
    OrderCancelled,
    OrderClearedForShipping,
    OrderPaid,
    OrderPlaced,
    ParcelReturned,
    ParcelStillInTransit,
    RefundApproved,
    RefundCancelled,
    RefundCompleted,
    RefundFailed,
    RefundOwed,
    RefundRejected,
    ReturnedParcelDelivered,
    ShipmentInterceptRequested,
    ShipmentRecorded,
    ShippingRefused,
)
from domain.billing.parcel_stop import ParcelStop, StopAskedBecause
from domain.billing.refund import Refund, RefundStatus
from domain.shared.actor import Role
from domain.shared.aggregate import AggregateRoot
from domain.shared.errors import InvalidCommand, NotAuthorized
from domain.shared.money import Money, total


class Fulfilment(StrEnum):
    PENDING = "pending"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    RETURNED = "returned"  # intercepted on a refund's request: the parcel comes back


class Order(AggregateRoot):
    REFUND_WINDOW: ClassVar[timedelta] = timedelta(days=30)
    # Payments' facts that confirm a refund's money did not go out. Only these free the amount.
    NOT_PAID_CONFIRMATIONS: ClassVar[frozenset[str]] = frozenset(
        {"GatewayRefundDeclined", "GatewayRefundNotFound", "GatewayRefundNotSent"}
    )

    customer_id: str
    currency: str
    lines: list[OrderLine]
    total: Money
    paid: Money
    payment_reference: str = ""
    fulfilment: Fulfilment = Fulfilment.PENDING
    tracking: str = ""
    placed_at: datetime | None = None  # None: placed before billing kept the date
    shipped_at: datetime | None = None
    delivered_at: datetime | None = None
    held_delivery_at: datetime | None = None  # a delivery that arrived before its shipment
    returned_at: datetime | None = None
    cancelled: bool = False
    cancellation_reason: str = ""
    cancelled_at: datetime | None = None  # None: not cancelled, or cancelled before billing kept the date
    # Since when money owed back (`owes_back`) has had no refund on its way for it (None: nothing
    # is owed, or all of it is on its way). Reconciliation asks about money owed that long.
    owed_since: datetime | None = None
    # A stop of the parcel asked for and not answered yet (None: none is waiting for an answer).
    parcel_stop: ParcelStop | None = None
    refunds: dict[str, Refund] = {}

    # -- placing and paying ----------------------------------------------------
    @classmethod
    def place(cls, command: PlaceOrder) -> Order:
        if command.actor.role is Role.CUSTOMER and command.actor.id != command.customer_id:
            # A customer orders in their own name: support (or settleflow) may for anyone.
            raise NotAuthorized("not_your_order", f"{command.actor} may not place an order for {command.customer_id}")
        placed_at = command.placed_at or command.issued_at
        if placed_at > command.issued_at:
            raise InvalidCommand("placed_in_future", "an order cannot be recorded as placed before it is")
        currency = command.lines[0].amount.currency
        order_total = total([line.amount for line in command.lines], currency)
        if not order_total.is_positive:
            raise InvalidCommand("empty_order", "an order must total more than zero")
        if bad := [line.description for line in command.lines if not line.amount.is_positive]:
            # Each line, not only the total: a negative line would be a discount nobody decided.
            raise InvalidCommand("line_not_positive", f"every order line must be greater than zero: {bad[0]!r} is not")
        order = cls(
            id=command.order_id,
            customer_id=command.customer_id,
            currency=currency,
            lines=command.lines,
            total=order_total,
            paid=Money.zero(currency),
            placed_at=placed_at,
        )
        order.record(command, OrderPlaced(order_id=order.id, customer_id=order.customer_id, total=order_total))
        return order

    def mark_paid(self, command: MarkOrderPaid) -> None:
        if self.cancelled:
            raise InvalidCommand("order_cancelled", f"order {self.id} was cancelled")
        if self.paid.is_positive:
            raise InvalidCommand("already_paid", f"order {self.id} is already paid")
        if command.amount != self.total:
            raise InvalidCommand(
                "amount_mismatch", f"payment of {command.amount} does not match the order total {self.total}"
            )
        self.paid = command.amount
        self.payment_reference = command.payment_reference
        self.record(command, OrderPaid(order_id=self.id, amount=command.amount))

    # -- cancelling -----------------------------------------------------------------
    def cancel(self, command: CancelOrder) -> None:
        """Customers may cancel their own order until it ships, support until it is
        delivered, nobody after delivery (that is a refund). "Until it ships" is judged at
        `issued_at`, when the cancellation was asked, not by what billing recorded since."""
        who = command.actor
        if who.role is Role.CUSTOMER and who.id != self.customer_id:
            raise NotAuthorized("not_your_order", f"order {self.id} belongs to another customer")
        if self.cancelled:
            raise InvalidCommand("already_cancelled", f"order {self.id} is already cancelled")
        if self.fulfilment is Fulfilment.DELIVERED or self.held_delivery_at is not None:
            # A delivery billing holds until its shipment is recorded happened all the same.
            raise InvalidCommand("already_delivered", f"order {self.id} was delivered; ask for a refund instead")
        if self._left_by(command.issued_at) and who.role is Role.CUSTOMER:
            raise InvalidCommand("already_shipped", f"order {self.id} has shipped; only support can cancel it now")
        self.cancelled, self.cancellation_reason, self.cancelled_at = True, command.reason, command.issued_at
        self.record(
            command,
            OrderCancelled(order_id=self.id, customer_id=self.customer_id, reason=command.reason, cancelled_by=str(who)),
        )
        if self.refundable.is_positive:
            self.record(command, RefundOwed(order_id=self.id, customer_id=self.customer_id, amount=self.refundable))
        self._keep_owed_since(command.issued_at)

    def _left_by(self, moment: datetime) -> bool:
        """Whether the parcel had left by `moment`: a customer's cancellation asked before it left
        stands, however late billing gets to it (its step retried while the shipment was recorded);
        the parcel then is stopped, for the refund paying the order back."""
        if self.fulfilment not in (Fulfilment.SHIPPED, Fulfilment.RETURNED):
            return False
        return self.shipped_at is None or self.shipped_at <= moment

    # -- facts from shipping ---------------------------------------------------
    def check_shipping_date(self, shipped_at: datetime) -> None:
        """A fact dated before the fact it depends on is refused: no parcel leaves
        before its order was placed."""
        if self.placed_at is not None and shipped_at < self.placed_at:
            raise InvalidCommand(
                "shipped_before_placed",
                f"order {self.id} was placed at {self.placed_at.isoformat()}; "
                f"it cannot have shipped earlier, at {shipped_at.isoformat()}",
            )

    def clear_for_shipping(self, command: ClearOrderForShipping) -> None:
        """Only a paid order that is not cancelled may ship. A "no" is a fact too. A date
        before the order was placed is refused outright, before shipping records anything.
        A parcel that left before its order was cancelled (recorded late, `ship --at`) did
        leave: it is cleared, so that its shipment is recorded and the parcel stopped."""
        if command.shipped_at is not None:
            self.check_shipping_date(command.shipped_at)
        if self.cancelled and not self._left_before_cancellation(command.shipped_at):
            refusal = "order_cancelled", f"order {self.id} was cancelled"
        elif not self.paid.is_positive:
            refusal = "not_paid", f"order {self.id} is not paid"
        else:
            self.record(command, OrderClearedForShipping(order_id=self.id))
            return
        self.record(command, ShippingRefused(order_id=self.id, reason_code=refusal[0], detail=refusal[1]))

    def _left_before_cancellation(self, shipped_at: datetime | None) -> bool:
        return shipped_at is not None and self.cancelled_at is not None and shipped_at < self.cancelled_at

    def record_shipment(self, command: RecordShipment) -> None:
        """The parcel left. If the order was cancelled meanwhile (a cancellation racing the
        shipment, or a departure recorded late), the money is going back: the parcel is to be
        stopped (`ShipmentInterceptRequested`, for the refund paying the order back)."""
        if self.fulfilment is not Fulfilment.PENDING:
            raise InvalidCommand("already_shipped", f"order {self.id} is already {self.fulfilment.value}")
        self.check_shipping_date(command.shipped_at)
        self.fulfilment = Fulfilment.SHIPPED
        self.tracking, self.shipped_at = command.tracking, command.shipped_at
        self.record(command, ShipmentRecorded(order_id=self.id, tracking=command.tracking))
        if self.held_delivery_at is not None:
            # The delivery came first; now that the parcel is known to have left, apply it.
            self._deliver(command, self.held_delivery_at)
            self.held_delivery_at = None
        elif self.cancelled and (paying_back := self._refund_paying_back()) is not None:
            self._ask_to_stop_the_parcel(command, paying_back.refund_id, StopAskedBecause.CANCELLATION)

    def _ask_to_stop_the_parcel(
        self, command: RecordShipment | RequestRefund, refund_id: str, because: StopAskedBecause
    ) -> None:
        """Kept until shipping's answer is recorded: a stop nobody carried to shipping is not forgotten."""
        self.parcel_stop = ParcelStop(
            refund_id=refund_id, tracking=self.tracking, asked_at=command.issued_at, because=because
        )
        self.record(command, ShipmentInterceptRequested(order_id=self.id, refund_id=refund_id, tracking=self.tracking))

    def _refund_paying_back(self) -> Refund | None:
        """The newest refund taking (or that took) the order's money back; else the newest one."""
        newest_first = sorted(self.refunds.values(), key=lambda r: r.requested_at, reverse=True)
        paying = [r for r in newest_first if r.in_flight or r.paid_out]
        return (paying or newest_first or [None])[0]

    def record_delivery(self, command: RecordDelivery) -> None:
        """The parcel reached the customer. One stopped for a refund (`RETURNED`) can still
        arrive (a late scan, a stop that did not take): the delivery is a fact and wins — the
        goods are the customer's, so nothing is owed back for them any more (a cancelled order
        still owes) and the refund window runs from the delivery —, and support is told
        (`ReturnedParcelDelivered`), as the customer has the goods and the refund."""
        if self.fulfilment is Fulfilment.PENDING and self.held_delivery_at is None:
            # Facts can arrive out of order: keep the delivery until its shipment is recorded.
            self.held_delivery_at = command.delivered_at
            self.record(command, DeliveryHeld(order_id=self.id, delivered_at=command.delivered_at))
            return
        if self.fulfilment not in (Fulfilment.SHIPPED, Fulfilment.RETURNED):
            raise InvalidCommand("not_in_transit", f"order {self.id} is {self.fulfilment.value}, not shipped")
        if self.shipped_at is not None and command.delivered_at < self.shipped_at:
            raise InvalidCommand(
                "delivered_before_shipped",
                f"order {self.id} shipped at {self.shipped_at.isoformat()}; "
                f"it cannot be delivered earlier, at {command.delivered_at.isoformat()}",
            )
        self._deliver(command, command.delivered_at)

    def _deliver(self, command: RecordDelivery | RecordShipment, delivered_at: datetime) -> None:
        returned_at = self.returned_at if self.fulfilment is Fulfilment.RETURNED else None
        self.fulfilment = Fulfilment.DELIVERED
        self.delivered_at = delivered_at
        self.parcel_stop = None  # nothing is left to stop
        self.record(command, DeliveryRecorded(order_id=self.id, delivered_at=delivered_at))
        # Facts, not refusals: the parcel did arrive. Whether to ask for it back is support's.
        if self.cancelled:
            self.record(
                command, CancelledOrderDelivered(order_id=self.id, customer_id=self.customer_id, delivered_at=delivered_at)
            )
        elif returned_at is not None:
            self._tell_of_a_stopped_parcel_delivered(command, returned_at)
        self._keep_owed_since(command.issued_at)

    def _tell_of_a_stopped_parcel_delivered(
        self, command: RecordDelivery | RecordShipment | RecordInterceptOutcome, returned_at: datetime
    ) -> None:
        """A parcel stopped for a refund of all of its money reached the customer all the same,
        whichever of the two facts billing heard first. Whether to ask for the goods back is support's."""
        assert self.delivered_at is not None
        self.record(
            command,
            ReturnedParcelDelivered(
                order_id=self.id, customer_id=self.customer_id, delivered_at=self.delivered_at, returned_at=returned_at
            ),
        )

    def record_intercept_outcome(self, command: RecordInterceptOutcome) -> None:
        """Shipping's answer to an intercept. Stopped: the parcel comes back, and what is still
        refundable is owed back (`owes_back`: no window closes on it). Not stopped: nothing
        changes; the delivery, when it is recorded, starts the window as usual."""
        if command.refund_id not in self.refunds:
            raise InvalidCommand("unknown_refund", f"order {self.id} has no refund {command.refund_id}")
        if not command.intercepted or self.fulfilment is Fulfilment.DELIVERED:
            # Not stopped — or stopped too late: a delivery recorded since (a scan that came in
            # between) says it arrived, and the refund goes on all the same.
            self.parcel_stop = None  # answered
            reason = command.reason if not command.intercepted else "the parcel was delivered before the stop"
            self.record(command, ParcelStillInTransit(order_id=self.id, refund_id=command.refund_id, reason=reason))
            if command.intercepted and not self.cancelled:
                # The customer has the goods and the refund: support is told, as when the delivery
                # is recorded after the stop (a cancelled order's delivery told support already).
                self._tell_of_a_stopped_parcel_delivered(command, returned_at=command.issued_at)
            return
        if self.fulfilment is not Fulfilment.SHIPPED:
            raise InvalidCommand("not_in_transit", f"order {self.id} is {self.fulfilment.value}, not shipped")
        owed_already = self.owes_back  # a cancelled order's money was owed, and told, before
        self.fulfilment, self.returned_at, self.parcel_stop = Fulfilment.RETURNED, command.issued_at, None
        self.record(
            command, ParcelReturned(order_id=self.id, refund_id=command.refund_id, returned_at=command.issued_at)
        )
        if not owed_already and self.owed.is_positive:
            # The goods are back, and what no refund is taking (another refund of it said no
            # meanwhile) is owed now: told to support, as a cancellation's is.
            self.record(command, RefundOwed(order_id=self.id, customer_id=self.customer_id, amount=self.owed))
        self._keep_owed_since(command.issued_at)

    # -- refunds -----------------------------------------------------------------
    @property
    def refunded(self) -> Money:
        return total([r.amount for r in self.refunds.values() if r.paid_out and r.amount], self.currency)

    @property
    def refunds_paid_out(self) -> list[Refund]:
        """The refunds whose money went back to the customer (each is credited on the invoice)."""
        return [r for r in self.refunds.values() if r.paid_out]

    @property
    def reserved(self) -> Money:
        """Approved refunds still on their way to the customer."""
        return total([r.amount for r in self.refunds.values() if r.in_flight and r.amount], self.currency)

    @property
    def reserved_since(self) -> datetime | None:
        """When the oldest refund still holding money reserved was asked for."""
        return min((r.requested_at for r in self.refunds.values() if r.in_flight), default=None)

    @property
    def refundable(self) -> Money:
        return self.paid - self.refunded - self.reserved

    @property
    def owes_back(self) -> bool:
        """Whether what is still refundable is owed: settleflow cancelled a paid order, or the
        parcel came back on a refund's intercept (the goods are the merchant's again, and that
        refund was for all of its money)."""
        return self.cancelled or self.fulfilment is Fulfilment.RETURNED

    @property
    def owed(self) -> Money:
        """What settleflow owes back (`owes_back`) with no refund on its way for it yet
        (support sees it; a refund request pays it)."""
        return self.refundable if self.owes_back else Money.zero(self.currency)

    def request_refund(self, command: RequestRefund) -> None:
        """Approve or reject a refund. The time that counts is when it was asked
        (`issued_at`), so a slow queue never changes the answer."""
        if command.actor.role is Role.CUSTOMER and command.actor.id != self.customer_id:
            raise NotAuthorized("not_your_order", f"order {self.id} belongs to another customer")
        if command.actor.role is Role.SYSTEM and not self.cancelled:
            # Settleflow asks for a refund on its own only to pay back what a cancellation owes.
            raise NotAuthorized("not_owed", f"order {self.id} is not cancelled: settleflow owes nothing back on its own")
        if command.refund_id in self.refunds:
            raise InvalidCommand("duplicate_refund", f"refund {command.refund_id} was already requested")
        if command.amount is not None:
            if command.amount.currency != self.currency:
                raise InvalidCommand(
                    "currency_mismatch", f"order {self.id} is in {self.currency}, not {command.amount.currency}"
                )
            if not command.amount.is_positive:
                raise InvalidCommand("amount_not_positive", "a refund amount must be greater than zero")

        rejection = self._refund_rejection(command)
        if rejection:
            code, detail = rejection
            self.refunds[command.refund_id] = Refund(
                refund_id=command.refund_id,
                requested_by=str(command.actor),
                requested_at=command.issued_at,
                reason=command.reason,
                status=RefundStatus.REJECTED,
                amount=command.amount,
                outcome=code,
            )
            self.record(
                command,
                RefundRejected(
                    order_id=self.id,
                    refund_id=command.refund_id,
                    customer_id=self.customer_id,
                    reason_code=code,
                    detail=detail,
                ),
            )
            return

        amount = command.amount or self.refundable
        self.refunds[command.refund_id] = Refund(
            refund_id=command.refund_id,
            requested_by=str(command.actor),
            requested_at=command.issued_at,
            reason=command.reason,
            status=RefundStatus.APPROVED,
            amount=amount,
        )
        self.record(
            command,
            RefundApproved(
                order_id=self.id,
                refund_id=command.refund_id,
                customer_id=self.customer_id,
                amount=amount,
                owed=self.owes_back,
                requested_by=command.actor.id,
            ),
        )
        self._keep_owed_since(command.issued_at)
        if self.fulfilment is Fulfilment.SHIPPED and not self.refundable.is_positive:
            # Still on the road and all of its money is going back: try to stop the
            # parcel rather than pay for a return. A partial refund leaves it moving.
            self._ask_to_stop_the_parcel(command, command.refund_id, StopAskedBecause.REFUND)

    def _refund_rejection(self, command: RequestRefund) -> tuple[str, str] | None:
        if self.owes_back:
            # Owed back (cancelled, or the parcel came back): no window closes on it.
            return self._amount_rejection(command)
        # A delivery billing holds until its shipment is recorded happened all the same (as for
        # `cancel`): the order is delivered, and the window runs from it.
        delivered_at = self.delivered_at or self.held_delivery_at
        if self.fulfilment is Fulfilment.PENDING and delivered_at is None:
            return "not_shipped", "only shipped or delivered orders can be refunded"
        # The window opens when the parcel reached the customer (a returned one owes back, above).
        if delivered_at is not None and command.issued_at - delivered_at > self.REFUND_WINDOW:
            return "refund_window_closed", f"refunds close {self.REFUND_WINDOW.days} days after delivery"
        return self._amount_rejection(command)

    def _amount_rejection(self, command: RequestRefund) -> tuple[str, str] | None:
        if not self.refundable.is_positive:
            return "nothing_refundable", f"nothing of order {self.id} is left to refund"
        if command.amount is not None and command.amount > self.refundable:
            return "exceeds_refundable", f"{command.amount} is more than the {self.refundable} still refundable"
        return None

    def cancel_refund(self, command: CancelRefund) -> None:
        refund = self._in_flight(command.refund_id)
        self._settle(refund, RefundStatus.CANCELLED, command.reason)
        self.record(command, RefundCancelled(**self._refund_facts(refund), reason=command.reason))
        self._still_owed(command)

    def complete_refund(self, command: CompleteRefund) -> None:
        refund = self._in_flight(command.refund_id)
        self._settle(refund, RefundStatus.COMPLETED, command.gateway_reference)
        self.record(command, RefundCompleted(**self._refund_facts(refund)))

    def fail_refund(self, command: FailRefund) -> None:
        """The money did not go out: release the reservation so it can be asked for again.
        Only on payments' confirmation; a guess ("no answer") keeps the amount reserved."""
        refund = self._in_flight(command.refund_id)
        if command.confirmed_by not in self.NOT_PAID_CONFIRMATIONS or not command.evidence:
            raise InvalidCommand(
                "not_confirmed",
                f"refund {command.refund_id} may only fail on payments' confirmation that nothing was paid "
                f"({', '.join(sorted(self.NOT_PAID_CONFIRMATIONS))}), not on {command.confirmed_by or 'a guess'}",
            )
        self._settle(refund, RefundStatus.FAILED, command.reason)
        self.record(command, RefundFailed(**self._refund_facts(refund), reason=command.reason))
        self._still_owed(command)

    def _still_owed(self, command: CancelRefund | FailRefund) -> None:
        """Money owed back (a cancelled order's, a returned parcel's) that a refund did not pay
        back is owed again."""
        if self.owed.is_positive:
            self.record(command, RefundOwed(order_id=self.id, customer_id=self.customer_id, amount=self.owed))
        self._keep_owed_since(command.issued_at)

    def _keep_owed_since(self, now: datetime) -> None:
        """Owed money with no refund on its way is owed since the first moment it had none; a
        refund that takes all of it ends that (a review's "no" or a declined refund starts it
        again). Nobody may forget it: reconciliation flags what stays owed (`money_owed`)."""
        if not self.owed.is_positive:
            self.owed_since = None
        elif self.owed_since is None:
            self.owed_since = now

    def _in_flight(self, refund_id: str) -> Refund:
        refund = self.refunds.get(refund_id)
        if refund is None:
            raise InvalidCommand("unknown_refund", f"order {self.id} has no refund {refund_id}")
        if not refund.in_flight:
            raise InvalidCommand("refund_not_in_flight", f"refund {refund_id} is already {refund.status.value}")
        return refund

    def _settle(self, refund: Refund, status: RefundStatus, outcome: str) -> None:
        self.refunds[refund.refund_id] = refund.model_copy(update={"status": status, "outcome": outcome})
        stop = self.parcel_stop
        if stop is not None and stop.because is StopAskedBecause.REFUND and stop.refund_id == refund.refund_id:
            # A refund's stop goes with it: one that ended before the stop was carried out (a
            # review's "no", an expiry) takes no money back, so its parcel is not to be stopped —
            # unless the order was cancelled meanwhile: its money is owed back all the same, so
            # its parcel still is to be stopped, now for the cancellation (flagged if nobody does).
            self.parcel_stop = (
                stop.model_copy(update={"because": StopAskedBecause.CANCELLATION}) if self.cancelled else None
            )

    def _refund_facts(self, refund: Refund) -> dict:
        return {
            "order_id": self.id,
            "refund_id": refund.refund_id,
            "customer_id": self.customer_id,
            "amount": refund.amount,
        }
