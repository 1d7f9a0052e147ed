"""The one definition of what an id and a text may be, for every message.

Start requests, Updates, commands and events all use these types, so whatever
passes the door can always be recorded: no request is accepted that a command
built from it would refuse, and no command is accepted that a database could not
store (no NUL character, no half of a surrogate pair, nothing over its limit).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StringConstraints

ID_MAX = 200  # ids people give: orders, customers, refunds, card tokens, tracking numbers
DERIVED_ID_MAX = 1000  # ids made from them, e.g. a cancellation's refund `{order_id}-cancellation`
TEXT_MAX = 2000  # free text people give: a reason, a reviewer's note


def storable(value: str) -> str:
    """Refuse characters no database stores: NUL (PostgreSQL text and JSON refuse it),
    and lone surrogates (they have no UTF-8 encoding)."""
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    try:
        value.encode("utf-8")  # fails only on a lone surrogate
    except UnicodeEncodeError:
        raise ValueError("contains a character that cannot be stored (a lone surrogate)") from None
    return value


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX), AfterValidator(storable), AfterValidator(not_blank)]
DerivedId = Annotated[
    str, StringConstraints(min_length=1, max_length=DERIVED_ID_MAX), AfterValidator(storable), AfterValidator(not_blank)
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=TEXT_MAX), AfterValidator(storable), AfterValidator(not_blank)]
Note = Annotated[str, StringConstraints(max_length=TEXT_MAX), AfterValidator(storable)]  # may be empty
