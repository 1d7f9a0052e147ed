"""What the activities need from the outside world, as plain interfaces.

Adapters implement them (`adapters/`); tests use the real ones where they can
and small fakes where a unit test needs no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from domain.notifications.events import MessageSent
from domain.payments.gateway import CaptureRequest, GatewayAnswer, RefundRequest


class PaymentGateway(Protocol):
    def capture(self, request: CaptureRequest) -> GatewayAnswer: ...

    def refund(self, request: RefundRequest) -> GatewayAnswer: ...


class Mailbox(Protocol):
    def deliver(self, message: MessageSent) -> None:
        """Deliver a message; delivering the same notification again must not duplicate it."""


class UnitOfWork(Protocol):
    def __enter__(self) -> UnitOfWork: ...

    def __exit__(self, *exc: object) -> None: ...


UnitOfWorkFactory = Callable[[], "UnitOfWork"]
