"""Read-side views for people: billing's view of an order (for `starter.py order`).

Read straight from the owners' tables; nothing here decides anything.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import inspect, make_url
from sqlalchemy.exc import OperationalError

from adapters import db
from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types


class RefundLine(BaseModel):
    refund_id: str
    status: str
    amount: str
    reason: str
    requested_by: str
    outcome: str


class OrderView(BaseModel):
    order_id: str
    customer_id: str
    currency: str
    total: str
    paid: str
    refunded: str
    reserved: str
    refundable: str
    fulfilment: str
    cancelled: bool = False
    refunds: list[RefundLine]
    captures: list[dict[str, str]] = []
    invoice_number: str = ""

    def describe(self) -> str:
        lines = [
            f"order {self.order_id} (customer {self.customer_id}), {self.fulfilment}"
            + (", cancelled" if self.cancelled else ""),
            f"  total {self.total}  paid {self.paid}  refunded {self.refunded}  "
            f"in flight {self.reserved}  refundable {self.refundable}",
        ]
        if self.invoice_number:
            lines.append(f"  invoice {self.invoice_number}")
        for c in self.captures:
            lines.append(f"  payment attempt {c['attempt_id']}: {c['status']} {c['detail']}".rstrip())
        for r in self.refunds:
            lines.append(f"  refund {r.refund_id}: {r.status} {r.amount} — {r.reason} ({r.requested_by}) {r.outcome}".rstrip())
        return "\n".join(lines)


class DatabaseUnavailable(Exception):
    """The view's database is not there: no SQLite file, or a server that does not answer."""


def order_view(database_url: str, order_id: str) -> OrderView | None:
    """Billing's view of an order, or None when there is no such order. Raises
    DatabaseUnavailable when there is no database to read (and never creates one)."""
    normalised = db.normalise_url(database_url)
    url = make_url(normalised)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(url.database).is_file():  # opening it would create an empty file
            raise DatabaseUnavailable(f"no database at {url.database} (run `starter.py db upgrade` first)")
    engine = db.make_engine(normalised)
    try:
        if not inspect(engine).has_table("orders"):
            return None  # nothing was ever migrated here, so no order exists
        with SqlUnitOfWork(engine, default_aggregate_types()) as uow:
            order = uow.orders.find(order_id)
            if order is None:
                return None
            payment = uow.payments.find(order_id)
            invoice = uow.invoices.for_order(order_id)
    except OperationalError as trouble:
        raise DatabaseUnavailable(f"cannot read the database: {str(trouble.orig).strip().splitlines()[0]}") from None
    finally:
        engine.dispose()
    money = lambda m: str(m) if m is not None else "—"  # noqa: E731
    return OrderView(
        order_id=order.id,
        customer_id=order.customer_id,
        currency=order.currency,
        total=money(order.total),
        paid=money(order.paid),
        refunded=money(order.refunded),
        reserved=money(order.reserved),
        refundable=money(order.refundable),
        fulfilment=order.fulfilment.value,
        cancelled=order.cancelled,
        invoice_number=invoice.id if invoice else "",
        refunds=[
            RefundLine(
                refund_id=r.refund_id,
                status=r.status.value,
                amount=money(r.amount),
                reason=r.reason,
                requested_by=r.requested_by,
                outcome=r.outcome,
            )
            for r in order.refunds.values()
        ],
        captures=[
            {"attempt_id": a.attempt_id, "status": a.status.value, "detail": a.gateway_reference or a.decline_code}
            for a in (payment.attempts if payment else [])
        ],
    )
