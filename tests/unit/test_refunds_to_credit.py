"""Every refund paid out is credited on the order's invoice. A refund's flow credits it right
after billing records the money gone back; one paid before refunds did so (or whose flow ended
between the two steps) is found by the daily reconciliation, which asks invoicing for the note.
Invoicing decides; a refund it refused once is support's, and is not asked about again."""

from __future__ import annotations

from activities.reconciliation import ReconciliationActivities
from domain.billing.commands import CancelRefund, CompleteRefund, RequestRefund
from domain.billing.order import Order
from domain.invoicing.commands import CreateInvoice, CreditInvoice
from domain.invoicing.invoice import Invoice
from domain.notifications.commands import NotifyTeam
from domain.notifications.notification import Notification
from domain.reconciliation.commands import RecordDiscrepancy, discrepancy_id
from domain.reconciliation.queries import ReconciliationScan, RefundToCredit
from domain.reconciliation.uncredited import refunds_to_credit
from tests.fakes import FakeDatabase, FakeUnitOfWork
from tests.unit.builders import SUPPORT, T0, command, days, delivered_order, eur

AFTER = T0 + days(5)


def refund(order: Order, refund_id: str, amount: str, paid: bool = True) -> None:
    order.request_refund(command(RequestRefund, actor=SUPPORT, issued_at=AFTER, order_id=order.id,
                                 refund_id=refund_id, amount=eur(amount), reason="arrived broken"))
    if paid:
        order.complete_refund(command(CompleteRefund, issued_at=AFTER, order_id=order.id, refund_id=refund_id,
                                      gateway_reference=f"re_{refund_id}"))


def invoice_of(order: Order, *credited: tuple[str, str]) -> Invoice:
    invoice = Invoice.create(command(CreateInvoice, order_id=order.id, customer_id=order.customer_id,
                                     lines=order.lines, total=order.total, payment_reference="ch_1"), None)
    for refund_id, amount in credited:
        invoice.credit(command(CreditInvoice, order_id=order.id, refund_id=refund_id, amount=eur(amount)))
    return invoice


def order_of(order_id: str, *amounts: str) -> Order:
    return delivered_order(*amounts).model_copy(update={"id": order_id})


# == which refunds ===================================================================================
def test_a_refund_paid_out_with_no_credit_note_is_to_be_credited_for_what_billing_paid():
    order = delivered_order("100.00")
    refund(order, "r-1", "30.00")

    assert refunds_to_credit(order, invoice_of(order), left_to_support=()) == [
        RefundToCredit(order_id=order.id, refund_id="r-1", amount=eur("30.00"))
    ]


def test_only_refunds_whose_money_went_back_are_credited():
    order = delivered_order("100.00")
    refund(order, "r-in-flight", "10.00", paid=False)
    refund(order, "r-cancelled", "10.00", paid=False)
    order.cancel_refund(command(CancelRefund, order_id=order.id, refund_id="r-cancelled", reason="review_rejected"))

    assert refunds_to_credit(order, invoice_of(order), left_to_support=()) == []


def test_a_refund_the_invoice_already_has_a_credit_note_for_is_not_credited_again():
    order = delivered_order("100.00")
    refund(order, "r-1", "30.00")
    refund(order, "r-2", "20.00")

    found = refunds_to_credit(order, invoice_of(order, ("r-1", "30.00")), left_to_support=())

    assert [item.refund_id for item in found] == ["r-2"]


def test_an_order_never_invoiced_still_lists_its_refunds_for_invoicing_to_say_why_not():
    order = delivered_order("100.00")
    refund(order, "r-1", "30.00")

    assert [item.refund_id for item in refunds_to_credit(order, None, left_to_support=())] == ["r-1"]


def test_a_refund_invoicing_refused_to_credit_is_left_to_support():
    order = delivered_order("100.00")
    refund(order, "r-1", "30.00")

    assert refunds_to_credit(order, None, left_to_support={"r-1"}) == []


# == reconciliation's read ===========================================================================
def stored(*aggregates) -> ReconciliationActivities:
    database = FakeDatabase()
    with FakeUnitOfWork(database) as uow:
        for aggregate in aggregates:
            repository = {Order: uow.orders, Invoice: uow.invoices, Notification: uow.notifications}[type(aggregate)]
            repository.add(aggregate)
        uow.commit()
    return ReconciliationActivities(lambda: FakeUnitOfWork(database), gateway=None)  # type: ignore[arg-type]


def test_reconciliation_finds_refunds_paid_out_without_a_credit_note_across_orders_and_skips_those_flagged():
    credited, uncredited = order_of("o-credited", "100.00"), order_of("o-uncredited", "100.00")
    never_invoiced, refused = order_of("o-never-invoiced", "100.00"), order_of("o-refused", "100.00")
    for order, refund_id in ((credited, "r-1"), (uncredited, "r-2"), (never_invoiced, "r-3"), (refused, "r-4")):
        refund(order, refund_id, "40.00")
    recon = stored(credited, uncredited, never_invoiced, refused,
                   invoice_of(credited, ("r-1", "40.00")), invoice_of(uncredited))
    recon.record_discrepancy(command(  # invoicing refused r-4 on an earlier pass: support was told
        RecordDiscrepancy, discrepancy_id=discrepancy_id("refund_not_credited", "r-4"), kind="refund_not_credited",
        order_id="o-refused", business_id="r-4", ours=eur("40.00"), detail="order o-refused has no invoice to credit",
    ))

    found = recon.find_refunds_to_credit(ReconciliationScan(as_of=AFTER + days(1)))

    assert sorted((item.order_id, item.refund_id, item.amount) for item in found) == [
        ("o-never-invoiced", "r-3", eur("40.00")), ("o-uncredited", "r-2", eur("40.00")),
    ]


def told_support_by_its_flow(order: Order, refund_id: str) -> Notification:
    """The message a refund's flow sends support when invoicing refuses its credit note."""
    told = command(NotifyTeam, team="support", kind="invoice_not_credited_support", subject=refund_id, facts={
        "refund_id": refund_id, "order_id": order.id, "amount": "40.00 EUR", "reason": "no invoice"})
    notification = Notification.new(told)
    notification.send(told)
    return notification


def test_a_refund_whose_flow_told_support_invoicing_refused_it_is_left_to_support_not_flagged_again():
    order = order_of("o-1", "100.00")
    refund(order, "r-told", "40.00")
    refund(order, "r-not-told", "40.00")
    recon = stored(order, told_support_by_its_flow(order, "r-told"))

    found = recon.find_refunds_to_credit(ReconciliationScan(as_of=AFTER + days(1)))

    assert [item.refund_id for item in found] == ["r-not-told"]


def test_a_pass_asks_about_at_most_its_share_of_a_long_backlog_and_the_next_pass_about_the_rest(monkeypatch):
    monkeypatch.setattr("activities.reconciliation.CREDITS_PER_PASS", 2)
    monkeypatch.setattr("activities.reconciliation.ORDERS_PER_PAGE", 1)
    orders = [order_of(f"o-{n}", "100.00") for n in range(3)]
    for n, order in enumerate(orders):
        refund(order, f"r-{n}", "40.00")
    recon = stored(*orders, *(invoice_of(order) for order in orders))

    first = recon.find_refunds_to_credit(ReconciliationScan(as_of=AFTER + days(1)))
    with FakeUnitOfWork(recon_database(recon)) as uow:  # invoicing credits what the pass asked for
        for item in first:
            uow.invoices.for_order(item.order_id).credit(command(
                CreditInvoice, order_id=item.order_id, refund_id=item.refund_id, amount=item.amount))
        uow.commit()
    second = recon.find_refunds_to_credit(ReconciliationScan(as_of=AFTER + days(2)))

    assert ([item.refund_id for item in first], [item.refund_id for item in second]) == (["r-0", "r-1"], ["r-2"])


def test_refunds_support_holds_ahead_of_the_backlog_never_stop_a_pass_reaching_the_rest(monkeypatch):
    monkeypatch.setattr("activities.reconciliation.CREDITS_PER_PASS", 1)
    monkeypatch.setattr("activities.reconciliation.ORDERS_PER_PAGE", 1)
    held = [order_of(f"o-{n}", "100.00") for n in range(3)]  # never invoiced: their flows told support
    for n, order in enumerate(held):
        refund(order, f"r-{n}", "40.00")
    waiting = order_of("o-9", "100.00")
    refund(waiting, "r-9", "40.00")
    recon = stored(*held, waiting, invoice_of(waiting),
                   *(told_support_by_its_flow(order, f"r-{n}") for n, order in enumerate(held)))

    found = recon.find_refunds_to_credit(ReconciliationScan(as_of=AFTER + days(1)))

    assert [(item.order_id, item.refund_id) for item in found] == [("o-9", "r-9")]


def recon_database(recon: ReconciliationActivities) -> FakeDatabase:
    return recon.uow().database
