"""Money moves once: a capture command delivered twice, or a gateway that times
out after charging, leaves one capture in the gateway's ledger and one invoice; a capture
asked again after the gateway may have forgotten its key is not sent again.

Real activities, a real SQLite database, the gateway simulator as its own process.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from activities.invoicing import InvoicingActivities
from activities.payments import PaymentsActivities
from adapters import db
from adapters.settings import SIMULATOR_API_KEY
from adapters.stripe_gateway import StripeGateway
from adapters.unit_of_work import SqlUnitOfWork, default_aggregate_types
from domain.billing.commands import OrderLine
from domain.contracts import InvoiceCreated, PaymentCaptured
from domain.invoicing.commands import CreateInvoice
from domain.payments.commands import CapturePayment
from domain.shared.actor import Actor
from domain.shared.money import Money
from simulators.control import read_calls, read_ledger
from temporalio.exceptions import ApplicationError
from tests.gateway_process import gateway_simulator

EUR_120 = Money.of("120.00", "EUR")
NOW = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    with gateway_simulator("--hang-seconds", "1.0") as url:
        yield url


@pytest.fixture
def uow_factory(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'settleflow.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    aggregates = default_aggregate_types()
    yield lambda: SqlUnitOfWork(engine, aggregates)
    engine.dispose()


def capture(order_id: str, card: str, command_id: str = "payment-x/capture") -> CapturePayment:
    return CapturePayment(
        command_id=f"{command_id}-{order_id}",
        actor=Actor.system("payment"),
        issued_at=NOW,
        order_id=order_id,
        customer_id="c-1",
        amount=EUR_120,
        card_token=card,
    )


def invoice(order_id: str, command_id: str) -> CreateInvoice:
    return CreateInvoice(
        command_id=command_id,
        actor=Actor.system("payment"),
        issued_at=NOW,
        order_id=order_id,
        customer_id="c-1",
        lines=[OrderLine(description="order", amount=EUR_120)],
        total=EUR_120,
        payment_reference="ch_x",
    )


def captures_for(url: str, order_id: str) -> list[dict]:
    return [c for c in read_ledger(url)["captures"] if c["reference"] == order_id]


def test_a_capture_command_delivered_twice_captures_once(uow_factory, gateway_url):
    payments = PaymentsActivities(uow_factory, StripeGateway(SIMULATOR_API_KEY, gateway_url))
    command = capture("o-twice", "tok_visa")

    first = payments.capture_payment(command)
    second = payments.capture_payment(command)

    assert first == second and first.has(PaymentCaptured)
    assert len(captures_for(gateway_url, "o-twice")) == 1


def test_a_gateway_timeout_after_charging_then_a_retry_captures_once(uow_factory, gateway_url):
    payments = PaymentsActivities(uow_factory, StripeGateway(SIMULATOR_API_KEY, gateway_url, timeout_seconds=0.3))
    command = capture("o-timeout", "tok_timeout")

    with pytest.raises(Exception, match="gateway unavailable"):
        payments.capture_payment(command)  # the charge went through; the answer never came
    retried = payments.capture_payment(command)  # what Temporal's retry does: same command, same key

    assert retried.has(PaymentCaptured)
    assert len(captures_for(gateway_url, "o-timeout")) == 1
    with uow_factory() as uow:
        [attempt] = uow.payments.get("o-timeout").attempts
        assert attempt.status == "captured"


def test_a_capture_asked_again_after_the_gateway_may_have_forgotten_its_key_is_not_sent_again(uow_factory, gateway_url):
    # Stripe keeps an idempotency key for 24 h: a flow resumed a day after its capture first
    # left must not send it again under that key (it could charge a second time).
    asked_at = [NOW]
    payments = PaymentsActivities(
        uow_factory, StripeGateway(SIMULATOR_API_KEY, gateway_url, timeout_seconds=0.3), asked_at=lambda: asked_at[0]
    )
    command = capture("o-a-day-later", "tok_timeout")
    with pytest.raises(Exception, match="gateway unavailable"):
        payments.capture_payment(command)  # the charge went through; the answer never came
    sent = read_calls(gateway_url).count("POST /v1/payment_intents")

    asked_at[0] = NOW + timedelta(hours=23)  # the resumed flow's step asks again
    with pytest.raises(ApplicationError) as refused:
        payments.capture_payment(command)

    assert (refused.value.type, refused.value.details) == ("InvalidCommand", ("attempt_unknown",))
    assert read_calls(gateway_url).count("POST /v1/payment_intents") == sent  # nothing sent again
    assert len(captures_for(gateway_url, "o-a-day-later")) == 1
    with uow_factory() as uow:
        [attempt] = uow.payments.get("o-a-day-later").attempts
        assert (attempt.status, attempt.first_asked_at) == ("sent", NOW)  # reconciliation asks the gateway


def test_one_invoice_per_captured_payment_however_often_asked(uow_factory):
    invoicing = InvoicingActivities(uow_factory)

    first = invoicing.create_invoice(invoice("o-inv", "payment-o-inv/invoice"))
    redelivered = invoicing.create_invoice(invoice("o-inv", "payment-o-inv/invoice"))
    asked_again = invoicing.create_invoice(invoice("o-inv", "someone-else/invoice"))

    assert first == redelivered and first.has(InvoiceCreated)
    assert asked_again.events == []  # the order already has its invoice: nothing changes
    with uow_factory() as uow:
        assert uow.invoices.for_order("o-inv").id == first.first(InvoiceCreated).invoice_number
