"""How the Stripe adapter reads what became of a refund when Stripe holds more than one under
its id (a resend after Stripe's idempotency window): "declined" only when none can still pay."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from adapters.stripe_gateway import StripeGateway
from domain.payments.gateway import Accepted, Declined, GatewayUnavailable, RefundRequest
from tests.unit.builders import eur


def gateway_listing(*statuses: str) -> StripeGateway:
    """A gateway whose PaymentIntent holds refunds of these statuses under one refund id, newest first."""
    refunds = [{"id": f"re_{n}", "status": status, "failure_reason": "expired_or_canceled_card" if status == "failed"
                else None, "metadata": {"refund_id": "r-1"}} for n, status in enumerate(statuses)]
    gateway = StripeGateway("sk_test_fake", "http://127.0.0.1:9")
    gateway._account = "test:acct_1"  # noqa: SLF001 - whose account the key speaks for, read once
    listing = SimpleNamespace(auto_paging_iter=lambda: iter(refunds))
    gateway._client = SimpleNamespace(v1=SimpleNamespace(refunds=SimpleNamespace(list=lambda params: listing)))  # noqa: SLF001
    return gateway


REQUEST = RefundRequest("r-1", "pi_1", eur("10.00"), "r-1", sent_to="test:acct_1")


def test_a_refund_failed_while_another_under_its_id_is_still_pending_is_not_taken_as_declined():
    with pytest.raises(GatewayUnavailable, match="still pending"):
        gateway_listing("failed", "pending").find_refund(REQUEST)


def test_a_refund_whose_every_attempt_under_its_id_failed_is_declined_and_one_that_succeeded_is_paid():
    assert gateway_listing("failed", "canceled").find_refund(REQUEST) == Declined("expired_or_canceled_card")
    assert gateway_listing("failed", "succeeded").find_refund(REQUEST) == Accepted("re_1")
