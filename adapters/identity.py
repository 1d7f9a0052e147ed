"""Signed identities: who sent a command from outside, proven by a JWT.

A person or a script gets a token from an issuer (production: your identity provider,
its public keys given as a JWKS file or PEM files; locally: the dev issuer, an ES256
key pair created under `var/dev-issuer/` on first start). The token travels with the
request into the command; the owner's activity verifies it (activities/authorization.py)
before the owner decides:

  signature  against the configured public keys (ES256 or EdDSA only)
  iss, aud   the configured issuer and audience
  exp, nbf   judged at the command's `issued_at` (when the request reached settleflow),
             so a retry hours later gives the same answer
  role, sub  the role claim and the subject become the command's actor

The token is never stored or logged: the guard drops it from the command before the
owner sees it, and `Credential` hides it from repr().
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Literal
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from domain.shared.actor import Actor, Role
from domain.shared.errors import NotAuthorized

ALGORITHMS = ["ES256", "EdDSA"]  # asymmetric only: a verifier can never mint
DEV_ISSUER = "settleflow-dev"
DEV_TOKEN_LIFETIME = timedelta(minutes=15)


class _SettleflowVariables(PydanticBaseSettingsSource):
    """The environment, read by each field's `SETTLEFLOW_*` name only (any case). pydantic-settings
    would also read a field's bare name (`TOKEN_AUDIENCE`, `ROLE_CLAIM`, `PAYLOAD_KEYS`), which
    another service's environment on the same machine may well hold."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads them all at once

    def __call__(self) -> dict[str, Any]:
        wanted = {str(field.validation_alias).upper(): str(field.validation_alias)
                  for field in self.settings_cls.model_fields.values()}
        return {wanted[name.upper()]: value for name, value in os.environ.items() if name.upper() in wanted}


class TrustSettings(BaseSettings):
    """Identity and payload-encryption settings (README "Security")."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _SettleflowVariables(settings_cls)

    # Frozen: load_trust() hands every caller the same instance.
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    # Public keys that verify tokens: a JWKS file (.json) or PEM public keys, comma-separated
    # paths. Unset: the dev issuer under `dev_dir` is the configured one (local use only).
    token_keys: str = Field("", validation_alias="SETTLEFLOW_TOKEN_KEYS")
    token_issuer: str = Field(DEV_ISSUER, validation_alias="SETTLEFLOW_TOKEN_ISSUER")
    token_audience: str = Field("settleflow", validation_alias="SETTLEFLOW_TOKEN_AUDIENCE")
    role_claim: str = Field("role", validation_alias="SETTLEFLOW_TOKEN_ROLE_CLAIM")
    dev_dir: str = Field("var/dev-issuer", validation_alias="SETTLEFLOW_DEV_ISSUER_DIR")
    # Payload encryption key ring (adapters/codec.py): `kid=base64key,kid2=base64key`;
    # the active key encrypts, every key in the ring decrypts. Unset: a dev key under `dev_dir`.
    payload_keys: str = Field("", validation_alias="SETTLEFLOW_PAYLOAD_KEYS")
    payload_key_id: str = Field("", validation_alias="SETTLEFLOW_PAYLOAD_KEY_ID")
    # The dev issuer beside production payload keys: only a test stack asks for it. The field
    # is named as its variable, so no unprefixed `ALLOW_DEV_ISSUER` turns the refusal off.
    settleflow_allow_dev_issuer: bool = Field(False, validation_alias="SETTLEFLOW_ALLOW_DEV_ISSUER")
    # Whether an owner refuses a command no settleflow workflow sealed (adapters/seal.py):
    # `require`, or `log` while activities scheduled by a build before seals still retry.
    command_seals: Literal["require", "log"] = Field("require", validation_alias="SETTLEFLOW_COMMAND_SEALS")

    @field_validator("settleflow_allow_dev_issuer", mode="before")
    @classmethod
    def _only_a_clear_yes(cls, value: object) -> bool:
        """`1`, `true` or `yes` allow it; anything else (empty, `0`, a typo) does not, and no
        value stops a process from starting."""
        return value is True or str(value).strip().lower() in {"1", "true", "yes"}

    @property
    def dev_mode(self) -> bool:
        """The dev issuer is the configured one: `--as ROLE:ID` may mint tokens."""
        return not self.token_keys

    @property
    def dev_issuer_refused(self) -> str:
        """Why the dev issuer may not be trusted here ("" when it may, or is not configured).
        Production payload keys mean production data: a deployment that forgot
        SETTLEFLOW_TOKEN_KEYS would otherwise trust a key anyone on that machine can mint with,
        and its codec server would decrypt for anyone. It fails closed instead."""
        if self.dev_mode and self.payload_keys and not self.settleflow_allow_dev_issuer:
            return (
                "SETTLEFLOW_PAYLOAD_KEYS is set but SETTLEFLOW_TOKEN_KEYS is not: settleflow will not trust its "
                "local dev issuer beside production keys (set SETTLEFLOW_TOKEN_KEYS; "
                "SETTLEFLOW_ALLOW_DEV_ISSUER=1 only for a test stack)"
            )
        return ""

    @property
    def payload_keys_missing(self) -> str:
        """Why payloads may not be encrypted here ("" when they may). Production tokens mean
        production data: without SETTLEFLOW_PAYLOAD_KEYS each machine would encrypt with a dev
        key of its own, which no other host — nor this one in a fresh container — can read,
        and every history written would be lost. It fails closed instead."""
        if self.token_keys and not self.payload_keys:
            return (
                "SETTLEFLOW_TOKEN_KEYS is set but SETTLEFLOW_PAYLOAD_KEYS is not: settleflow will not encrypt "
                "production payloads with this machine's dev key (set SETTLEFLOW_PAYLOAD_KEYS and "
                "SETTLEFLOW_PAYLOAD_KEY_ID; keep dev=<the base64 in the dev issuer's payload.key> in the ring "
                "while histories written under it are still needed)"
            )
        return ""


# The environment variables TrustSettings reads, upper-cased (any case matches): each field's
# SETTLEFLOW_* name, never its bare one (`_SettleflowVariables`).
TRUST_VARIABLES = frozenset(str(field.validation_alias).upper() for field in TrustSettings.model_fields.values())


def load_trust() -> TrustSettings:
    """The environment's trust settings. Every command from outside asks for them (its token is
    verified against them): they are built again only when one of their variables changed, not
    per command (building BaseSettings from the environment cost ~0.5 ms of CPU)."""
    return _trust_from(_trust_environment())


def trust_or_exit_with(program: str) -> TrustSettings:
    """The trust settings, or one line on stderr naming the variable that is wrong, and exit 2."""
    try:
        return load_trust()
    except ValidationError as bad:  # e.g. SETTLEFLOW_COMMAND_SEALS=maybe
        problem = bad.errors()[0]
        where = problem["loc"][0] if problem["loc"] else "trust settings"
        print(f"{program}: error: {where}: {problem['msg']}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _trust_environment() -> tuple[tuple[str, str], ...]:
    """Every environment variable TrustSettings would read, with its value."""
    return tuple(sorted((name, value) for name, value in os.environ.items() if name.upper() in TRUST_VARIABLES))


@lru_cache(maxsize=8)
def _trust_from(_environment: tuple[tuple[str, str], ...]) -> TrustSettings:
    return TrustSettings()


# -- the dev issuer ---------------------------------------------------------------------
def _write_once(path: Path, data: bytes) -> None:
    """Create a file atomically, once: when two processes start together, the first wins
    and the other reads its file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.write_bytes(data)
    os.chmod(temp, 0o600)
    try:
        os.link(temp, path)
    except FileExistsError:
        pass
    finally:
        temp.unlink()


def dev_private_key(settings: TrustSettings) -> ec.EllipticCurvePrivateKey:
    """The dev issuer's signing key, created on first use."""
    path = Path(settings.dev_dir) / "issuer.pem"
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        _write_once(path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def ensure_dev_material(settings: TrustSettings | None = None) -> None:
    """Create the dev issuer key pair (and the dev payload key) on first start."""
    settings = settings or load_trust()
    if settings.dev_mode:
        dev_private_key(settings)
    if not settings.payload_keys:
        from adapters.codec import dev_payload_key

        dev_payload_key(settings)


def mint(
    settings: TrustSettings, role: Role | str, subject: str, *, now: datetime | None = None,
    lifetime: timedelta = DEV_TOKEN_LIFETIME, private_key: object = None, issuer: str | None = None,
    audience: str | None = None, algorithm: str = "ES256",
) -> str:
    """A token signed by the dev issuer (or by `private_key`, for tests of a foreign issuer)."""
    now = now or datetime.now(timezone.utc)
    claims = {
        "iss": issuer if issuer is not None else settings.token_issuer,
        "aud": audience if audience is not None else settings.token_audience,
        "sub": subject,
        settings.role_claim: Role(role).value,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()) - 60,
        "exp": int((now + lifetime).timestamp()),
    }
    return jwt.encode(claims, private_key or dev_private_key(settings), algorithm=algorithm)


# -- verifying ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Verifier:
    settings: TrustSettings
    keys: tuple[object, ...]  # public keys, each tried in turn (a key of another type is skipped)

    @classmethod
    def from_settings(cls, settings: TrustSettings) -> Verifier:
        if settings.dev_issuer_refused:
            return cls(settings, ())  # every token refused (`verify`): fail closed
        if settings.dev_mode:
            return cls(settings, (dev_private_key(settings).public_key(),))
        keys: list[object] = []
        for raw in filter(None, (p.strip() for p in settings.token_keys.split(","))):
            path = Path(raw)
            text = path.read_bytes()
            if path.suffix == ".json":
                keys.extend(jwk.key for jwk in jwt.PyJWKSet.from_dict(json.loads(text)).keys)
            else:
                keys.append(serialization.load_pem_public_key(text))
        # Only keys that can check an ES256 (P-256) or EdDSA signature: an identity provider's key
        # set often lists RSA or symmetric keys too, which PyJWT would fail on with a TypeError.
        usable = tuple(key for key in keys if _verifies_our_algorithms(key))
        if not usable:
            raise ValueError(f"SETTLEFLOW_TOKEN_KEYS={settings.token_keys!r} names no EC P-256 or Ed25519 public key")
        return cls(settings, usable)

    def verify(self, token: str | None, at: datetime, *, expired_ok: bool = False) -> Actor:
        """The actor the token proves, judged at `at`; NotAuthorized with the reason otherwise.
        `expired_ok`: a genuine token that has expired by `at` still proves its actor (for a
        command its owner decided before, re-sent later: activities/handling.py)."""
        if self.settings.dev_issuer_refused:
            raise NotAuthorized("dev_issuer_refused", self.settings.dev_issuer_refused)
        if not token:
            raise NotAuthorized("no_token", "no token: a command from outside must carry a signed token")
        claims = None
        for key in self.keys:
            try:
                claims = jwt.decode(
                    token, key, algorithms=ALGORITHMS, audience=self.settings.token_audience,
                    issuer=self.settings.token_issuer,
                    # Expiry is judged at the command's issued_at below, not at the clock of this moment.
                    options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                             "require": ["exp", "iss", "aud", "sub"]},
                )
                break
            except (jwt.InvalidSignatureError, jwt.InvalidKeyError, jwt.InvalidAlgorithmError, TypeError, ValueError):
                # Not this key's signature, or a key of another type (an EC key, an EdDSA token:
                # PyJWT says so with an InvalidKeyError, or a TypeError or ValueError).
                continue
            except jwt.InvalidAudienceError:
                raise NotAuthorized("wrong_audience", "the token is not meant for settleflow (audience)") from None
            except jwt.InvalidIssuerError:
                raise NotAuthorized("wrong_issuer", "the token comes from an issuer settleflow does not trust") from None
            except jwt.PyJWTError as bad:
                raise NotAuthorized("invalid_token", f"the token cannot be read: {type(bad).__name__}") from None
        if claims is None:
            raise NotAuthorized("bad_signature", "the token's signature does not match any trusted key")
        moment = int(at.timestamp())
        expires, not_before = _instant(claims["exp"]), _instant(claims.get("nbf", moment))
        if moment >= expires and not expired_ok:
            raise NotAuthorized("token_expired", "the token had expired when the request arrived")
        if moment < not_before:
            raise NotAuthorized("token_not_yet_valid", "the token was not yet valid when the request arrived")
        role = claims.get(self.settings.role_claim)
        # One role, as a string: a list of roles (as some issuers write) is not guessed from.
        if not isinstance(role, str) or role not in {r.value for r in Role} or role == Role.SYSTEM.value:
            raise NotAuthorized("role_not_allowed", f"the token's role {role!r} may not act from outside")
        try:
            return Actor(role=Role(role), id=claims["sub"])
        except ValueError:
            raise NotAuthorized("invalid_token", "the token's subject is not a valid actor id") from None


def _verifies_our_algorithms(key: object) -> bool:
    """Whether `key` is a public key for ALGORITHMS: EC on P-256 (ES256), or Ed25519/Ed448 (EdDSA)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return isinstance(key.curve, ec.SECP256R1)
    return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)


def _instant(claim: object) -> int:
    """A NumericDate claim (`exp`, `nbf`) as seconds; anything else refuses the token, so that
    a malformed token is refused for good instead of failing the step again and again."""
    if isinstance(claim, bool) or not isinstance(claim, int | float) or not math.isfinite(claim):
        raise NotAuthorized("invalid_token", f"the token's time claims are not NumericDates: {claim!r}")
    return int(claim)


@lru_cache(maxsize=8)
def _verifier(settings: TrustSettings, _key_files: tuple[tuple[str, int], ...]) -> Verifier:
    return Verifier.from_settings(settings)


def verifier(settings: TrustSettings | None = None) -> Verifier:
    """The verifier for these settings (the environment's by default), built once — and again
    when a key file changes: a key removed from the identity provider's set (a compromised one)
    stops verifying at the next command, with no restart."""
    settings = settings or load_trust()
    return _verifier(settings, _key_file_versions(settings.token_keys))


def _key_file_versions(token_keys: str) -> tuple[tuple[str, int], ...]:
    """Each trusted key file with its modification time (ns): a new version, a new verifier."""
    versions = []
    for raw in filter(None, (p.strip() for p in token_keys.split(","))):
        try:
            versions.append((raw, os.stat(raw).st_mtime_ns))
        except OSError:
            versions.append((raw, -1))  # gone: Verifier.from_settings says so
    return tuple(versions)


def unverified_actor(token: str) -> Actor | None:
    """The actor a token claims, not checked: only for a command line's messages."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        return Actor(role=Role(claims.get("role")), id=claims["sub"])
    except (jwt.PyJWTError, KeyError, ValueError):
        return None


def signed(actor: Actor, lifetime: timedelta = timedelta(hours=2)) -> dict:
    """`token=...` for a request from this actor, minted by the dev issuer: for the demo,
    chaos and bench, which run against a local stack (never with production keys)."""
    settings = load_trust()
    if not settings.dev_mode:
        raise RuntimeError("the demo, chaos and bench mint dev tokens: unset SETTLEFLOW_TOKEN_KEYS")
    if settings.dev_issuer_refused:
        raise RuntimeError(settings.dev_issuer_refused)
    return {"token": mint(settings, actor.role, actor.id, lifetime=lifetime)}
