"""Money: a Decimal amount in one ISO 4217 currency.

Binary fractions are refused at the door (0.1 + 0.2 is not a price). Amounts carry no
more decimals than their currency has, so "12.345 EUR" is an error, not a
rounding. Storage uses integer minor units (`to_minor` / `from_minor`).
"""

from __future__ import annotations

import numbers
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from domain.shared.errors import InvalidCommand

# ISO 4217 currencies settleflow accepts, with their number of minor digits.
CURRENCY_EXPONENTS: dict[str, int] = {
    "EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "SEK": 2, "NOK": 2, "DKK": 2,
    "PLN": 2, "CZK": 2, "CAD": 2, "AUD": 2, "NZD": 2, "SGD": 2, "HKD": 2,
    "JPY": 0, "KRW": 0, "ISK": 0, "BHD": 3, "KWD": 3, "JOD": 3,
}


MAX_AMOUNT = Decimal(10) ** 15  # far above any payment; keeps minor units in a 64-bit integer


def parse_amount(text: str) -> Decimal:
    """A decimal amount written by a person ("120.00"), or InvalidCommand."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise InvalidCommand("invalid_amount", f"not an amount: {text!r}") from None
    if not value.is_finite():
        raise InvalidCommand("invalid_amount", f"not an amount: {text!r}")
    return value


class Money(BaseModel):
    model_config = ConfigDict(frozen=True)

    amount: Decimal
    currency: str

    # On the wire (Temporal, JSON) the amount is a decimal string: {"amount": "12.30",
    # "currency": "EUR"}. In the database it is integer minor units: {"minor": 1230,
    # "currency": "EUR"} -- repositories dump with context {"money": "minor_units"}.
    @model_validator(mode="before")
    @classmethod
    def _from_minor_units(cls, data: Any) -> Any:
        if isinstance(data, dict) and "minor" in data and "amount" not in data:
            minor, currency = data["minor"], data.get("currency")
            if not isinstance(minor, int) or isinstance(minor, bool) or currency not in CURRENCY_EXPONENTS:
                raise ValueError("minor units must be an integer with a known currency")
            return {"amount": Decimal(minor).scaleb(-CURRENCY_EXPONENTS[currency]), "currency": currency}
        return data

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any, info: SerializationInfo) -> Any:
        if isinstance(info.context, dict) and info.context.get("money") == "minor_units":
            return {"minor": self.to_minor(), "currency": self.currency}
        return handler(self)

    @field_validator("amount", mode="before")
    @classmethod
    def _no_floats(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("a boolean is not an amount")
        # int and Decimal are exact; any other real number (binary floating point,
        # fractions) is not money.
        if isinstance(value, numbers.Real) and not isinstance(value, (int, Decimal)):
            raise ValueError("money must be a Decimal, an int or a decimal string, not a binary number")
        return value

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value not in CURRENCY_EXPONENTS:
            raise ValueError(f"unknown currency {value!r} (expected an ISO 4217 code such as EUR)")
        return value

    @model_validator(mode="after")
    def _fits_currency(self) -> Money:
        if not self.amount.is_finite():
            raise ValueError("amount must be a finite number")
        exponent = CURRENCY_EXPONENTS[self.currency]
        if abs(self.amount) >= MAX_AMOUNT:
            raise ValueError(f"amount {self.amount} is beyond any real payment")
        unit = Decimal(1).scaleb(-exponent)
        if self.amount != self.amount.quantize(unit):
            raise ValueError(f"{self.currency} has {exponent} decimals; {self.amount} has more")
        # Normalise the scale (and -0) so that 5 EUR and 5.00 EUR compare, hash and print alike.
        object.__setattr__(self, "amount", self.amount.quantize(unit) + Decimal(0))
        return self

    # -- construction -------------------------------------------------------
    @classmethod
    def of(cls, amount: str | Decimal | int, currency: str) -> Money:
        if isinstance(amount, str):
            amount = parse_amount(amount)
        try:
            return cls(amount=amount, currency=currency)
        except ValueError as error:
            raise InvalidCommand("invalid_money", _first_message(error)) from None

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(amount=Decimal(0), currency=currency)

    @classmethod
    def from_minor(cls, minor: int, currency: str) -> Money:
        return cls.model_validate({"minor": minor, "currency": currency})

    def to_minor(self) -> int:
        return int(self.amount.scaleb(CURRENCY_EXPONENTS[self.currency]))

    # -- arithmetic -----------------------------------------------------------
    def _same_currency(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise InvalidCommand(
                "currency_mismatch", f"cannot combine {self.currency} with {other.currency}"
            )

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(amount=self.amount + other.amount, currency=self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(amount=self.amount - other.amount, currency=self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount >= other.amount

    @property
    def is_positive(self) -> bool:
        return self.amount > 0

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


def total(amounts: list[Money], currency: str) -> Money:
    result = Money.zero(currency)
    for amount in amounts:
        result = result + amount
    return result


def _first_message(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", error)).removeprefix("Value error, ")
    return str(error)
