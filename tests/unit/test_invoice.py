"""Invoicing: one invoice per order, however often it is asked for."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from domain.billing.commands import OrderLine
from domain.invoicing.commands import CreateInvoice, CreditInvoice
from domain.invoicing.events import InvoiceCreated, InvoiceCredited
from domain.invoicing.invoice import Invoice, credit_note_number, invoice_number
from domain.shared.errors import InvalidCommand, NotFound
from domain.shared.money import Money
from tests.unit.builders import T0, command, days, eur, money


def create_cmd(*amounts: str, total: Money | None = None, order_id: str = "o-1", issued_at=T0) -> CreateInvoice:
    amounts = amounts or ("60.00", "40.00")
    lines = [OrderLine(description=f"item {i}", amount=eur(a)) for i, a in enumerate(amounts, 1)]
    return command(
        CreateInvoice,
        issued_at=issued_at,
        order_id=order_id,
        customer_id="c-1",
        lines=lines,
        total=total if total is not None else sum((line.amount for line in lines[1:]), start=lines[0].amount),
        payment_reference="ch_1",
    )


def test_creating_an_invoice_records_it():
    cmd = create_cmd("60.00", "40.00")
    invoice = Invoice.create(cmd, None)
    [created] = invoice.pending_events
    assert isinstance(created, InvoiceCreated)
    assert created.invoice_number == invoice.id
    assert created.order_id == "o-1" and created.customer_id == "c-1" and created.total == eur("100")
    assert invoice.lines == cmd.lines and invoice.payment_reference == "ch_1" and invoice.issued_at == T0


def test_an_order_that_already_has_an_invoice_gets_the_same_one_back_unchanged():
    existing = Invoice.create(create_cmd("60.00", "40.00"), None)
    existing.clear_events()
    before = existing.model_dump()
    again = Invoice.create(create_cmd("99.00", total=eur("99.00"), issued_at=T0 + days(1)), existing)
    assert again is existing
    assert again.pending_events == []
    assert again.model_dump() == before


def test_the_existing_invoice_is_returned_even_if_the_new_request_does_not_add_up():
    existing = Invoice.create(create_cmd(), None)
    existing.clear_events()
    assert Invoice.create(create_cmd("1.00", total=eur("5.00")), existing) is existing
    assert existing.pending_events == []


def test_the_invoice_number_is_derived_from_the_order_alone():
    cmd = create_cmd(order_id="o-1")
    number = invoice_number(cmd)
    assert re.fullmatch(r"INV-[0-9A-F]{12}", number)
    later = create_cmd(order_id="o-1", issued_at=cmd.issued_at + timedelta(days=3))
    assert invoice_number(later) == number  # another command, another day: the same invoice
    assert invoice_number(create_cmd(order_id="o-2")) != number
    assert Invoice.create(cmd, None).id == number


def test_the_same_command_always_names_the_same_invoice():
    cmd = create_cmd()
    assert Invoice.create(cmd, None).id == Invoice.create(cmd, None).id == invoice_number(cmd)
    assert Invoice.create(cmd, None).pending_events == Invoice.create(cmd, None).pending_events


@pytest.mark.parametrize("total", ["99.99", "100.01", "0.00"])
def test_lines_that_do_not_add_up_to_the_total_are_refused(total):
    with pytest.raises(InvalidCommand) as refused:
        Invoice.create(create_cmd("60.00", "40.00", total=eur(total)), None)
    assert refused.value.code == "total_mismatch"


def test_lines_in_another_currency_than_the_total_are_refused():
    with pytest.raises(InvalidCommand) as refused:
        Invoice.create(create_cmd("100.00", total=money("100.00", "USD")), None)
    assert refused.value.code == "currency_mismatch"


# == credit notes ========================================================================================
def credit_cmd(refund_id: str = "r-1", amount: str | Money = "30.00", order_id: str = "o-1") -> CreditInvoice:
    return command(CreditInvoice, order_id=order_id, refund_id=refund_id,
                   amount=amount if isinstance(amount, Money) else eur(amount))


def invoiced(*amounts: str, credited: tuple[str, str] | None = None) -> Invoice:
    """An invoice for these amounts, with one refund (id, amount) credited already if given."""
    invoice = Invoice.create(create_cmd(*amounts), None)
    if credited:
        invoice.credit(credit_cmd(*credited))
    invoice.clear_events()
    return invoice


def test_a_refund_paid_out_is_credited_on_the_invoice_with_a_credit_note():
    invoice = invoiced("60.00", "40.00")

    invoice.credit(credit_cmd("r-1", "30.00"))

    [credited] = invoice.pending_events
    assert isinstance(credited, InvoiceCredited)
    assert (credited.invoice_number, credited.refund_id, credited.amount) == (invoice.id, "r-1", eur("30"))
    assert credited.credit_note_number == credit_note_number("o-1", "r-1") and credited.credit_note_number.startswith("CN-")
    assert credit_note_number("o-2", "r-1") != credited.credit_note_number  # refund ids are the order's own
    assert invoice.credited == eur("30")


def test_crediting_the_same_refund_again_changes_nothing():
    invoice = invoiced("100.00", credited=("r-1", "30.00"))

    invoice.credit(credit_cmd("r-1", "30.00"))

    assert invoice.pending_events == [] and invoice.credited == eur("30") and len(invoice.credit_notes) == 1


def test_the_same_refund_credited_for_another_amount_is_refused():
    invoice = invoiced("100.00", credited=("r-1", "30.00"))

    with pytest.raises(InvalidCommand) as refused:
        invoice.credit(credit_cmd("r-1", "50.00"))

    assert refused.value.code == "credit_note_conflict" and invoice.credited == eur("30")


def test_an_order_never_invoiced_has_nothing_to_credit():
    with pytest.raises(NotFound) as refused:
        Invoice.credit_of(None, credit_cmd())
    assert refused.value.code == "no_invoice"


def test_credit_notes_never_credit_more_than_the_invoice_billed():
    invoice = invoiced("100.00", credited=("r-1", "70.00"))

    with pytest.raises(InvalidCommand) as refused:
        invoice.credit(credit_cmd("r-2", "30.01"))

    assert refused.value.code == "credit_exceeds_invoice"
    assert invoice.pending_events == [] and invoice.credited == eur("70")
    invoice.credit(credit_cmd("r-2", "30.00"))  # all of what is left may still be credited
    assert invoice.credited == eur("100")


def test_a_credit_note_is_in_the_invoices_currency_only():
    invoice = invoiced("100.00")

    with pytest.raises(InvalidCommand) as refused:
        invoice.credit(credit_cmd("r-1", money("10.00", "USD")))

    assert refused.value.code == "currency_mismatch" and invoice.credit_notes == []
