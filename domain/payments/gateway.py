"""What payments asks the gateway, and the answers it understands.

Payments decides both: the request (amount, idempotency key) before the call,
and what an answer means after it. The HTTP call itself happens outside the
aggregate and outside any database transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.shared.money import Money


@dataclass(frozen=True)
class CaptureRequest:
    idempotency_key: str  # the attempt id: a business id, never a run id
    amount: Money
    card_token: str
    reference: str


@dataclass(frozen=True)
class RefundRequest:
    idempotency_key: str  # the refund id
    charge: str  # the gateway's capture reference
    amount: Money
    reference: str


@dataclass(frozen=True)
class Accepted:
    reference: str  # the gateway's id for the capture or refund


@dataclass(frozen=True)
class Declined:
    code: str


GatewayAnswer = Accepted | Declined


class GatewayUnavailable(Exception):
    """No usable answer (5xx, timeout, connection lost): ask again later with the same key."""


class GatewayRefusedRequest(Exception):
    """The gateway says the request itself is wrong; asking again cannot help."""
