"""The command line's tokens: a token that does not hold is refused before anything
starts (exit 2, one line, database unchanged); `--as` mints a dev token only while the
dev issuer is the configured one; `starter.py token` mints one. Each case is starter.py's
`main` in a process of its own, forked as in test_starter_bad_input.py with the case's own
environment (Temporal refuses connections there, so a call that got past the checks exits 1,
never 2)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from adapters.identity import TrustSettings, load_trust, mint
from tests.integration.test_starter_bad_input import (  # noqa: F401 - fixtures
    ForkServer, Outcome, argv, fork_server, refusing_port, seeded_database, snapshot,
)
from tests.tokens import SINCE, token_for


@pytest.fixture
def starter(fork_server: ForkServer) -> Callable[..., tuple[Outcome, dict]]:
    """`starter.py ARGS` (forked from the module's fork server, as a process of its own) on a fresh
    copy of the seeded database; gives its outcome and the database after it."""

    def run(args: list[str], seed: Path, folder: Path, port: int, **env: str) -> tuple[Outcome, dict]:
        folder.mkdir(parents=True, exist_ok=True)
        done = fork_server.run(args, seed, folder / "run", port,
                               SETTLEFLOW_DEV_ISSUER_DIR=os.environ["SETTLEFLOW_DEV_ISSUER_DIR"], **env)
        return done, done.database

    return run


def token_case(case: str) -> str:
    settings = load_trust()
    stranger = ec.generate_private_key(ec.SECP256R1())
    long = timedelta(days=365 * 500)
    return {
        "forged signature": mint(settings, "customer", "c-1", now=SINCE, lifetime=long, private_key=stranger),
        "other issuer": mint(settings, "customer", "c-1", now=SINCE, lifetime=long, issuer="someone-else"),
        "wrong audience": mint(settings, "customer", "c-1", now=SINCE, lifetime=long, audience="not-settleflow"),
        "expired": mint(settings, "customer", "c-1", now=SINCE, lifetime=timedelta(minutes=15)),
        "not a token at all": "hello",
    }[case]


@pytest.mark.parametrize("case, words", [
    ("forged signature", "signature"), ("other issuer", "issuer"), ("wrong audience", "audience"),
    ("expired", "expired"), ("not a token at all", "cannot be read"),
])
def test_a_token_that_does_not_hold_exits_2_before_anything_starts(
    starter, case, words, seeded_database, refusing_port, tmp_path
):
    before = snapshot(seeded_database)
    done, after = starter(argv("refund", {"--as": None, "--token": token_case(case)}), seeded_database,
                          tmp_path, refusing_port)
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.count("\n") == 1 and "token refused" in done.stderr and words in done.stderr, done.stderr
    assert after == before


def test_a_valid_token_of_a_role_that_may_not_use_the_verb_exits_2(starter, seeded_database, refusing_port, tmp_path):
    done, _ = starter(argv("refund", {"--as": None}), seeded_database, tmp_path, refusing_port,
                      SETTLEFLOW_TOKEN=token_for("warehouse:w-1"))
    assert done.returncode == 2 and "a warehouse may not refund" in done.stderr, done


@pytest.mark.parametrize("token, words", [
    ("warehouse:w-1", "a warehouse may not place-order"),
    ("customer:c-2", "may place orders only as c-2, not as c-1"),  # another customer's name
])
def test_an_order_is_placed_only_by_its_customer_or_support_else_exit_2(
    starter, token, words, seeded_database, refusing_port, tmp_path
):
    done, _ = starter(argv("place-order", {"--customer": "c-1", "--token": token_for(token)}),
                      seeded_database, tmp_path, refusing_port)
    assert done.returncode == 2 and words in done.stderr and done.stderr.count("\n") == 1, done
    done, _ = starter(argv("place-order", {"--customer": "c-1", "--token": token_for("support:sam")}),
                      seeded_database, tmp_path / "support", refusing_port)
    assert done.returncode == 1 and "cannot reach Temporal" in done.stderr, done  # support may


def test_as_naming_someone_other_than_the_token_exits_2(starter, seeded_database, refusing_port, tmp_path):
    done, _ = starter(argv("refund", {"--as": "customer:c-1", "--token": token_for("customer:c-2")}),
                      seeded_database, tmp_path, refusing_port)
    assert done.returncode == 2 and "the token is customer:c-2's" in done.stderr, done


def test_a_valid_token_gets_past_the_checks(starter, seeded_database, refusing_port, tmp_path):
    done, _ = starter(argv("refund", {"--as": None, "--token": token_for("customer:c-1")}),
                      seeded_database, tmp_path, refusing_port)
    assert done.returncode == 1 and "cannot reach Temporal" in done.stderr, done  # it got as far as Temporal


def test_with_production_keys_as_is_refused_and_dev_tokens_do_not_verify(starter, seeded_database, refusing_port, tmp_path):
    production = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "idp.pem"
    pem.write_bytes(production.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    prod = {"SETTLEFLOW_TOKEN_KEYS": str(pem), "SETTLEFLOW_TOKEN_ISSUER": "https://idp.example",
            "SETTLEFLOW_PAYLOAD_KEYS": os.environ["SETTLEFLOW_PAYLOAD_KEYS"],  # production's, say
            "SETTLEFLOW_PAYLOAD_KEY_ID": os.environ["SETTLEFLOW_PAYLOAD_KEY_ID"]}

    by_as, _ = starter(argv("refund"), seeded_database, tmp_path / "a", refusing_port, **prod)
    assert by_as.returncode == 2 and "production keys are configured" in by_as.stderr, by_as
    dev, _ = starter(argv("refund", {"--as": None, "--token": token_for("customer:c-1")}), seeded_database,
                     tmp_path / "b", refusing_port, **prod)
    assert dev.returncode == 2 and "token refused" in dev.stderr, dev
    minted = starter(["token", "--role", "support", "--id", "sam"], seeded_database, tmp_path / "c",
                     refusing_port, **prod)[0]
    assert minted.returncode == 2 and "production keys" in minted.stderr
    real = mint(TrustSettings(token_issuer="https://idp.example"), "customer", "c-1", now=SINCE,
                lifetime=timedelta(days=365 * 500), private_key=production)
    good, _ = starter(argv("refund", {"--as": None, "--token": real}), seeded_database, tmp_path / "d",
                      refusing_port, **prod)
    assert good.returncode == 1 and "cannot reach Temporal" in good.stderr, good
    forgot = {k: v for k, v in prod.items() if not k.startswith("SETTLEFLOW_PAYLOAD_KEY")}
    no_keys, _ = starter(argv("refund", {"--as": None, "--token": real}), seeded_database, tmp_path / "e",
                         refusing_port, **forgot)
    assert no_keys.returncode == 2 and no_keys.stderr.startswith(
        "starter.py: error: SETTLEFLOW_TOKEN_KEYS is set but SETTLEFLOW_PAYLOAD_KEYS is not"), no_keys
    assert len(no_keys.stderr.strip().splitlines()) == 1


def test_beside_production_payload_keys_without_token_keys_the_dev_issuer_neither_mints_nor_verifies(
    starter, seeded_database, refusing_port, tmp_path,
):
    forgot = {"SETTLEFLOW_PAYLOAD_KEYS": os.environ["SETTLEFLOW_PAYLOAD_KEYS"],  # production's, say
              "SETTLEFLOW_PAYLOAD_KEY_ID": os.environ["SETTLEFLOW_PAYLOAD_KEY_ID"], "SETTLEFLOW_ALLOW_DEV_ISSUER": "0"}

    by_as, _ = starter(argv("refund"), seeded_database, tmp_path / "a", refusing_port, **forgot)
    assert by_as.returncode == 2 and "SETTLEFLOW_TOKEN_KEYS is not" in by_as.stderr, by_as
    assert len(by_as.stderr.strip().splitlines()) == 1
    dev, _ = starter(argv("refund", {"--as": None, "--token": token_for("customer:c-1")}), seeded_database,
                     tmp_path / "b", refusing_port, **forgot)
    assert dev.returncode == 2 and "token refused" in dev.stderr, dev
    minted = starter(["token", "--role", "support", "--id", "sam"], seeded_database, tmp_path / "c",
                     refusing_port, **forgot)[0]
    assert minted.returncode == 2 and "SETTLEFLOW_TOKEN_KEYS is not" in minted.stderr and minted.stdout == ""


def test_the_token_verb_mints_a_short_lived_dev_token_for_the_role_and_id(starter, seeded_database, refusing_port, tmp_path):
    done, _ = starter(["token", "--role", "fraud_analyst", "--id", "eve"], seeded_database, tmp_path, refusing_port)
    assert done.returncode == 0, done
    from adapters.identity import verifier
    from datetime import datetime, timezone

    token = done.stdout.strip()
    assert str(verifier().verify(token, datetime.now(timezone.utc))) == "fraud_analyst:eve"
    with pytest.raises(Exception, match="expired"):
        verifier().verify(token, datetime.now(timezone.utc) + timedelta(minutes=16))
