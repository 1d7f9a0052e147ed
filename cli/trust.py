"""Who the command line acts as: a signed token, checked before anything starts.

    starter.py refund ... --token "$JWT"           # or SETTLEFLOW_TOKEN=...
    starter.py refund ... --as customer:c-1        # local only: a dev token is minted
    starter.py token --role fraud_analyst --id eve # a short-lived dev token, printed

A token is verified here with the same keys the owners use, judged at this moment: a
missing, forged, expired or wrong-audience token, or one whose role may not use the verb,
is one line on stderr and exit 2, before anything starts. The owner's activity verifies
it again (the command line is a convenience, not the guard). `--as ROLE:ID` mints a dev
token only while the dev issuer is the configured one (no SETTLEFLOW_TOKEN_KEYS); with
production keys it is refused, and so it is beside production payload keys without them
(`TrustSettings.dev_issuer_refused`). The token is never printed, except by `token` itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timedelta, timezone

from adapters.identity import DEV_TOKEN_LIFETIME, load_trust, mint, verifier
from domain.shared.actor import Actor, Role
from domain.shared.errors import DomainError

# Verbs that act for someone: they take --as or a token. place-order acts for its customer.
ACTING_VERBS = {
    "place-order", "ship", "deliver", "refund", "review", "update-payment-method", "cancel", "resolve-discrepancy",
    "resume-flow",
}
# Who a verb acts as locally when neither --as nor a token says (dev issuer only).
DEFAULT_ACTORS = {
    "place-order": lambda args: Actor(role=Role.CUSTOMER, id=args.customer),
    "ship": lambda args: Actor(role=Role.WAREHOUSE, id="cli"),
    "deliver": lambda args: Actor(role=Role.WAREHOUSE, id="cli"),
}


def add_token_option(common: argparse.ArgumentParser) -> None:
    common.add_argument("--token", help="a signed token (JWT) proving who you are (default: $SETTLEFLOW_TOKEN)")


def add_verbs(verbs, common: argparse.ArgumentParser, identifier) -> None:
    p = verbs.add_parser("token", parents=[common], help="mint a short-lived dev token (local dev issuer only)")
    p.add_argument("--role", required=True, choices=[r.value for r in Role if r is not Role.SYSTEM])
    p.add_argument("--id", required=True, type=identifier)
    p.add_argument("--minutes", type=int, default=int(DEV_TOKEN_LIFETIME.total_seconds() // 60),
                   help=f"lifetime (default {int(DEV_TOKEN_LIFETIME.total_seconds() // 60)})")
    p.set_defaults(run=_token)


def _token(args: argparse.Namespace, _settings) -> int:
    trust = load_trust()
    if not trust.dev_mode:
        print("starter.py: error: token: production keys are configured (SETTLEFLOW_TOKEN_KEYS); "
              "get a token from your identity provider", file=sys.stderr)
        return 2
    if trust.dev_issuer_refused:
        print(f"starter.py: error: token: {trust.dev_issuer_refused}", file=sys.stderr)
        return 2
    if not 1 <= args.minutes <= 24 * 60:
        print("starter.py: error: --minutes: between 1 and 1440", file=sys.stderr)
        return 2
    print(mint(trust, args.role, args.id, lifetime=timedelta(minutes=args.minutes)), flush=True)
    return 0


def dev_token(who: Actor, refuse: type[Exception] = ValueError) -> str:
    """A dev token for `--as`, or ValueError when the dev issuer is not the configured one."""
    trust = load_trust()
    if not trust.dev_mode:
        raise refuse("argument --as: production keys are configured; give --token (or $SETTLEFLOW_TOKEN)")
    if trust.dev_issuer_refused:
        raise refuse(f"argument --as: {trust.dev_issuer_refused}")
    return mint(trust, who.role, who.id)


def resolve(args: argparse.Namespace, refuse: type[Exception] = ValueError) -> None:
    """Set `args.actor` and `args.token` for an acting verb, or raise `refuse` (exit 2)."""
    if args.verb not in ACTING_VERBS:
        return
    token = getattr(args, "token", None) or os.environ.get("SETTLEFLOW_TOKEN") or None
    claimed: Actor | None = getattr(args, "actor", None)
    if claimed is None and token is None and args.verb in DEFAULT_ACTORS:
        claimed = DEFAULT_ACTORS[args.verb](args)
    if token is not None:
        try:
            proven = verifier().verify(token, datetime.now(timezone.utc))
        except DomainError as bad:
            raise refuse(f"token refused: {bad.message}") from None
        if claimed is not None and claimed != proven:
            raise refuse(f"argument --as: the token is {proven}'s, not {claimed}'s")
        args.actor, args.token = proven, token
        return
    if claimed is None and args.verb != "update-payment-method":
        raise refuse("the following arguments are required: --as (or --token, or $SETTLEFLOW_TOKEN)")
    if claimed is None:  # update-payment-method: the order's customer, once it is looked up
        args.token = None
        return
    args.actor, args.token = claimed, dev_token(claimed, refuse)
