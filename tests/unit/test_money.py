"""Money: an exact Decimal amount in a known currency, never a binary float."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.shared.errors import InvalidCommand
from domain.shared.money import CURRENCY_EXPONENTS, Money, parse_amount, total

MINOR_UNITS = {"money": "minor_units"}


# -- what counts as an amount ---------------------------------------------------------
@pytest.mark.parametrize("amount", [0.1, 12.5, 1.0, float("nan"), Fraction(1, 2)])
def test_money_refuses_binary_floats_and_other_inexact_numbers(amount):
    with pytest.raises(InvalidCommand) as refused:
        Money.of(amount, "EUR")
    assert refused.value.code == "invalid_money"
    with pytest.raises(ValidationError):
        Money(amount=amount, currency="EUR")


@pytest.mark.parametrize("amount", [True, False])
def test_money_refuses_booleans(amount):
    with pytest.raises(InvalidCommand) as refused:
        Money.of(amount, "EUR")
    assert refused.value.code == "invalid_money"
    with pytest.raises(ValidationError):
        Money(amount=amount, currency="EUR")


@pytest.mark.parametrize(
    ("amount", "expected"), [(Decimal("12.30"), "12.30"), (12, "12.00"), ("12.3", "12.30"), (" 12.30 ", "12.30")]
)
def test_money_accepts_decimals_ints_and_decimal_strings(amount, expected):
    assert Money.of(amount, "EUR").amount == Decimal(expected)


@pytest.mark.parametrize("text", ["", "abc", "12,30", "NaN", "Infinity", "-inf"])
def test_an_amount_that_is_not_a_finite_number_is_refused(text):
    with pytest.raises(InvalidCommand) as refused:
        Money.of(text, "EUR")
    assert refused.value.code == "invalid_amount"


def test_parse_amount_reads_what_a_person_typed():
    assert parse_amount(" 120.00 ") == Decimal("120.00")
    with pytest.raises(InvalidCommand):
        parse_amount(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("currency", ["XXX", "eur", "", "EURO", "BTC"])
def test_money_refuses_unknown_currencies(currency):
    with pytest.raises(InvalidCommand) as refused:
        Money.of("1.00", currency)
    assert refused.value.code == "invalid_money"
    with pytest.raises(ValidationError):
        Money(amount=Decimal(1), currency=currency)


@pytest.mark.parametrize(
    ("currency", "fits", "too_precise"),
    [
        ("EUR", "12.34", "12.345"),
        ("USD", "0.01", "0.001"),
        ("JPY", "1234", "1234.5"),
        ("KRW", "5", "0.1"),
        ("BHD", "1.234", "1.2345"),
        ("KWD", "0.001", "0.0001"),
    ],
)
def test_money_refuses_more_decimals_than_the_currency_has(currency, fits, too_precise):
    assert Money.of(fits, currency).amount == Decimal(fits)
    with pytest.raises(InvalidCommand) as refused:
        Money.of(too_precise, currency)
    assert refused.value.code == "invalid_money"
    assert currency in refused.value.message


def test_trailing_zeros_beyond_the_currency_are_not_extra_decimals():
    assert Money.of("12.3400", "EUR") == Money.of("12.34", "EUR")
    assert Money.of("1000.00", "JPY").amount == Decimal("1000")


def test_an_absurdly_large_amount_is_refused_as_an_invalid_command():
    # quantize() in Money._fits_currency overflows the 28-digit decimal context for
    # amounts of 10**26 or more and the raw decimal.InvalidOperation escapes.
    with pytest.raises(InvalidCommand):
        Money.of("1e30", "EUR")


# -- equality, printing -------------------------------------------------------------------
def test_the_same_amount_written_at_different_scales_is_equal():
    five, five_00 = Money.of("5", "EUR"), Money.of("5.00", "EUR")
    assert five == five_00
    assert hash(five) == hash(five_00)
    assert str(five) == str(five_00) == "5.00 EUR"
    assert five.amount.as_tuple().exponent == -2


def test_the_same_amount_in_another_currency_is_not_equal():
    assert Money.of("5", "EUR") != Money.of("5", "USD")


def test_money_is_immutable():
    m = Money.of("5", "EUR")
    with pytest.raises(ValidationError):
        m.amount = Decimal(6)  # type: ignore[misc]


def test_only_a_positive_amount_is_positive():
    assert Money.of("0.01", "EUR").is_positive
    assert not Money.zero("EUR").is_positive
    assert not Money.of("-1", "EUR").is_positive


# -- arithmetic ----------------------------------------------------------------------------
def test_adding_and_subtracting_is_exact():
    assert Money.of("0.10", "EUR") + Money.of("0.20", "EUR") == Money.of("0.30", "EUR")
    assert Money.of("1.00", "EUR") - Money.of("0.99", "EUR") == Money.of("0.01", "EUR")
    assert Money.of("1", "JPY") - Money.of("2", "JPY") == Money.of("-1", "JPY")


@pytest.mark.parametrize(
    "combine",
    [
        lambda a, b: a + b,
        lambda a, b: a - b,
        lambda a, b: a < b,
        lambda a, b: a <= b,
        lambda a, b: a > b,
        lambda a, b: a >= b,
    ],
    ids=["add", "subtract", "lt", "le", "gt", "ge"],
)
def test_arithmetic_and_comparison_refuse_mixed_currencies(combine):
    with pytest.raises(InvalidCommand) as refused:
        combine(Money.of("1", "EUR"), Money.of("1", "USD"))
    assert refused.value.code == "currency_mismatch"


def test_money_does_not_combine_with_plain_numbers():
    with pytest.raises(TypeError):
        Money.of("1", "EUR") + Decimal(1)  # type: ignore[operator]


def test_comparisons_within_one_currency():
    one, two = Money.of("1", "EUR"), Money.of("2", "EUR")
    assert one < two and one <= two and two > one and two >= one
    assert one <= Money.of("1.00", "EUR") and one >= Money.of("1.00", "EUR")


def test_total_adds_up_in_one_currency_and_is_zero_for_nothing():
    assert total([], "JPY") == Money.zero("JPY")
    assert total([Money.of("1.10", "EUR"), Money.of("2.20", "EUR")], "EUR") == Money.of("3.30", "EUR")
    with pytest.raises(InvalidCommand) as refused:
        total([Money.of("1", "USD")], "EUR")
    assert refused.value.code == "currency_mismatch"


# -- minor units (the database) ----------------------------------------------------------
@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("12.30", "EUR", 1230), ("0.01", "EUR", 1), ("1234", "JPY", 1234), ("1.234", "BHD", 1234), ("-5", "EUR", -500)],
)
def test_minor_units_round_trip(amount, currency, minor):
    m = Money.of(amount, currency)
    assert m.to_minor() == minor
    assert isinstance(m.to_minor(), int)
    assert Money.from_minor(minor, currency) == m


def test_repositories_store_money_as_integer_minor_units():
    m = Money.of("12.30", "EUR")
    stored = m.model_dump(mode="json", context=MINOR_UNITS)
    assert stored == {"minor": 1230, "currency": "EUR"}
    assert Money.model_validate(stored) == m


def test_minor_units_inside_a_larger_document_are_dumped_and_read_back():
    from domain.billing.commands import OrderLine

    line = OrderLine(description="book", amount=Money.of("9.99", "EUR"))
    stored = line.model_dump(mode="json", context=MINOR_UNITS)
    assert stored["amount"] == {"minor": 999, "currency": "EUR"}
    assert OrderLine.model_validate(stored) == line


@pytest.mark.parametrize(
    "stored",
    [
        {"minor": 12.5, "currency": "EUR"},
        {"minor": "1230", "currency": "EUR"},
        {"minor": True, "currency": "EUR"},
        {"minor": 1230, "currency": "XXX"},
        {"minor": 1230},
    ],
)
def test_stored_minor_units_must_be_an_integer_in_a_known_currency(stored):
    with pytest.raises(ValidationError):
        Money.model_validate(stored)


# -- JSON on the wire ----------------------------------------------------------------------
def test_json_on_the_wire_carries_the_amount_as_a_decimal_string():
    m = Money.of("12.3", "EUR")
    assert json.loads(m.model_dump_json()) == {"amount": "12.30", "currency": "EUR"}
    assert m.model_dump(mode="json") == {"amount": "12.30", "currency": "EUR"}
    assert Money.model_validate_json(m.model_dump_json()) == m


def test_json_with_a_number_amount_is_refused_when_it_is_a_float():
    with pytest.raises(ValidationError):
        Money.model_validate_json('{"amount": 0.1, "currency": "EUR"}')


# -- properties ------------------------------------------------------------------------------
currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))
minor_amounts = st.integers(min_value=-(10**14), max_value=10**14)  # within MAX_AMOUNT for every currency


@settings(max_examples=200, deadline=None)
@given(currency=currencies, minor=minor_amounts)
def test_from_minor_of_to_minor_is_the_same_money(currency, minor):
    m = Money.from_minor(minor, currency)
    assert m.to_minor() == minor
    assert Money.from_minor(m.to_minor(), m.currency) == m
    assert Money.model_validate(m.model_dump(mode="json", context=MINOR_UNITS)) == m
    assert Money.model_validate_json(m.model_dump_json()) == m


@settings(max_examples=200, deadline=None)
@given(currency=currencies, a=minor_amounts, b=minor_amounts)
def test_addition_and_subtraction_are_exact(currency, a, b):
    x, y = Money.from_minor(a, currency), Money.from_minor(b, currency)
    assert (x + y).to_minor() == a + b
    assert (x - y).to_minor() == a - b
    assert (x + y) - y == x
    assert (x < y) == (a < b)
