"""What the activities need from the outside world, as plain interfaces.

Adapters implement them (`adapters/`); tests use the real ones where they can
and small fakes where a unit test needs no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Protocol

from domain.notifications.events import MessageSent
from domain.payments.gateway import CaptureRequest, GatewayAnswer, LookupAnswer, RefundRequest, SettlementLine


class PaymentGateway(Protocol):
    def account(self) -> str:
        """The account this gateway's key speaks for, "<mode>:<id>" ("live:acct_..."; the id ""
        when the key may not read it). Payments keeps it with every request it sends, and a
        look-up for a request sent to another account is refused (GatewayRefusedRequest): that
        account's "not found" would be no answer."""

    def capture(self, request: CaptureRequest) -> GatewayAnswer: ...

    def refund(self, request: RefundRequest) -> GatewayAnswer: ...

    # Look-ups for reconciliation: what really happened to a request sent earlier, found by
    # the same request (its business id is the idempotency key). They never move money.
    def find_capture(self, request: CaptureRequest) -> LookupAnswer: ...

    def find_refund(self, request: RefundRequest) -> LookupAnswer: ...

    def settlements(self, day: date) -> list[SettlementLine]:
        """Every capture and refund the gateway settled on `day` (UTC)."""


class Mailbox(Protocol):
    def deliver(self, message: MessageSent) -> None:
        """Deliver a message; delivering the same notification again must not duplicate it."""


class UnitOfWork(Protocol):
    def __enter__(self) -> UnitOfWork: ...

    def __exit__(self, *exc: object) -> None: ...


UnitOfWorkFactory = Callable[[], "UnitOfWork"]
