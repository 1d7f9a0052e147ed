"""The codec server the web UI decodes payloads with: it answers the UI's origin, turns
ciphertext into the payloads people may read and back, and outside dev mode it answers
only support and fraud analysts with a valid token."""

from __future__ import annotations

import base64
import os
import json
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

import subprocess
import sys

from adapters.codec_server import build_app
from adapters.identity import TrustSettings, load_trust, mint
from devstack import ROOT
from tests.tokens import SINCE

UI = "http://localhost:8233"
SECRET = b'{"reason":"arrived damaged","customer_id":"c-1"}'
PLAIN = {"payloads": [{"metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                       "data": base64.b64encode(SECRET).decode()}]}


def test_the_ui_origin_encodes_and_decodes_through_the_same_key_ring_as_the_workers():
    client = TestClient(build_app([UI]))
    sealed = client.post("/encode", json=PLAIN, headers={"Origin": UI})
    assert sealed.status_code == 200 and sealed.headers["access-control-allow-origin"] == UI
    assert SECRET not in base64.b64decode(sealed.json()["payloads"][0]["data"])
    opened = client.post("/decode", content=sealed.content, headers={"Origin": UI})
    assert base64.b64decode(opened.json()["payloads"][0]["data"]) == SECRET
    preflight = client.options("/decode", headers={"Origin": UI, "Access-Control-Request-Method": "POST",
                                                   "Access-Control-Request-Headers": "content-type,x-namespace"})
    assert preflight.status_code == 200
    other = client.options("/decode", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers


def test_a_decoded_history_shows_nobody_the_signed_tokens_it_carries():
    # An analyst's decision (an Update's argument, and the command it becomes) carries her token:
    # read in the web UI, it would let a support agent decide a fraud review as her.
    from google.protobuf import json_format
    from temporalio.api.common.v1 import Payloads

    from adapters.codec import data_converter
    from domain.shared.actor import Actor
    from tests.tokens import token_for
    from workflows.messages import ReviewDecision, ReviewResolution

    eve = token_for("fraud_analyst:eve")
    resolution = ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=Actor.parse("fraud_analyst:eve"),
                                  note="checked the card", token=eve)
    plain = data_converter().payload_converter.to_payloads([resolution, {"credential": eve, "said": f"with {eve}"}])
    client = TestClient(build_app([UI]))
    sealed = client.post("/encode", content=json_format.MessageToJson(Payloads(payloads=plain)))

    opened = client.post("/decode", content=sealed.content, headers={"Origin": UI})

    shown = [json.loads(base64.b64decode(p["data"])) for p in opened.json()["payloads"]]
    assert eve not in opened.text
    assert (shown[0]["token"], shown[0]["note"], shown[0]["reviewer"]) == (
        "(a signed token: not shown)", "checked the card", {"role": "fraud_analyst", "id": "eve"})
    assert shown[1] == {"credential": "(a signed token: not shown)", "said": "with (a signed token: not shown)"}


def test_a_payload_that_is_not_json_and_holds_a_token_is_withheld_whole_rather_than_corrupted():
    from temporalio.api.common.v1 import Payload

    from adapters.codec_server import without_tokens
    from tests.tokens import token_for

    proto = Payload(metadata={"encoding": b"binary/protobuf"}, data=b"\x0a\xff" + token_for("support:sam").encode())
    plain = Payload(metadata={"encoding": b"binary/protobuf"}, data=b"\x0a\x03abc")

    shown = without_tokens(proto)

    assert (shown.metadata["encoding"], json.loads(shown.data)) == (b"json/plain", "(holds a signed token: not shown)")
    assert without_tokens(plain) == plain  # nothing to hide: untouched


def test_outside_dev_mode_only_staff_with_a_valid_token_may_decode(tmp_path: Path):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "idp.pem"
    pem.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    settings = TrustSettings(token_keys=str(pem), token_issuer="https://idp.example",
                             payload_keys=load_trust().payload_keys, payload_key_id=load_trust().payload_key_id)
    client = TestClient(build_app([UI], settings))
    sealed = TestClient(build_app([UI])).post("/encode", json=PLAIN).content

    def bearer(role: str) -> dict:
        token = mint(settings, role, "someone", now=SINCE, lifetime=timedelta(days=365 * 500), private_key=key)
        return {"Authorization": f"Bearer {token}"}

    assert client.post("/decode", content=sealed).status_code == 401
    dev = mint(load_trust(), "support", "sam", now=SINCE, lifetime=timedelta(days=365 * 500))
    assert client.post("/decode", content=sealed, headers={"Authorization": f"Bearer {dev}"}).status_code == 401
    assert client.post("/decode", content=sealed, headers=bearer("customer")).status_code == 403
    for staff in ("support", "fraud_analyst"):
        opened = client.post("/decode", content=sealed, headers=bearer(staff))
        assert opened.status_code == 200
        assert base64.b64decode(json.loads(opened.content)["payloads"][0]["data"]) == SECRET


def test_beside_production_payload_keys_without_token_keys_it_decodes_for_nobody():
    forgot_token_keys = TrustSettings(payload_keys=load_trust().payload_keys,
                                      payload_key_id=load_trust().payload_key_id,
                                      settleflow_allow_dev_issuer=False)
    sealed = TestClient(build_app([UI])).post("/encode", json=PLAIN).content
    dev = mint(load_trust(), "support", "sam", now=SINCE, lifetime=timedelta(days=365 * 500))

    refused = TestClient(build_app([UI], forgot_token_keys)).post(
        "/decode", content=sealed, headers={"Authorization": f"Bearer {dev}"})

    assert refused.status_code == 403 and "SETTLEFLOW_TOKEN_KEYS is not" in refused.json()["error"]


def codec_server(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adapters.codec_server", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_in_dev_mode_it_will_not_listen_beyond_this_machine():
    done = codec_server("--host", "0.0.0.0", "--port", "1")

    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "without SETTLEFLOW_TOKEN_KEYS (dev issuer) the codec server serves this machine only" in line


def test_it_will_not_start_beside_production_payload_keys_without_token_keys():
    done = codec_server("--port", "1", SETTLEFLOW_ALLOW_DEV_ISSUER="0")

    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "SETTLEFLOW_PAYLOAD_KEYS is set but SETTLEFLOW_TOKEN_KEYS is not" in line
