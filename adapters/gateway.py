"""The PaymentGateway port, implemented over the HTTP gateway client.

Translates the client's answers into the terms payments understands
(`Accepted`, `Declined`) and its transport trouble into `GatewayUnavailable`.
"""

from __future__ import annotations

from adapters import gateway_client as http
from domain.payments.gateway import (
    Accepted,
    CaptureRequest,
    Declined,
    GatewayAnswer,
    GatewayRefusedRequest,
    GatewayUnavailable,
    RefundRequest,
)


class HttpGatewayPort:
    def __init__(self, client: http.HttpPaymentGateway) -> None:
        self.client = client

    def capture(self, request: CaptureRequest) -> GatewayAnswer:
        return self._answer(
            lambda: self.client.capture(
                idempotency_key=request.idempotency_key,
                amount=request.amount.amount,
                currency=request.amount.currency,
                card_token=request.card_token,
                reference=request.reference,
            )
        )

    def refund(self, request: RefundRequest) -> GatewayAnswer:
        return self._answer(
            lambda: self.client.refund(
                idempotency_key=request.idempotency_key,
                charge=request.charge,
                amount=request.amount.amount,
                currency=request.amount.currency,
                reference=request.reference,
            )
        )

    @staticmethod
    def _answer(call) -> GatewayAnswer:
        try:
            answer = call()
        except http.GatewayUnavailable as trouble:
            raise GatewayUnavailable(str(trouble)) from trouble
        except http.GatewayRejected as wrong:
            raise GatewayRefusedRequest(str(wrong)) from wrong
        if isinstance(answer, http.Declined):
            return Declined(code=answer.code)
        return Accepted(reference=answer.reference)

    def close(self) -> None:
        self.client.close()
