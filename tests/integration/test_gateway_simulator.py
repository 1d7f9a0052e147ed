"""The gateway simulator, run as a real process, driven through HttpPaymentGateway.

Every rule is checked on the simulator's ledger: the list of captures and refunds that
actually moved money.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from adapters.gateway_client import (
    Captured,
    Declined,
    GatewayRejected,
    GatewayUnavailable,
    HttpPaymentGateway,
    Refunded,
    configure,
    read_ledger,
    reset,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HANG_SECONDS = 1.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("gateway_sim") / "sim.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "adapters.gateway_sim", "--port", str(port),
             "--hang-seconds", str(HANG_SECONDS)],
            cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_healthy(url, process, log_path)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"simulator exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"simulator did not become healthy:\n{log_path.read_text()}")


@pytest.fixture(autouse=True)
def clean_simulator(base_url: str) -> None:
    # Each test starts from an empty ledger and default knobs, so ledger counts are exact.
    reset(base_url)
    configure(base_url, latency_ms=0, error_rate=0.0, hang_seconds=HANG_SECONDS)


@pytest.fixture
def gateway(base_url: str) -> Iterator[HttpPaymentGateway]:
    with HttpPaymentGateway(base_url, timeout_seconds=5.0) as client:
        yield client


def _key() -> str:
    return uuid.uuid4().hex


def _capture(gateway: HttpPaymentGateway, token: str = "tok_visa", amount: str = "120.00",
             key: str | None = None, currency: str = "EUR") -> Captured | Declined:
    return gateway.capture(idempotency_key=key or _key(), amount=Decimal(amount), currency=currency,
                           card_token=token, reference="order-1")


def _refund(gateway: HttpPaymentGateway, charge: str, amount: str, key: str | None = None,
            currency: str = "EUR") -> Refunded | Declined:
    return gateway.refund(idempotency_key=key or _key(), charge=charge, amount=Decimal(amount),
                          currency=currency, reference="refund-1")


def test_capture_moves_money_and_can_be_read_back(gateway: HttpPaymentGateway, base_url: str) -> None:
    captured = _capture(gateway, amount="120.00")

    assert isinstance(captured, Captured) and captured.reference.startswith("ch_")
    shown = httpx.get(f"{base_url}/v1/captures/{captured.reference}").json()
    assert shown["amount"] == "120.00" and shown["status"] == "succeeded"
    assert read_ledger(base_url)["captures"] == [shown]


def test_same_idempotency_key_moves_money_once(gateway: HttpPaymentGateway, base_url: str) -> None:
    key = _key()
    first, second = _capture(gateway, key=key), _capture(gateway, key=key)
    refund_key = _key()
    refunds = [_refund(gateway, first.reference, "20.00", key=refund_key) for _ in range(2)]

    assert first == second
    assert refunds[0] == refunds[1]
    ledger = read_ledger(base_url)
    assert [c["id"] for c in ledger["captures"]] == [first.reference]
    assert [r["id"] for r in ledger["refunds"]] == [refunds[0].reference]


def test_replay_returns_the_exact_stored_answer(base_url: str) -> None:
    body = {"amount": "5.00", "currency": "EUR", "card_token": "tok_capture_declined", "reference": "o"}
    headers = {"Idempotency-Key": _key()}
    first = httpx.post(f"{base_url}/v1/captures", json=body, headers=headers)
    again = httpx.post(f"{base_url}/v1/captures", json=body, headers=headers)

    assert (first.status_code, first.content) == (again.status_code, again.content) == (402, first.content)
    assert again.headers["Idempotent-Replayed"] == "true"


def test_concurrent_retries_with_one_key_move_money_once(gateway: HttpPaymentGateway, base_url: str) -> None:
    key = _key()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: _capture(gateway, key=key), range(16)))

    assert len(set(results)) == 1
    assert len(read_ledger(base_url)["captures"]) == 1


def test_same_key_with_different_body_is_refused(gateway: HttpPaymentGateway, base_url: str) -> None:
    key = _key()
    _capture(gateway, key=key, amount="10.00")

    with pytest.raises(GatewayRejected) as refused:
        _capture(gateway, key=key, amount="11.00")

    assert refused.value.status_code == 422
    assert refused.value.error["type"] == "idempotency_error"
    assert len(read_ledger(base_url)["captures"]) == 1


def test_idempotency_keys_are_scoped_per_endpoint(gateway: HttpPaymentGateway, base_url: str) -> None:
    key = _key()
    captured = _capture(gateway, key=key)

    refunded = _refund(gateway, captured.reference, "1.00", key=key)

    assert isinstance(refunded, Refunded)
    assert len(read_ledger(base_url)["refunds"]) == 1


def test_flaky_card_fails_twice_then_succeeds_with_one_capture(gateway: HttpPaymentGateway, base_url: str) -> None:
    key = _key()
    for _ in range(2):
        with pytest.raises(GatewayUnavailable):
            _capture(gateway, token="tok_flaky", key=key)
    assert read_ledger(base_url)["captures"] == []

    captured = _capture(gateway, token="tok_flaky", key=key)

    assert isinstance(captured, Captured)
    assert _capture(gateway, token="tok_flaky", key=key) == captured
    assert [c["id"] for c in read_ledger(base_url)["captures"]] == [captured.reference]


def test_timeout_after_charge_then_retry_returns_same_capture(base_url: str) -> None:
    key = _key()
    with HttpPaymentGateway(base_url, timeout_seconds=0.5) as impatient:
        with pytest.raises(GatewayUnavailable):
            _capture(impatient, token="tok_timeout", key=key)
        # The gateway charged the card even though the client stopped waiting.
        charged = read_ledger(base_url)["captures"]
        assert len(charged) == 1

        started = time.monotonic()
        retried = _capture(impatient, token="tok_timeout", key=key)

    assert retried == Captured(charged[0]["id"])
    assert time.monotonic() - started < 0.5  # the stored answer comes back at once
    assert len(read_ledger(base_url)["captures"]) == 1


def test_refund_timeout_then_retry_returns_same_refund(base_url: str) -> None:
    capture_key, refund_key = _key(), _key()
    with HttpPaymentGateway(base_url, timeout_seconds=0.5) as impatient:
        with pytest.raises(GatewayUnavailable):
            _capture(impatient, token="tok_timeout", key=capture_key)
        charge = _capture(impatient, token="tok_timeout", key=capture_key).reference
        with pytest.raises(GatewayUnavailable):
            _refund(impatient, charge, "20.00", key=refund_key)
        retried = _refund(impatient, charge, "20.00", key=refund_key)

    assert [r["id"] for r in read_ledger(base_url)["refunds"]] == [retried.reference]


def test_refund_declined_card_moves_no_money(gateway: HttpPaymentGateway, base_url: str) -> None:
    captured = _capture(gateway, token="tok_refund_declined")

    declined = _refund(gateway, captured.reference, "20.00")

    assert isinstance(captured, Captured)
    assert declined == Declined("card_closed")
    assert read_ledger(base_url)["refunds"] == []


def test_refund_above_remaining_amount_is_refused(gateway: HttpPaymentGateway, base_url: str) -> None:
    charge = _capture(gateway, amount="100.00").reference
    assert isinstance(_refund(gateway, charge, "60.00"), Refunded)

    with pytest.raises(GatewayRejected) as too_much:
        _refund(gateway, charge, "40.01")
    assert too_much.value.code == "amount_too_large"

    assert isinstance(_refund(gateway, charge, "40.00"), Refunded)
    refunds = httpx.get(f"{base_url}/v1/captures/{charge}/refunds").json()["data"]
    assert sum(Decimal(r["amount"]) for r in refunds) == Decimal("100.00")
    assert read_ledger(base_url)["refunds"] == refunds


def test_refund_in_another_currency_is_refused(gateway: HttpPaymentGateway, base_url: str) -> None:
    charge = _capture(gateway, currency="EUR").reference

    with pytest.raises(GatewayRejected) as refused:
        _refund(gateway, charge, "1.00", currency="USD")

    assert refused.value.status_code == 400
    assert read_ledger(base_url)["refunds"] == []


def test_refund_of_unknown_charge_is_refused(gateway: HttpPaymentGateway) -> None:
    with pytest.raises(GatewayRejected) as refused:
        _refund(gateway, "ch_doesnotexist", "1.00")

    assert refused.value.status_code == 404


@pytest.mark.parametrize(("token", "decline_code"), [
    ("tok_capture_declined", "insufficient_funds"),
    ("tok_card_stolen", "card_stolen"),
    ("tok_card_lost", "card_lost"),
    ("tok_fraudulent", "fraudulent"),
])
def test_hard_decline_tokens(gateway: HttpPaymentGateway, base_url: str, token: str, decline_code: str) -> None:
    key = _key()

    assert _capture(gateway, token=token, key=key) == Declined(decline_code)
    assert _capture(gateway, token=token, key=key) == Declined(decline_code)  # a decline is final
    assert read_ledger(base_url)["captures"] == []


def test_unknown_tokens_succeed_like_visa(gateway: HttpPaymentGateway) -> None:
    assert isinstance(_capture(gateway, token="tok_mastercard"), Captured)


def test_unavailable_card_always_503(gateway: HttpPaymentGateway, base_url: str) -> None:
    key = _key()
    for _ in range(5):
        with pytest.raises(GatewayUnavailable, match="503"):
            _capture(gateway, token="tok_unavailable", key=key)

    assert read_ledger(base_url)["captures"] == []


def test_error_rate_knob_injects_503s(gateway: HttpPaymentGateway, base_url: str) -> None:
    configure(base_url, error_rate=0.5, seed=7)
    keys = [_key() for _ in range(30)]
    failures = 0
    for key in keys:
        while True:  # retry with the same key, as Temporal would
            try:
                _capture(gateway, key=key)
                break
            except GatewayUnavailable:
                failures += 1

    assert 0 < failures  # a fair coin over 30+ throws: seeded, so never flaky
    assert len(read_ledger(base_url)["captures"]) == len(keys)

    configure(base_url, error_rate=1.0)
    with pytest.raises(GatewayUnavailable):
        _capture(gateway, key=keys[0])  # even a stored key: the 503 comes before anything


def test_latency_knob_delays_answers(gateway: HttpPaymentGateway, base_url: str) -> None:
    assert configure(base_url, latency_ms=200)["latency_ms"] == 200
    started = time.monotonic()
    _capture(gateway)

    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize("amount", [120.0, 120, True, None, "12O.00", "1e2", "-5.00", "0.00", "NaN", " 5.00", ""])
def test_amounts_must_be_decimal_strings(base_url: str, amount: object) -> None:
    response = httpx.post(
        f"{base_url}/v1/captures",
        json={"amount": amount, "currency": "EUR", "card_token": "tok_visa", "reference": "o"},
        headers={"Idempotency-Key": _key()},
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_amount"
    assert read_ledger(base_url)["captures"] == []


def test_client_refuses_float_amounts(gateway: HttpPaymentGateway) -> None:
    with pytest.raises(TypeError):
        gateway.capture(idempotency_key=_key(), amount=1.5, currency="EUR",  # type: ignore[arg-type]
                        card_token="tok_visa", reference="o")


def test_requests_without_idempotency_key_are_refused(base_url: str) -> None:
    response = httpx.post(f"{base_url}/v1/captures",
                          json={"amount": "1.00", "currency": "EUR", "card_token": "tok_visa", "reference": "o"})

    assert response.status_code == 400
    assert read_ledger(base_url)["captures"] == []


def test_malformed_request_is_not_stored_so_the_key_can_be_reused(gateway: HttpPaymentGateway, base_url: str) -> None:
    key = _key()
    bad = httpx.post(f"{base_url}/v1/captures", headers={"Idempotency-Key": key},
                     json={"amount": "1.00", "currency": "EURO", "card_token": "tok_visa", "reference": "o"})
    assert bad.status_code == 400

    assert isinstance(_capture(gateway, key=key), Captured)


def test_unreachable_gateway_is_unavailable() -> None:
    with HttpPaymentGateway(f"http://127.0.0.1:{_free_port()}", timeout_seconds=0.5) as nowhere:
        with pytest.raises(GatewayUnavailable):
            _capture(nowhere)
