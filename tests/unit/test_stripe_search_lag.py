"""Stripe's search lags: a capture it does not find yet is not taken as never made."""

from __future__ import annotations

from datetime import timedelta

from adapters.settings import SIMULATOR_API_KEY
from adapters.stripe_gateway import STRIPE_SEARCH_LAG, StripeGateway


def test_a_capture_stripes_own_search_does_not_find_counts_as_never_made_only_after_an_hour():
    # Stripe's search lags up to an hour in an outage; the simulator searches its own records.
    assert STRIPE_SEARCH_LAG == timedelta(hours=1)
    assert StripeGateway("sk_test_unused").search_lag == STRIPE_SEARCH_LAG
    assert StripeGateway("sk_test_unused", "https://stripe-proxy.internal").search_lag == STRIPE_SEARCH_LAG
    assert StripeGateway(SIMULATOR_API_KEY, "http://127.0.0.1:1").search_lag == timedelta(0)
