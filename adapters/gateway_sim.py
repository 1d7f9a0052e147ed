"""Payment-gateway simulator: a Stripe-shaped card processor in its own process.

    python -m adapters.gateway_sim --port 8099 [--host 127.0.0.1] [--latency-ms 0]
        [--error-rate 0.0] [--seed S] [--hang-seconds 3.0]

Money endpoints (both require an `Idempotency-Key` header):
    POST /v1/captures  {"amount": "120.00", "currency": "EUR", "card_token": "tok_visa", "reference": "order-1"}
    POST /v1/refunds   {"charge": "ch_...", "amount": "20.00", "currency": "EUR", "reference": "refund-1"}
Reads: GET /v1/captures/{id}, GET /v1/captures/{id}/refunds, GET /v1/ledger, GET /health.
Control: GET|POST /_sim/config, POST /_sim/reset.

Amounts are decimal strings ("120.00"); JSON numbers are refused, so no amount ever
passes through a binary float.

Idempotency works as Stripe's: a key is scoped to its endpoint and bound to the
parameters of its first request (amounts compared by value: "10.0" is "10.00"); other
parameters under the same key get 422. A final answer (201, 402, 400, 404) is stored
and replayed verbatim; transient answers (503, hangs) are not, so retrying with the
same key is always safe. Requests refused before reaching the ledger (missing key,
malformed body) are not stored either, again as Stripe: the caller may fix the body
and reuse the key.

Behaviour by card token (a refund uses the token of the capture it refunds):
    tok_visa              succeeds
    tok_refund_declined   captures succeed, refunds decline (402 refund_declined / card_closed)
    tok_capture_declined  capture declines (402 card_declined / insufficient_funds)
    tok_card_stolen, tok_card_lost, tok_fraudulent
                          capture declines with decline_code card_stolen / card_lost / fraudulent
    tok_flaky             503 for the first two attempts of each key, then as tok_visa
    tok_timeout           processed and stored at once, but the first attempt of each key
                          answers only after `hang_seconds`; a retry gets the stored answer
    tok_unavailable       always 503
    tok_refunds_unavailable  captures succeed, refunds always 503 (a gateway down for a day)
    any other token       succeeds like tok_visa (the simulator has no card vault)

Knobs for load tests (also settable at runtime through /_sim/config): `latency_ms` delays
every /v1 answer, `error_rate` answers 503 to that share of money requests before they
touch anything (seeded RNG), `hang_seconds` is the tok_timeout delay. Reads and control
endpoints never fail on purpose, so tests can always observe the ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import secrets
import threading
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

CAPTURE_DECLINES = {
    "tok_capture_declined": "insufficient_funds",
    "tok_card_stolen": "card_stolen",
    "tok_card_lost": "card_lost",
    "tok_fraudulent": "fraudulent",
}
REFUND_DECLINED_TOKEN = "tok_refund_declined"
REFUND_DECLINE_CODE = "card_closed"
FLAKY_TOKEN, FLAKY_FAILURES = "tok_flaky", 2
TIMEOUT_TOKEN = "tok_timeout"
UNAVAILABLE_TOKEN = "tok_unavailable"
REFUNDS_UNAVAILABLE_TOKEN = "tok_refunds_unavailable"  # captures work, refunds always 503

KNOBS = ("latency_ms", "error_rate", "hang_seconds")

# A plain decimal: no sign, exponent, NaN or Infinity.
_AMOUNT = re.compile(r"[0-9]+(\.[0-9]+)?")
_CURRENCY = re.compile(r"[A-Za-z]{3}")

Answer = tuple[int, dict[str, Any]]


@dataclass
class SimConfig:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    hang_seconds: float = 3.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.hang_seconds < 0:
            raise ValueError("latency_ms and hang_seconds must be >= 0")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")


def _error(status: int, type_: str, code: str, message: str, **extra: str) -> Answer:
    return status, {"error": {"type": type_, "code": code, "message": message, **extra}}


def _unavailable(why: str) -> Answer:
    return _error(503, "api_error", "gateway_unavailable", why)


class _Invalid(Exception):
    """The request never reached the ledger: answered 400 and not stored under the key."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.answer = _error(400, "invalid_request_error", code, message)


def _amount(value: Any) -> Decimal:
    if not isinstance(value, str) or not _AMOUNT.fullmatch(value):
        raise _Invalid("invalid_amount", f'amount must be a decimal string like "120.00", got {value!r}')
    amount = Decimal(value)
    if amount <= 0:
        raise _Invalid("invalid_amount", f"amount must be positive, got {value!r}")
    return amount


def _currency(value: Any) -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise _Invalid("invalid_currency", f"currency must be a 3-letter code, got {value!r}")
    return value.upper()


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid("invalid_parameter", f"{name} must be a non-empty string")
    return value


def _params(body: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _Invalid("invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise _Invalid("parameter_unknown", f"unknown parameter(s): {', '.join(unknown)}")
    missing = [name for name in fields if name not in body]
    if missing:
        raise _Invalid("parameter_missing", f"missing parameter(s): {', '.join(missing)}")
    return {name: _field(name, body[name]) for name in fields}


def _field(name: str, value: Any) -> Any:
    if name == "amount":
        return _amount(value)
    if name == "currency":
        return _currency(value)
    return _text(name, value)


@dataclass
class _Charge:
    view: dict[str, Any]  # the capture object as the API shows it
    amount: Decimal
    currency: str
    card_token: str
    refunded: Decimal
    refund_ids: list[str]


@dataclass
class _KeyRecord:
    params: dict[str, Any]  # the first request's parameters: the key is bound to them
    attempts: int = 0
    answer: Answer | None = None


@dataclass(frozen=True)
class _Outcome:
    status: int
    body: dict[str, Any]
    hang: bool = False
    replayed: bool = False


class Simulator:
    """The in-memory gateway. All state sits behind one lock; no critical section awaits."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._rng = random.Random(self.config.seed)  # reseeded: runs stay reproducible
            self._charges: dict[str, _Charge] = {}
            self._refunds: dict[str, dict[str, Any]] = {}
            self._keys: dict[tuple[str, str], _KeyRecord] = {}

    def configure(self, changes: dict[str, Any]) -> None:
        with self._lock:
            self.config = replace(self.config, **changes)  # __post_init__ validates
            if "seed" in changes:
                self._rng = random.Random(self.config.seed)

    def roll_error(self) -> bool:
        with self._lock:
            return self._rng.random() < self.config.error_rate

    # -- money ---------------------------------------------------------------------

    def submit(self, endpoint: str, key: str, params: dict[str, Any]) -> _Outcome:
        """Run one attempt under an idempotency key: replay, refuse, fail transiently, or execute."""
        with self._lock:
            record = self._keys.setdefault((endpoint, key), _KeyRecord(params))
            if record.params != params:
                return _Outcome(*_error(
                    422, "idempotency_error", "idempotency_key_reused",
                    f"Idempotency-Key {key!r} was already used with different parameters on {endpoint}",
                ))
            if record.answer is not None:
                return _Outcome(*record.answer, replayed=True)
            record.attempts += 1
            token = self._card_token(endpoint, record.params)
            if token == UNAVAILABLE_TOKEN or (token == REFUNDS_UNAVAILABLE_TOKEN and endpoint == "refunds"):
                return _Outcome(*_unavailable("the processor for this card is down"))
            if token == FLAKY_TOKEN and record.attempts <= FLAKY_FAILURES:
                return _Outcome(*_unavailable(f"transient failure (attempt {record.attempts})"))
            execute = self._capture if endpoint == "captures" else self._refund
            record.answer = execute(record.params)  # the request the key was bound to
            # Stored before hanging: money has moved even if the caller stops waiting.
            return _Outcome(*record.answer, hang=token == TIMEOUT_TOKEN and record.attempts == 1)

    def _card_token(self, endpoint: str, params: dict[str, Any]) -> str | None:
        if endpoint == "captures":
            return params["card_token"]
        charge = self._charges.get(params["charge"])
        return charge.card_token if charge else None

    def _capture(self, p: dict[str, Any]) -> Answer:
        decline = CAPTURE_DECLINES.get(p["card_token"])
        if decline:
            return _error(402, "card_error", "card_declined", f"The card was declined ({decline}).",
                          decline_code=decline)
        view = {
            "id": "ch_" + secrets.token_hex(12),
            "object": "capture",
            "status": "succeeded",
            "amount": format(p["amount"], "f"),
            "currency": p["currency"],
            "card_token": p["card_token"],
            "reference": p["reference"],
        }
        self._charges[view["id"]] = _Charge(view, p["amount"], p["currency"], p["card_token"], Decimal(0), [])
        return 201, dict(view)

    def _refund(self, p: dict[str, Any]) -> Answer:
        charge = self._charges.get(p["charge"])
        if charge is None:
            return _error(404, "invalid_request_error", "resource_missing", f"No such charge: {p['charge']!r}")
        if p["currency"] != charge.currency:
            return _error(400, "invalid_request_error", "currency_mismatch",
                          f"Refund currency {p['currency']} differs from the charge's {charge.currency}")
        remaining = charge.amount - charge.refunded
        if p["amount"] > remaining:
            return _error(400, "invalid_request_error", "amount_too_large",
                          f"Refund of {p['amount']:f} {p['currency']} is greater than the "
                          f"{remaining:f} {charge.currency} left to refund on {p['charge']}")
        if charge.card_token == REFUND_DECLINED_TOKEN:
            return _error(402, "refund_error", "refund_declined", "The card issuer refused the refund.",
                          decline_code=REFUND_DECLINE_CODE)
        view = {
            "id": "re_" + secrets.token_hex(12),
            "object": "refund",
            "status": "succeeded",
            "charge": p["charge"],
            "amount": format(p["amount"], "f"),
            "currency": p["currency"],
            "reference": p["reference"],
        }
        self._refunds[view["id"]] = view
        charge.refunded += p["amount"]
        charge.refund_ids.append(view["id"])
        return 201, dict(view)

    # -- reads ---------------------------------------------------------------------

    def capture_view(self, charge_id: str) -> dict[str, Any] | None:
        with self._lock:
            charge = self._charges.get(charge_id)
            return dict(charge.view) if charge else None

    def refunds_of(self, charge_id: str) -> list[dict[str, Any]] | None:
        with self._lock:
            charge = self._charges.get(charge_id)
            return [dict(self._refunds[r]) for r in charge.refund_ids] if charge else None

    def ledger(self) -> dict[str, list[dict[str, Any]]]:
        # Only successful captures and refunds are recorded, in creation order: each
        # entry is one movement of money.
        with self._lock:
            return {
                "captures": [dict(c.view) for c in self._charges.values()],
                "refunds": [dict(r) for r in self._refunds.values()],
            }


def create_app(config: SimConfig) -> Starlette:
    """A fresh simulator with its own ledger (the config is copied, not shared)."""
    sim = Simulator(replace(config))

    async def latency() -> None:
        if sim.config.latency_ms > 0:
            await asyncio.sleep(sim.config.latency_ms / 1000)

    async def money(request: Request, endpoint: str, fields: tuple[str, ...]) -> JSONResponse:
        await latency()
        if sim.roll_error():
            return JSONResponse(_unavailable("injected failure (error_rate)")[1], 503)
        key = request.headers.get("Idempotency-Key", "")
        try:
            if not key:
                raise _Invalid("idempotency_key_missing", "the Idempotency-Key header is required")
            try:
                body = await request.json()
            except ValueError:
                raise _Invalid("invalid_body", "the body must be JSON") from None
            params = _params(body, fields)
        except _Invalid as invalid:
            return JSONResponse(invalid.answer[1], invalid.answer[0])
        outcome = sim.submit(endpoint, key, params)
        if outcome.hang:
            await asyncio.sleep(sim.config.hang_seconds)
        headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
        return JSONResponse(outcome.body, outcome.status, headers=headers)

    async def create_capture(request: Request) -> JSONResponse:
        return await money(request, "captures", ("amount", "currency", "card_token", "reference"))

    async def create_refund(request: Request) -> JSONResponse:
        return await money(request, "refunds", ("charge", "amount", "currency", "reference"))

    def missing(charge_id: str) -> JSONResponse:
        status, body = _error(404, "invalid_request_error", "resource_missing", f"No such charge: {charge_id!r}")
        return JSONResponse(body, status)

    async def get_capture(request: Request) -> JSONResponse:
        await latency()
        view = sim.capture_view(request.path_params["id"])
        return JSONResponse(view) if view else missing(request.path_params["id"])

    async def list_refunds(request: Request) -> JSONResponse:
        await latency()
        refunds = sim.refunds_of(request.path_params["id"])
        if refunds is None:
            return missing(request.path_params["id"])
        return JSONResponse({"object": "list", "data": refunds})

    async def ledger(request: Request) -> JSONResponse:
        await latency()
        return JSONResponse(sim.ledger())

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def get_config(request: Request) -> JSONResponse:
        return JSONResponse(asdict(sim.config))

    async def set_config(request: Request) -> JSONResponse:
        try:
            changes = await request.json()
        except ValueError:
            changes = None
        problem = _config_problem(changes)
        if problem is None:
            try:
                sim.configure(changes)
            except ValueError as exc:
                problem = str(exc)
        if problem:
            status, body = _error(400, "invalid_request_error", "invalid_config", problem)
            return JSONResponse(body, status)
        return JSONResponse(asdict(sim.config))

    async def reset(request: Request) -> JSONResponse:
        sim.reset()
        return JSONResponse({"reset": True})

    app = Starlette(routes=[
        Route("/v1/captures", create_capture, methods=["POST"]),
        Route("/v1/captures/{id}", get_capture, methods=["GET"]),
        Route("/v1/captures/{id}/refunds", list_refunds, methods=["GET"]),
        Route("/v1/refunds", create_refund, methods=["POST"]),
        Route("/v1/ledger", ledger, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/_sim/config", get_config, methods=["GET"]),
        Route("/_sim/config", set_config, methods=["POST"]),
        Route("/_sim/reset", reset, methods=["POST"]),
    ])
    app.state.simulator = sim  # for in-process tests
    return app


def _config_problem(changes: Any) -> str | None:
    """Why a /_sim/config body is unacceptable, or None. `seed` (int or null) reseeds the RNG."""
    if not isinstance(changes, dict):
        return "the body must be a JSON object"
    unknown = sorted(set(changes) - {*KNOBS, "seed"})
    if unknown:
        return f"unknown setting(s): {', '.join(unknown)}"
    for name in KNOBS:
        value = changes.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number"
    seed = changes.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        return "seed must be an integer or null"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m adapters.gateway_sim", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--hang-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    try:
        config = SimConfig(args.latency_ms, args.error_rate, args.hang_seconds, args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    # A short graceful shutdown: hung tok_timeout answers must not hold up a terminate.
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
