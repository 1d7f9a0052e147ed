"""PaymentWorkflow — an order is placed and its money captured.

Read top to bottom:
  PlaceOrder → billing → OrderPlaced
  CapturePayment → payments → PaymentCaptured | PaymentDeclined
  PaymentCaptured → MarkOrderPaid → billing → OrderPaid, NotifyCustomer. Done.
  PaymentDeclined → NotifyCustomer. Done (failed-payment recovery comes later).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from domain.contracts import (
        Actor,
        CapturePayment,
        MarkOrderPaid,
        Money,
        NotifyCustomer,
        OrderLine,
        PaymentCaptured,
        PaymentDeclined,
        PlaceOrder,
    )
    from workflows.process import REFUSALS, Process, Step, TrailView, retry_until_done

# -- Process concerns, all in one place ------------------------------------------
DECIDE = Step(start_to_close=timedelta(seconds=30), retry=retry_until_done())
NOTIFY = Step(start_to_close=timedelta(seconds=30), retry=retry_until_done())
CAPTURE = Step(
    # Transient gateway trouble is retried with the same attempt id (the idempotency
    # key), so a retry can never capture twice. A decline is an answer, not an error.
    start_to_close=timedelta(seconds=60),
    schedule_to_close=timedelta(hours=24),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=5),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(hours=1),
        non_retryable_error_types=REFUSALS,
    ),
)


class OrderRequest(BaseModel):
    order_id: str
    customer_id: str
    amount: Money
    card_token: str
    placed_by: Actor


class PaymentStatus(TrailView):
    order_id: str
    amount: Money
    decline_code: str = ""


@workflow.defn
class PaymentWorkflow(Process):
    flow_name = "payment"

    def __init__(self) -> None:
        super().__init__()
        self.order: OrderRequest | None = None
        self.decline_code = ""

    @workflow.run
    async def run(self, order: OrderRequest) -> PaymentStatus:
        self.order = order
        self.set_status("capturing")
        await self.send(
            self.command(
                PlaceOrder,
                "place",
                actor=order.placed_by,
                order_id=order.order_id,
                customer_id=order.customer_id,
                lines=[OrderLine(description=f"Order {order.order_id}", amount=order.amount)],
            ),
            DECIDE,
        )
        captured = await self.send(
            self.command(
                CapturePayment,
                "capture",
                order_id=order.order_id,
                customer_id=order.customer_id,
                amount=order.amount,
                card_token=order.card_token,
            ),
            CAPTURE,
        )
        if declined := captured.first(PaymentDeclined):
            self.decline_code = declined.decline_code
            await self.notify("payment_declined", reason=declined.decline_code)
            return await self.end("declined")

        payment = captured.first(PaymentCaptured)
        assert payment is not None, "payments answers a capture with a capture or a decline"
        await self.send(
            self.command(
                MarkOrderPaid,
                "mark-paid",
                order_id=order.order_id,
                amount=payment.amount,
                payment_reference=payment.gateway_reference,
            ),
            DECIDE,
        )
        await self.notify("payment_received", amount=str(payment.amount))
        return await self.end("paid")

    async def notify(self, kind: str, **facts: str) -> None:
        assert self.order is not None
        await self.send(
            self.command(
                NotifyCustomer,
                f"notify-{kind}",
                customer_id=self.order.customer_id,
                kind=kind,
                subject=self.order.order_id,
                facts={"order_id": self.order.order_id, **facts},
            ),
            NOTIFY,
        )

    async def end(self, status: str) -> PaymentStatus:
        self.set_status(status)
        await self.finish()
        return self.current()

    @workflow.query(name="status")
    def status_view(self) -> PaymentStatus:
        return self.current()

    def current(self) -> PaymentStatus:
        assert self.order is not None
        return PaymentStatus(
            status=self.status,
            trail=self.trail,
            order_id=self.order.order_id,
            amount=self.order.amount,
            decline_code=self.decline_code,
        )
