"""Activity-side CPU of a refund, in this process: `python -m bench.decisions [--n 300] [--database URL]`.

Calls the seven activity calls of a happy-path refund directly — RequestRefund (a customer's,
with a signed token the guard verifies), ScreenRefund, SendRefundToGateway (two transactions
around one Stripe request), CompleteRefund, CreditInvoice, NotifyCustomer — N times on settleflow's own
adapters (SqlUnitOfWork, the Stripe adapter against the simulator as its own process, the
file mailbox), and prints this thread's CPU per refund and per step: the part of a refund's
worker CPU that is settleflow's own work, with no Temporal server or SDK in it
(`bench.refund_throughput` measures the whole flow, `bench.sandbox_replay` its workflow side).

It runs on a SQLite file (the baseline) and, with `--database URL`, on that database too, in
alternating rounds of one run, and prints the ratio: what the other database's round trips
cost each decision. A PostgreSQL database named there is dropped and created afresh. Orders
are prepared (placed, captured, paid, invoiced, shipped, delivered) before, not measured. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("SETTLEFLOW_DEV_ISSUER_DIR", tempfile.mkdtemp(prefix="settleflow-bench-issuer-"))

from activities.billing import BillingActivities  # noqa: E402
from activities.fraud import FraudActivities  # noqa: E402
from activities.invoicing import InvoicingActivities  # noqa: E402
from activities.notifications import NotificationsActivities  # noqa: E402
from activities.payments import PaymentsActivities  # noqa: E402
from adapters.db import upgrade  # noqa: E402
from adapters.identity import signed  # noqa: E402
from domain.billing.commands import (  # noqa: E402
    CompleteRefund,
    MarkOrderPaid,
    OrderLine,
    PlaceOrder,
    RecordDelivery,
    RecordShipment,
    RequestRefund,
)
from domain.contracts import GatewayRefundSettled, RefundApproved  # noqa: E402
from domain.fraud.commands import ScreenRefund  # noqa: E402
from domain.invoicing.commands import CreateInvoice, CreditInvoice  # noqa: E402
from domain.notifications.commands import NotifyCustomer  # noqa: E402
from domain.payments.commands import CapturePayment, SendRefundToGateway  # noqa: E402
from domain.shared.actor import Actor, Role  # noqa: E402
from domain.shared.money import Money  # noqa: E402

STEPS = ("RequestRefund", "ScreenRefund", "SendRefundToGateway", "CompleteRefund", "CreditInvoice", "NotifyCustomer")
WARMUP = 20
ROUNDS = 3  # alternating rounds per configuration; the median is printed
AMOUNT = Money.of("120.00", "EUR")
SYSTEM = Actor.system("bench")


class Owners:
    """The activities of the owners a refund asks, on one set of adapters."""

    def __init__(self, uow_factory: Callable[[], Any], gateway: Any, mailbox: Any) -> None:
        self.billing = BillingActivities(uow_factory)
        self.fraud = FraudActivities(uow_factory)
        self.payments = PaymentsActivities(uow_factory, gateway)
        self.invoicing = InvoicingActivities(uow_factory)
        self.notifications = NotificationsActivities(uow_factory, mailbox)


def command(command_type: type, command_id: str, **fields: Any) -> Any:
    fields.setdefault("actor", SYSTEM)
    return command_type(command_id=command_id, issued_at=datetime.now(UTC), **fields)


def prepare_order(owners: Owners, i: int) -> tuple[str, Actor, str]:
    order_id, customer = f"o-{i}", Actor(role=Role.CUSTOMER, id=f"c-{i}")
    owners.billing.place_order(command(PlaceOrder, f"place-{order_id}", order_id=order_id, customer_id=customer.id,
                                       lines=[OrderLine(description="goods", amount=AMOUNT)], placed_at=datetime.now(UTC)))
    owners.payments.capture_payment(command(CapturePayment, f"capture-{order_id}", order_id=order_id,
                                            customer_id=customer.id, amount=AMOUNT, card_token="tok_visa"))
    owners.billing.mark_order_paid(command(MarkOrderPaid, f"paid-{order_id}", order_id=order_id, amount=AMOUNT,
                                           payment_reference=f"capture-{order_id}"))
    owners.invoicing.create_invoice(command(CreateInvoice, f"invoice-{order_id}", order_id=order_id,
                                            customer_id=customer.id, total=AMOUNT, payment_reference=f"capture-{order_id}",
                                            lines=[OrderLine(description="goods", amount=AMOUNT)]))
    owners.billing.record_shipment(command(RecordShipment, f"ship-{order_id}", order_id=order_id, tracking="T-1",
                                           shipped_at=datetime.now(UTC)))
    owners.billing.record_delivery(command(RecordDelivery, f"deliver-{order_id}", order_id=order_id,
                                           delivered_at=datetime.now(UTC)))
    return order_id, customer, signed(customer, lifetime=timedelta(days=1))["token"]


def refund(owners: Owners, order_id: str, customer: Actor, token: str, cpu: dict[str, float]) -> None:
    """One happy-path refund's activity calls, with each step's thread CPU added to `cpu`."""
    flow = f"refund-r-{order_id}"
    clock = time.thread_time
    started = clock()
    decided = owners.billing.request_refund(command(
        RequestRefund, f"{flow}/request", actor=customer, credential=token, order_id=order_id,
        refund_id=f"r-{order_id}", amount=AMOUNT, reason="arrived damaged"))
    approved = decided.first(RefundApproved)
    assert approved is not None, decided.event_names
    marks = [clock()]
    owners.fraud.screen_refund(command(
        ScreenRefund, f"{flow}/screen", refund_id=approved.refund_id, order_id=order_id, customer_id=customer.id,
        amount=approved.amount, approved_at=approved.occurred_at, owed=approved.owed,
        requested_by=approved.requested_by))
    marks.append(clock())
    sent = owners.payments.send_refund_to_gateway(command(
        SendRefundToGateway, f"{flow}/send-to-gateway", order_id=order_id, refund_id=approved.refund_id,
        amount=approved.amount))
    settled = sent.first(GatewayRefundSettled)
    assert settled is not None, sent.event_names
    marks.append(clock())
    owners.billing.complete_refund(command(
        CompleteRefund, f"{flow}/complete", order_id=order_id, refund_id=approved.refund_id,
        gateway_reference=settled.gateway_reference))
    marks.append(clock())
    owners.invoicing.credit_invoice(command(
        CreditInvoice, f"{flow}/credit-invoice", order_id=order_id, refund_id=approved.refund_id,
        amount=approved.amount))
    marks.append(clock())
    owners.notifications.notify_customer(command(
        NotifyCustomer, f"{flow}/notify-customer", customer_id=customer.id, kind="refund_completed",
        subject=approved.refund_id, facts={"refund_id": approved.refund_id, "order_id": order_id,
                                           "amount": str(approved.amount)}))
    marks.append(clock())
    for step, (begin, end) in zip(STEPS, zip([started, *marks], marks)):
        cpu[step] += end - begin


def measure(owners: Owners, orders: list[tuple[str, Actor, str]]) -> dict[str, float]:
    """CPU milliseconds per refund, per step and in all."""
    cpu = dict.fromkeys(STEPS, 0.0)
    for order in orders:
        refund(owners, *order, cpu)
    per_step = {step: 1000 * seconds / len(orders) for step, seconds in cpu.items()}
    return {**per_step, "all": sum(per_step.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="refunds per round and configuration (default 300)")
    parser.add_argument("--database", default="", help="settleflow's database (default: a SQLite file in a "
                        "temporary directory; a PostgreSQL database is dropped and created afresh)")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be at least 1")

    from tests.gateway_process import gateway_simulator
    from worker import Dependencies

    base = Path(tempfile.mkdtemp(prefix="settleflow-bench-decisions-"))
    urls = {"SQLite": f"sqlite:///{base / 'settleflow.db'}"}
    if args.database:
        if args.database.startswith(("postgresql", "postgres:")):
            from bench.refund_throughput import fresh_postgres

            fresh_postgres(args.database)
        urls[args.database.split("://")[0].split("+")[0]] = args.database
    count = WARMUP + ROUNDS * args.n
    with gateway_simulator() as gateway_url:
        deps = {}
        for name, url in urls.items():
            upgrade(url)
            deps[name] = Dependencies.connect(url, gateway_url, base / f"mailbox-{name}")
        configurations = {name: Owners(d.uow_factory, d.gateway, d.mailbox) for name, d in deps.items()}
        started = time.monotonic()
        orders = {name: [prepare_order(owners, i) for i in range(count)] for name, owners in configurations.items()}
        print(f"prepared {count} delivered, paid orders per database in {time.monotonic() - started:.1f} s")
        figures: dict[str, list[dict[str, float]]] = {name: [] for name in configurations}
        for name, owners in configurations.items():
            measure(owners, orders[name][:WARMUP])
        for round_ in range(ROUNDS):
            for name, owners in configurations.items():
                batch = orders[name][WARMUP + round_ * args.n: WARMUP + (round_ + 1) * args.n]
                figures[name].append(measure(owners, batch))
        for d in deps.values():
            d.gateway.close()
            if d.engine is not None:
                d.engine.dispose()

    print(f"\nactivity-side CPU of one happy-path refund (seven transactions, one Stripe request, one message), "
          f"{args.n} refunds x {ROUNDS} rounds per database (median), this thread only")
    names = list(configurations)
    print(f"  {'step':22s}" + "".join(f"{name:>14s}" for name in names))
    for step in (*STEPS, "all"):
        print(f"  {step:22s}" + "".join(
            f"{statistics.median(f[step] for f in figures[name]):11.2f} ms" for name in names))
    if len(names) == 2:
        baseline, other = (statistics.median(f["all"] for f in figures[name]) for name in names)
        print(f"ratio {names[1]}/SQLite = {other / baseline:.2f}   ({other:.2f} / {baseline:.2f} ms of CPU per refund)")

if __name__ == "__main__":
    main()
