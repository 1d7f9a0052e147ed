"""Test-only control of a running Stripe simulator: its ledger, a reset, its knobs.

Tests, chaos and bench use these; they are not Stripe's API and need no key.
"""

from __future__ import annotations

from typing import Any

import httpx

_CONTROL_TIMEOUT = 5.0


def read_ledger(base_url: str) -> dict[str, list[dict[str, Any]]]:
    """Every capture and refund that moved money, oldest first: {"captures": [...], "refunds": [...]}.

    A capture: id (the PaymentIntent, pi_...), charge (ch_...), amount (decimal string in
    the currency's units, "120.00"), minor (Stripe's integer), currency ("EUR"), card_token,
    reference (metadata order_id), metadata, created. A refund: id (re_...), charge (the
    PaymentIntent it refunds), amount, minor, currency, reference (metadata refund_id),
    metadata, created.
    """
    response = httpx.get(base_url.rstrip("/") + "/_sim/ledger", timeout=_CONTROL_TIMEOUT)
    response.raise_for_status()
    return response.json()


def read_calls(base_url: str) -> list[str]:
    """The API requests the simulator served (its last 10,000), oldest first: "GET /v1/refunds"."""
    response = httpx.get(base_url.rstrip("/") + "/_sim/calls", timeout=_CONTROL_TIMEOUT)
    response.raise_for_status()
    return response.json()["calls"]


def reset(base_url: str) -> None:
    """Empty the simulated account and forget all idempotency keys (the knobs stay)."""
    httpx.post(base_url.rstrip("/") + "/_sim/reset", timeout=_CONTROL_TIMEOUT).raise_for_status()


def configure(base_url: str, **knobs: float | int | str | None) -> dict[str, Any]:
    """Change latency_ms / error_rate / hang_seconds / seed / frozen_time (epoch seconds or None) /
    settlement_currency
    at runtime; returns the new config."""
    response = httpx.post(base_url.rstrip("/") + "/_sim/config", json=knobs, timeout=_CONTROL_TIMEOUT)
    response.raise_for_status()
    return response.json()


def one_time_token(base_url: str, card: str = "tok_visa") -> str:
    """A card token good for one use (as Stripe.js makes them), behaving as the test card `card`."""
    response = httpx.post(base_url.rstrip("/") + "/_sim/tokens", json={"card": card}, timeout=_CONTROL_TIMEOUT)
    response.raise_for_status()
    return response.json()["id"]


def fail_next(base_url: str, request: str, times: int = 1) -> None:
    """The next `times` POSTs of one kind (payment_intents, refunds, payment_methods, customers,
    attach) answer 503 before anything runs."""
    response = httpx.post(base_url.rstrip("/") + "/_sim/fail_next", json={"request": request, "times": times},
                          timeout=_CONTROL_TIMEOUT)
    response.raise_for_status()
