"""What payments asks the gateway, and the answers it understands.

Payments decides both: the request (amount, idempotency key) before the call,
and what an answer means after it. The HTTP call itself happens outside the
aggregate and outside any database transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from domain.shared.money import Money


def may_be_the_same_account(sent_to: str, asked_of: str) -> bool:
    """Whether the gateway account `asked_of` can see a request sent to `sent_to`.

    An account is written "<mode>:<id>" ("live:acct_1Nv0..."): a gateway's test and live
    modes keep separate records under one id, so both must match. A request recorded before
    accounts were kept has "" and may be asked of any account, as before."""
    return not sent_to or sent_to == asked_of


@dataclass(frozen=True)
class CaptureRequest:
    idempotency_key: str  # the attempt id: a business id, never a run id
    amount: Money
    card_token: str
    reference: str
    # The gateway account the attempt went to ("" before accounts were kept). Only that account
    # can say what became of it: another account's look-up would find nothing, which is no answer.
    sent_to: str = ""
    # Whether `card_token` is a card the gateway saved at an earlier attempt (`saved_card`), not
    # one the customer gave: the gateway charges it as saved, without saving it again.
    card_saved: bool = False


@dataclass(frozen=True)
class RefundRequest:
    idempotency_key: str  # the refund id
    charge: str  # the gateway's capture reference
    amount: Money
    reference: str
    order_id: str = ""  # whose payment it is (the gateway keeps it beside the refund)
    # The currency the gateway confirmed for the charge when it captured it. A refund in any
    # other currency is refused before anything moves; "" (a capture recorded before payments
    # kept it) makes the gateway adapter read the charge's currency first.
    charge_currency: str = ""
    sent_to: str = ""  # the gateway account the refund went to (as for captures)


@dataclass(frozen=True)
class Accepted:
    reference: str  # the gateway's id for the capture or refund
    currency: str = ""  # the currency the gateway says the money moved in ("" if it did not say)
    # A capture's card as the gateway saved it for later charges ("": not saved). A card token is
    # good for one charge; payments charges this handle in later attempts (`Payment.saved_card`).
    saved_card: str = field(default="", compare=False)


@dataclass(frozen=True)
class Declined:
    code: str
    saved_card: str = field(default="", compare=False)  # as for Accepted: what a retry may charge


GatewayAnswer = Accepted | Declined


@dataclass(frozen=True)
class NotFound:
    """The gateway confirms it holds nothing under this business id: no money moved.
    Only this answer (or a Declined) may free money that an unknown request reserved.

    `settles_after` is how long after a request was last sent the look-up is sure to show it:
    the longest a send may still be on the wire (a flow that stops waiting — a Cancel, its
    step's time running out — does not stop the activity attempt sending it), plus any lag of
    the look-up itself (Stripe's search, which finds a capture, lags up to an hour in an
    outage). Asked sooner, "not found" is not an answer yet: payments refuses to decide on
    it, and it is asked again.

    `saved_card`: a card the gateway saved on the way to the capture it never made (the
    attempt stopped between saving the card and charging it), which the next attempt may
    charge: the customer's token is used up by then."""

    settles_after: timedelta = field(default=timedelta(0), compare=False)
    saved_card: str = field(default="", compare=False)


# What a look-up by business id can tell (reconciliation). A look-up never moves money;
# when the gateway still cannot say (pending, unreachable) it raises GatewayUnavailable.
LookupAnswer = Accepted | Declined | NotFound


@dataclass(frozen=True)
class SettlementLine:
    """One movement of money in the gateway's settlement listing for a day."""

    # "refund_reversal": a refund paid out, then undone by the card's bank days later (a closed
    # or expired card): the money came back to the merchant, and the customer was not paid.
    kind: Literal["capture", "refund", "refund_reversal"]
    business_id: str  # settleflow's id: the attempt id of a capture, the refund id of a refund (or its reversal)
    order_id: str
    reference: str  # the gateway's own id
    amount: Money  # always positive; `kind` says which way it went
    settled_at: datetime


class GatewayUnavailable(Exception):
    """No usable answer (5xx, timeout, connection lost): ask again later with the same key."""


class GatewayRefusedRequest(Exception):
    """The gateway says the request itself is wrong; asking again cannot help."""
