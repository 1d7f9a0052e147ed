"""How the Stripe adapter reads Stripe's answers where they are not yet final: a refund with
more than one attempt under its id (a resend after Stripe's idempotency window) is declined only
when none can still pay; a capture waiting for 3-D Secure that cannot be cancelled is refused,
not taken as declined nor retried for ever."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from adapters.stripe_gateway import StripeGateway
import stripe

from domain.payments.gateway import Accepted, CaptureRequest, Declined, GatewayRefusedRequest, GatewayUnavailable, RefundRequest
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


def test_a_capture_waiting_for_3d_secure_that_the_key_may_not_cancel_is_refused_not_declined():
    waiting = {"id": "pi_1", "status": "requires_action", "currency": "eur", "metadata": {"attempt_id": "a-1"}}

    def cancel(intent, params):
        raise stripe.PermissionError("This key may not cancel PaymentIntents.", http_status=403)

    gateway = StripeGateway("sk_test_fake", "http://127.0.0.1:9")
    gateway._account = "test:acct_1"  # noqa: SLF001
    gateway._client = SimpleNamespace(v1=SimpleNamespace(payment_intents=SimpleNamespace(  # noqa: SLF001
        search=lambda params: SimpleNamespace(auto_paging_iter=lambda: iter([waiting])),
        cancel=cancel, retrieve=lambda intent_id: waiting)))

    with pytest.raises(GatewayRefusedRequest, match="refused the API key"):
        gateway.find_capture(CaptureRequest("a-1", eur("10.00"), "tok_visa", "o-1", sent_to="test:acct_1"))
