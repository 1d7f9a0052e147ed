"""HTTP client for the payment gateway (adapters.gateway_sim, or any Stripe-shaped processor).

One call is one HTTP request: retries belong to Temporal, which repeats the activity
with the SAME idempotency key, so a retry can never move money twice. Each call ends
in one of four ways:

    Captured / Refunded   the money moved; `reference` is the gateway's id
    Declined              a final "no" from the card issuer (a business outcome)
    GatewayUnavailable    5xx, 429, timeout, connection trouble: retry with the same key
    GatewayRejected       any other 4xx: the request itself is wrong; retrying cannot help
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx


@dataclass(frozen=True)
class Captured:
    reference: str  # gateway capture id, ch_...


@dataclass(frozen=True)
class Refunded:
    reference: str  # gateway refund id, re_...


@dataclass(frozen=True)
class Declined:
    code: str  # the issuer's decline_code: insufficient_funds, card_stolen, card_closed, ...


class GatewayUnavailable(Exception):
    """Transient: the outcome is unknown or not yet decided. Retry with the same key."""


class GatewayRejected(Exception):
    """The gateway refused the request itself (400, 404, 422 ...). Not retryable."""

    def __init__(self, message: str, *, status_code: int = 0, error: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error or {}

    @property
    def code(self) -> str:
        return str(self.error.get("code", ""))


# Failures after which the request may or may not have reached the gateway.
_TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class HttpPaymentGateway:
    """Thread-safe: calls share one httpx.Client (its connection pool is thread-safe)."""

    def __init__(self, base_url: str, timeout_seconds: float = 5.0, client: httpx.Client | None = None) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout_seconds
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout_seconds)

    def capture(
        self, *, idempotency_key: str, amount: Decimal, currency: str, card_token: str, reference: str
    ) -> Captured | Declined:
        body = self._post("/v1/captures", idempotency_key, {
            "amount": _amount(amount), "currency": currency, "card_token": card_token, "reference": reference,
        })
        return body if isinstance(body, Declined) else Captured(_id(body, "ch_"))

    def refund(
        self, *, idempotency_key: str, charge: str, amount: Decimal, currency: str, reference: str
    ) -> Refunded | Declined:
        body = self._post("/v1/refunds", idempotency_key, {
            "charge": charge, "amount": _amount(amount), "currency": currency, "reference": reference,
        })
        return body if isinstance(body, Declined) else Refunded(_id(body, "re_"))

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> HttpPaymentGateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _post(self, path: str, idempotency_key: str, payload: dict[str, str]) -> dict[str, Any] | Declined:
        """The success body, a Declined, or an exception."""
        if not idempotency_key:
            raise ValueError("an idempotency key is required")
        try:
            response = self._client.post(
                self._base_url + path, json=payload,
                headers={"Idempotency-Key": idempotency_key}, timeout=self._timeout,
            )
        except _TRANSIENT_ERRORS as exc:
            raise GatewayUnavailable(f"POST {path}: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise GatewayUnavailable(f"POST {path}: {status} {_error(response).get('message', '')}".rstrip())
        if 200 <= status < 300:
            body = _json(response)
            if not isinstance(body, dict):
                # Money may have moved; the same key will replay the answer.
                raise GatewayUnavailable(f"POST {path}: unreadable {status} answer")
            return body
        error = _error(response)
        if status == 402:
            return Declined(str(error.get("decline_code") or error.get("code") or "declined"))
        raise GatewayRejected(
            f"POST {path}: {status} {error.get('type', 'error')}/{error.get('code', '?')}: {error.get('message', '')}",
            status_code=status, error=error,
        )


def _amount(amount: Decimal) -> str:
    # Refuse floats outright: a binary fraction is not an amount of money.
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise TypeError(f"amount must be a finite Decimal, got {amount!r}")
    return format(amount, "f")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error(response: httpx.Response) -> dict[str, Any]:
    body = _json(response)
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {"message": response.text[:200]}


def _id(body: dict[str, Any], prefix: str) -> str:
    value = body.get("id")
    if not isinstance(value, str) or not value.startswith(prefix):
        raise GatewayUnavailable(f"gateway answer without a {prefix}... id: {body!r}")
    return value


# -- simulator helpers for tests and load runs ----------------------------------------

_CONTROL_TIMEOUT = 5.0


def read_ledger(base_url: str) -> dict[str, list[dict[str, Any]]]:
    """Every capture and refund that moved money, in order: {"captures": [...], "refunds": [...]}."""
    response = httpx.get(base_url.rstrip("/") + "/v1/ledger", timeout=_CONTROL_TIMEOUT)
    response.raise_for_status()
    return response.json()


def reset(base_url: str) -> None:
    """Empty the simulator's ledger and forget all idempotency keys (the knobs stay)."""
    httpx.post(base_url.rstrip("/") + "/_sim/reset", timeout=_CONTROL_TIMEOUT).raise_for_status()


def configure(base_url: str, **knobs: float | int | None) -> dict[str, Any]:
    """Change latency_ms / error_rate / hang_seconds (and seed) at runtime; returns the new config."""
    response = httpx.post(base_url.rstrip("/") + "/_sim/config", json=knobs, timeout=_CONTROL_TIMEOUT)
    response.raise_for_status()
    return response.json()
