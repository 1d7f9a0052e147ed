"""Payloads encrypted before they reach Temporal: AES-256-GCM, with a key ring.

Every client, worker, replayer and test builds its data converter with
`data_converter()`: pydantic's converter, this codec, and a failure converter that
moves error messages and stack traces into an (encrypted) payload. Temporal's server,
its operators and the web UI without the codec server see only ciphertext.

Key ring (`SETTLEFLOW_PAYLOAD_KEYS=kid=base64key,kid2=base64key`,
`SETTLEFLOW_PAYLOAD_KEY_ID=kid2`): the active key encrypts; every key in the ring
decrypts, so a key is rotated by adding the new one as active and keeping the old one
until no open flow or kept history needs it. The key id travels in the payload's
metadata. A payload naming a key not in the ring fails (the workflow task, which Temporal
retries until a deployment has the key) with a message naming the key — never silently.
Payloads that were never encrypted (histories recorded before the codec) decode as they are.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

from adapters.identity import TrustSettings, load_trust

ENCODING = b"binary/encrypted"
NONCE_BYTES = 12


class UnknownPayloadKey(Exception):
    """A payload was encrypted with a key this process does not hold."""


def dev_payload_key(settings: TrustSettings) -> bytes:
    """The local payload key under the dev directory, created on first start."""
    from adapters.identity import _write_once

    path = Path(settings.dev_dir) / "payload.key"
    if not path.exists():
        _write_once(path, base64.b64encode(AESGCM.generate_key(bit_length=256)))
    return base64.b64decode(path.read_bytes())


@dataclasses.dataclass(frozen=True)
class KeyRing:
    active: str
    keys: dict[str, bytes]

    @classmethod
    def from_settings(cls, settings: TrustSettings | None = None) -> KeyRing:
        settings = settings or load_trust()
        if settings.payload_keys_missing:
            raise ValueError(settings.payload_keys_missing)
        if not settings.payload_keys:
            return cls("dev", {"dev": dev_payload_key(settings)})
        keys: dict[str, bytes] = {}
        for entry in filter(None, (e.strip() for e in settings.payload_keys.split(","))):
            kid, sep, encoded = entry.partition("=")
            if not sep:
                raise ValueError("SETTLEFLOW_PAYLOAD_KEYS: expected kid=base64key[,kid=base64key]")
            if kid in keys:
                # One id, two keys: whichever won, what the other encrypted could not be read.
                raise ValueError(f"SETTLEFLOW_PAYLOAD_KEYS names key id {kid!r} twice; each key needs its own id")
            key = base64.b64decode(encoded)
            if len(key) != 32:
                raise ValueError(f"payload key {kid!r} is {len(key)} bytes; AES-256 needs 32")
            keys[kid] = key
        active = settings.payload_key_id or next(iter(keys))
        if active not in keys:
            raise ValueError(f"SETTLEFLOW_PAYLOAD_KEY_ID={active!r} is not in SETTLEFLOW_PAYLOAD_KEYS")
        return cls(active, keys)


class EncryptionCodec(PayloadCodec):
    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._ciphers = {kid: AESGCM(key) for kid, key in ring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        kid = self.ring.active
        cipher = self._ciphers[kid]
        out = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), kid.encode())
            out.append(Payload(metadata={"encoding": ENCODING, "encryption-key-id": kid.encode()}, data=nonce + sealed))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                out.append(payload)  # never encrypted: recorded before the codec
                continue
            kid = payload.metadata.get("encryption-key-id", b"").decode()
            cipher = self._ciphers.get(kid)
            if cipher is None:
                raise UnknownPayloadKey(
                    f"payload encrypted with key {kid!r}, which is not in this process's key ring "
                    f"({', '.join(sorted(self._ciphers))}): add it to SETTLEFLOW_PAYLOAD_KEYS"
                )
            data = payload.data
            out.append(Payload.FromString(cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], kid.encode())))
        return out


def data_converter(settings: TrustSettings | None = None) -> DataConverter:
    """The one data converter of settleflow: pydantic + encryption + encrypted failures."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(KeyRing.from_settings(settings)),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
