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
            (uow.orders if isinstance(aggregate, Order) else uow.invoices).add(aggregate)
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
