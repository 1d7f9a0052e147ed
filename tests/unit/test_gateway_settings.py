"""The gateway's configuration: the simulator with no settings at all, Stripe by configuration
only, and the secret key never shown."""

from __future__ import annotations

import pytest

from adapters.settings import SIMULATOR_API_KEY, Settings
from adapters.stripe_gateway import STRIPE_API, StripeGateway


def test_with_no_settings_the_gateway_is_the_local_simulator_with_its_key(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    monkeypatch.delenv("SETTLEFLOW_GATEWAY_URL", raising=False)
    settings = Settings()

    assert settings.stripe_api_key.get_secret_value() == SIMULATOR_API_KEY
    assert settings.gateway_url == "http://127.0.0.1:8099"


def test_the_secret_key_is_never_shown_by_the_settings(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_0123456789secret")
    settings = Settings()

    assert settings.stripe_api_key.get_secret_value() == "sk_test_0123456789secret"
    for shown in (repr(settings), str(settings), str(settings.model_dump()), settings.model_dump_json()):
        assert "0123456789secret" not in shown


@pytest.mark.parametrize(("base_url", "talks_to"), [
    ("http://127.0.0.1:8099/", "http://127.0.0.1:8099"), ("https://api.stripe.com", STRIPE_API), ("", STRIPE_API),
    (None, STRIPE_API),
])
def test_switching_to_stripe_is_configuration_only(base_url, talks_to):
    gateway = StripeGateway("sk_test_x", base_url)
    try:
        assert gateway.api_base == talks_to
    finally:
        gateway.close()


def test_a_gateway_without_a_key_is_refused_at_start():
    with pytest.raises(ValueError, match="STRIPE_API_KEY"):
        StripeGateway("", "http://127.0.0.1:8099")
