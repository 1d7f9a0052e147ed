"""The payments port's contract, run against two providers with the same tests:

    simulator   `python -m simulators.stripe_sim` as its own process (always)
    stripe      Stripe's test mode, when STRIPE_API_KEY holds a test-mode key (sk_test_...)

Without the key the Stripe half is skipped, and the skip says so. A live key is
refused: the suite moves money.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from adapters.settings import SIMULATOR_API_KEY
from adapters.stripe_gateway import StripeGateway
from domain.payments.gateway import GatewayUnavailable
from tests.gateway_process import gateway_simulator

T = TypeVar("T")

# On Stripe, search is eventually consistent (usually under a minute); the simulator is immediate.
SEARCH_LAG_SECONDS = {"simulator": 0.0, "stripe": 120.0}


class Provider:
    def __init__(self, name: str, gateway: StripeGateway) -> None:
        self.name = name
        self.gateway = gateway
        self.run = uuid.uuid4().hex[:12]  # business ids of this run: Stripe keeps everything

    def business_id(self, what: str) -> str:
        return f"contract-{self.run}-{what}-{uuid.uuid4().hex[:8]}"

    def eventually(self, ask: Callable[[], T], until: Callable[[T], bool]) -> T:
        """Ask until the answer satisfies `until` (at once on the simulator)."""
        deadline = time.monotonic() + SEARCH_LAG_SECONDS[self.name]
        while True:
            try:
                answer = ask()
                if until(answer) or time.monotonic() > deadline:
                    return answer
            except GatewayUnavailable:
                if time.monotonic() > deadline:
                    raise
            time.sleep(2)


@pytest.fixture(scope="session")
def simulator_url() -> Iterator[str]:
    with gateway_simulator("--hang-seconds", "1.0") as url:
        yield url


@pytest.fixture(scope="session", params=["simulator", "stripe"])
def provider(request: pytest.FixtureRequest) -> Iterator[Provider]:
    if request.param == "simulator":
        gateway = StripeGateway(SIMULATOR_API_KEY, request.getfixturevalue("simulator_url"), timeout_seconds=5.0)
    else:
        key = os.environ.get("STRIPE_API_KEY", "")
        if not key:
            pytest.skip("STRIPE_API_KEY is not set: the contract ran against the simulator only "
                        "(set a test-mode key, sk_test_..., to run it against Stripe too)")
        if not key.startswith(("sk_test_", "rk_test_")):
            pytest.fail("STRIPE_API_KEY is not a test-mode key: the contract suite moves money, use sk_test_...")
        gateway = StripeGateway(key, None, timeout_seconds=30.0)
    yield Provider(request.param, gateway)
    gateway.close()
