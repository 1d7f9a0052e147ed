"""The daily comparison: what settleflow's owners say moved, against the gateway's
settlement listing. A domain service: it reads, describes what disagrees, and decides
nothing about money (support does, with the discrepancies it yields)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from domain.payments.gateway import SettlementLine
from domain.reconciliation.discrepancy import DiscrepancyKind
from domain.shared.money import Money


class LedgerEntry(BaseModel):
    """One movement of money as settleflow's owners record it: payments' captured attempt or
    settled refund, with what billing's ledger says of the same movement (None: nothing)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["capture", "refund"]
    business_id: str
    order_id: str
    amount: Money  # payments' record
    sent_at: datetime | None
    billed: Money | None  # billing's ledger: the order's paid amount, or the completed refund


class Finding(BaseModel):
    """One disagreement, in the terms RecordDiscrepancy takes."""

    model_config = ConfigDict(frozen=True)

    kind: DiscrepancyKind
    order_id: str
    business_id: str
    ours: Money | None = None
    gateway: Money | None = None
    detail: str


def compare(day: date, gateway: Iterable[SettlementLine], ours: Iterable[LedgerEntry]) -> list[Finding]:
    """Every disagreement about `day`. `gateway` is the listing of `day` and may include
    the next day's (a movement sent just before midnight settles after it); `ours` holds
    every entry the owners changed since `day` began."""
    listed = {(line.kind, line.business_id): line for line in gateway}
    recorded = {(entry.kind, entry.business_id): entry for entry in ours}
    findings: list[Finding] = []
    for key, line in sorted(listed.items()):
        if line.settled_at.date() != day:
            continue
        entry = recorded.get(key)
        what = f"{line.kind} {line.business_id} of order {line.order_id}"
        if entry is None:
            findings.append(
                Finding(
                    kind=DiscrepancyKind.MISSING_IN_PAYMENTS,
                    order_id=line.order_id,
                    business_id=line.business_id,
                    gateway=line.amount,
                    detail=f"the gateway settled {line.amount} for {what} ({line.reference}); payments has no settled record of it",
                )
            )
            continue
        findings += _amounts(what, entry, line.amount, entry.amount, "payments")
        if entry.billed is None:
            findings.append(
                Finding(
                    kind=DiscrepancyKind.MISSING_IN_BILLING,
                    order_id=entry.order_id,
                    business_id=entry.business_id,
                    gateway=line.amount,
                    detail=f"the gateway settled {line.amount} for {what}; billing's ledger does not show it",
                )
            )
        elif entry.billed != entry.amount:
            findings += _amounts(what, entry, line.amount, entry.billed, "billing")
    for key, entry in sorted(recorded.items()):
        if entry.sent_at is None or entry.sent_at.date() != day or key in listed:
            continue
        findings.append(
            Finding(
                kind=DiscrepancyKind.MISSING_AT_GATEWAY,
                order_id=entry.order_id,
                business_id=entry.business_id,
                ours=entry.amount,
                detail=(
                    f"payments records the {entry.kind} {entry.business_id} of order {entry.order_id} "
                    f"({entry.amount}) as done; the gateway's listing has no such movement"
                ),
            )
        )
    return _once_per_kind(findings)


def _amounts(what: str, entry: LedgerEntry, gateway: Money, ours: Money, who: str) -> list[Finding]:
    if ours == gateway:
        return []
    kind = DiscrepancyKind.CURRENCY_DIFFERS if ours.currency != gateway.currency else DiscrepancyKind.AMOUNT_DIFFERS
    return [
        Finding(
            kind=kind,
            order_id=entry.order_id,
            business_id=entry.business_id,
            ours=ours,
            gateway=gateway,
            detail=f"{who} records {ours} for {what}; the gateway settled {gateway}",
        )
    ]


def _once_per_kind(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[DiscrepancyKind, str]] = set()
    unique = []
    for finding in findings:
        if (finding.kind, finding.business_id) not in seen:
            seen.add((finding.kind, finding.business_id))
            unique.append(finding)
    return unique
