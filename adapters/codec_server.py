"""The codec server: lets a person in the Temporal web UI (or `temporal --codec-endpoint`)
read payloads the server itself stores only as ciphertext.

    python -m adapters.codec_server --port 8234 --ui-origin http://localhost:8233

`POST /encode` and `POST /decode` take and give Temporal's JSON form of `Payloads`
(`{"payloads": [{"metadata": {...}, "data": "..."}]}`), using the same key ring as the
workers (adapters/codec.py). CORS lets the UI's origin call it from the browser. In dev
mode (no SETTLEFLOW_TOKEN_KEYS) it answers anyone, so it binds to this machine only, and it
refuses to run at all beside production payload keys (`TrustSettings.dev_issuer_refused`).
Outside dev mode (production token keys configured) every request needs
`Authorization: Bearer <token>` of a `support` or `fraud_analyst` (verified like every
command's token, at the moment of the request); the UI forwards it when its
"include credentials" / access-token setting is on. What it decodes shows no signed token:
each is replaced (`without_tokens`), so a history read in the UI hands nobody another
person's token. `make demo` starts it on port 8234 and
points the dev server's UI at it (`--ui-codec-endpoint`).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from typing import Any, NoReturn
from datetime import datetime, timezone

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads

from adapters.codec import EncryptionCodec, KeyRing
from adapters.identity import TrustSettings, load_trust, verifier
from domain.shared.actor import Role
from domain.shared.errors import NotAuthorized

STAFF = {Role.SUPPORT, Role.FRAUD_ANALYST}


def build_app(ui_origins: list[str], settings: TrustSettings | None = None) -> Starlette:
    settings = settings or load_trust()
    codec = EncryptionCodec(KeyRing.from_settings(settings))

    def refused(request: Request) -> Response | None:
        if settings.dev_issuer_refused:
            return JSONResponse({"error": settings.dev_issuer_refused}, status_code=403)
        if settings.dev_mode:
            return None  # local only (`main` binds it to this machine): the dev issuer is configured
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None
        try:
            who = verifier(settings).verify(token, datetime.now(timezone.utc))
        except NotAuthorized as bad:
            return JSONResponse({"error": bad.message}, status_code=401)
        if who.role not in STAFF:
            return JSONResponse({"error": f"a {who.role.value} may not read payloads"}, status_code=403)
        return None

    async def handle(request: Request, encode: bool) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        try:
            payloads = json_format.Parse(await request.body(), Payloads())
        except json_format.ParseError as bad:
            return JSONResponse({"error": f"not a Payloads JSON: {bad}"}, status_code=400)
        try:
            done = await (codec.encode if encode else codec.decode)(list(payloads.payloads))
        except Exception as bad:  # noqa: BLE001 - an unknown key or a tampered payload: say so
            return JSONResponse({"error": f"{type(bad).__name__}: {bad}"}, status_code=400)
        if not encode:
            done = [without_tokens(payload) for payload in done]
        return Response(json_format.MessageToJson(Payloads(payloads=done)), media_type="application/json")

    async def encode(request: Request) -> Response:
        return await handle(request, encode=True)

    async def decode(request: Request) -> Response:
        return await handle(request, encode=False)

    return Starlette(
        routes=[Route("/encode", encode, methods=["POST"]), Route("/decode", decode, methods=["POST"])],
        middleware=[Middleware(
            CORSMiddleware, allow_origins=ui_origins, allow_methods=["POST"], allow_credentials=True,
            allow_headers=["content-type", "x-namespace", "authorization"],
        )],
    )


# A signed token (JWT: three base64url parts, the header's JSON beginning `{"`) wherever it sits.
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]+")
HIDDEN = "(a signed token: not shown)"


def without_tokens(payload: Payload) -> Payload:
    """A decoded payload as a person may see it: every signed token in it (a request's `token`,
    a command's `credential`, one quoted in a message) replaced. A token read from the web UI
    would let its reader act as the person it names until it expires (a support agent deciding
    a fraud review as the analyst whose token sits in that flow's history)."""
    if not _JWT.search(payload.data.decode("utf-8", errors="replace")):
        return payload
    shown = Payload()
    shown.CopyFrom(payload)
    if payload.metadata.get("encoding", b"").startswith(b"json/"):
        try:
            shown.data = json.dumps(_hide(json.loads(payload.data)), separators=(",", ":")).encode()
            return shown
        except ValueError:
            pass
    # Not JSON (protobuf, bytes): rewriting inside would corrupt it; it is not shown at all.
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(f"(holds {HIDDEN[1:]}").encode())


def _hide(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _hide(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_hide(item) for item in value]
    if isinstance(value, str):
        return _JWT.sub(HIDDEN, value)
    return value


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8234)
    parser.add_argument("--ui-origin", action="append", default=None,
                        help="the web UI's origin (repeatable; default http://localhost:8233)")
    args = parser.parse_args()
    settings = load_trust()
    if settings.dev_issuer_refused:
        refuse(settings.dev_issuer_refused)
    if settings.dev_mode and not _this_machine_only(args.host):
        # Without production keys it decrypts for anyone who reaches it: never beyond this machine.
        refuse(f"--host {args.host}: without SETTLEFLOW_TOKEN_KEYS (dev issuer) the codec server "
               "serves this machine only (127.0.0.1, ::1, localhost)")
    origins = args.ui_origin or ["http://localhost:8233", "http://127.0.0.1:8233"]
    uvicorn.run(build_app(origins), host=args.host, port=args.port, log_level="warning")


def refuse(reason: str) -> NoReturn:
    print(f"codec_server: error: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _this_machine_only(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    main()
