"""Money crosses to Stripe as its integer minor units, exactly, in every currency settleflow takes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.stripe_gateway import from_stripe_amount, stripe_business_id, to_stripe_amount
from domain.shared.money import CURRENCY_EXPONENTS, Money


@pytest.mark.parametrize(("amount", "currency", "minor"), [
    ("120.00", "EUR", 12000), ("0.01", "USD", 1), ("5000", "JPY", 5000), ("5000", "KRW", 5000),
    ("1.234", "KWD", 1234), ("700", "ISK", 70000),
])
def test_amounts_are_stripes_minor_units_of_their_currency(amount, currency, minor):
    assert to_stripe_amount(Money.of(amount, currency)) == minor
    assert from_stripe_amount(minor, currency.lower()) == Money.of(amount, currency)


@given(currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)), minor=st.integers(min_value=1, max_value=10**12))
def test_every_amount_goes_to_stripe_and_back_unchanged(currency, minor):
    money = Money.from_minor(minor, currency)

    assert from_stripe_amount(to_stripe_amount(money), currency) == money


def test_a_refund_listed_as_negative_is_the_same_positive_amount():
    assert from_stripe_amount(-2050, "eur") == Money.of(Decimal("20.50"), "EUR")


def test_business_ids_within_stripes_limit_cross_unchanged_and_longer_ones_as_a_stable_digest():
    assert stripe_business_id("payment-o-1/capture-1") == "payment-o-1/capture-1"
    long_id = "o" * 256
    assert stripe_business_id(long_id) == stripe_business_id(long_id)
    assert stripe_business_id(long_id).startswith("sha256:") and len(stripe_business_id(long_id)) <= 255
    assert stripe_business_id(long_id) != stripe_business_id("o" * 257)
