"""The daily comparison: what settleflow's owners say moved, against the gateway's
settlement listing. A domain service: it reads, describes what disagrees, and decides
nothing about money (support does, with the discrepancies it yields)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from domain.billing.order import Order
from domain.payments.gateway import SettlementLine, may_be_the_same_account
from domain.payments.payment import GatewayRefundStatus, Payment
from domain.reconciliation.discrepancy import DiscrepancyKind
from domain.shared.money import Money, total


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
    reference: str = ""  # the gateway's id payments recorded for the movement ("": it gave none)
    sent_to: str = ""  # the gateway account it went to ("": recorded before accounts were kept)


def ledger_entries(payment: Payment, order: Order | None) -> list[LedgerEntry]:
    """What settleflow's owners record as moved for one order: payments' captured attempt
    (billed: the order's paid amount, if any) and every refund payments saw settle (billed:
    billing's refund, once paid out). Unknown, declined and open requests moved nothing
    that payments knows of: they are reconciliation's other pass."""
    entries = []
    capture = payment.capture
    if capture is not None:
        billed = order.paid if order is not None and order.paid.is_positive else None
        entries.append(LedgerEntry(
            kind="capture", business_id=capture.attempt_id, order_id=payment.id, amount=capture.amount,
            sent_at=capture.sent_at, billed=billed, reference=capture.gateway_reference, sent_to=capture.sent_to,
        ))
    for refund in payment.refunds.values():
        if refund.status is not GatewayRefundStatus.SETTLED:
            continue
        billing_refund = order.refunds.get(refund.refund_id) if order is not None else None
        billed = billing_refund.amount if billing_refund is not None and billing_refund.paid_out else None
        entries.append(LedgerEntry(
            kind="refund", business_id=refund.refund_id, order_id=payment.id, amount=refund.amount,
            sent_at=refund.sent_at, billed=billed, reference=refund.gateway_reference, sent_to=payment.refund_account(refund),
        ))
    return entries


class Finding(BaseModel):
    """One disagreement, in the terms RecordDiscrepancy takes."""

    model_config = ConfigDict(frozen=True)

    kind: DiscrepancyKind
    order_id: str
    business_id: str
    ours: Money | None = None
    gateway: Money | None = None
    detail: str


def compare(
    day: date, gateway: Iterable[SettlementLine], ours: Iterable[LedgerEntry], listed_by: str = ""
) -> list[Finding]:
    """Every disagreement about `day`. `gateway` is the listing of `day` and may include
    the next day's (a movement sent just before midnight settles after it); `ours` holds
    every entry the owners changed since `day` began, and the entries of every order the
    listing names.

    The gateway may list more than one movement under one business id (a capture charged
    twice, a refund paid twice): every line is kept, such a business id is a finding of its
    own (`duplicate_at_gateway`), and what moved under it is compared as the sum of its lines.
    So is a movement under another gateway id than the one payments recorded, though it is
    alone in the day's listing: a second movement days after the first. A business id belongs
    to the day its first line settled on.

    `listed_by` is the gateway account whose listing `gateway` is: an entry sent to another
    account is not in it, and is not compared (that account's listing would say what moved);
    a line under its business id is money that moved here although payments sent it there."""
    listed: dict[tuple[str, str], list[SettlementLine]] = defaultdict(list)
    reversals: list[SettlementLine] = []
    for line in gateway:
        if line.kind == "refund_reversal":
            reversals.append(line)
        else:
            listed[(line.kind, line.business_id)].append(line)
    recorded, elsewhere = {}, {}
    for entry in ours:
        mine = not listed_by or may_be_the_same_account(entry.sent_to, listed_by)
        (recorded if mine else elsewhere)[(entry.kind, entry.business_id)] = entry
    findings: list[Finding] = []
    for key in sorted(listed):
        lines = sorted(listed[key], key=lambda line: (line.settled_at, line.reference))
        if lines[0].settled_at.date() != day:
            continue  # first settled the next day: that day's comparison looks at it
        if key not in recorded and key in elsewhere:
            findings.append(_moved_in_another_account(lines, elsewhere[key], listed_by))
            continue
        findings += _against_the_listing(lines, recorded.get(key))
    for reversal in sorted(reversals, key=lambda line: (line.settled_at, line.reference)):
        if reversal.settled_at.date() == day:
            key = ("refund", reversal.business_id)
            findings.append(_reversed(reversal, recorded.get(key) or elsewhere.get(key)))
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


def _against_the_listing(lines: list[SettlementLine], entry: LedgerEntry | None) -> list[Finding]:
    """What the gateway's lines under one business id (oldest first) say against settleflow's
    entry for it (None: payments has none)."""
    first = lines[0]
    what = f"{first.kind} {first.business_id} of order {first.order_id}"
    moved = _total(lines)
    settled = f"the gateway settled {_shown(moved)} for {what} ({_references(lines)})"
    findings: list[Finding] = []
    # Lines that are not the movement payments recorded (it names the gateway's id it got).
    others = [line for line in lines if entry is not None and entry.reference and line.reference != entry.reference]
    if len(lines) > 1 or others:
        if entry is None:
            ours = "payments has no settled record of it"
        else:
            ours = f"payments records one {first.kind} of {entry.amount}" + (
                f" ({entry.reference})" if entry.reference else "")
        how_many = f"{len(lines)} movements under one id" if len(lines) > 1 else "another movement under its id"
        findings.append(
            Finding(
                kind=DiscrepancyKind.DUPLICATE_AT_GATEWAY,
                order_id=first.order_id,
                business_id=first.business_id,
                ours=entry.amount if entry is not None else None,
                gateway=moved,
                detail=f"{settled}: {how_many}; {ours}",
            )
        )
    if others and len(others) == len(lines):
        # None of the day's lines is the movement payments recorded (that one settled another
        # day): payments' record is not compared with them; the duplicate says what moved.
        return findings
    if entry is None:
        findings.append(
            Finding(
                kind=DiscrepancyKind.MISSING_IN_PAYMENTS,
                order_id=first.order_id,
                business_id=first.business_id,
                gateway=moved,
                detail=f"{settled}; payments has no settled record of it",
            )
        )
        return findings
    findings += _amounts(what, entry, _moved(lines, entry.amount.currency), entry.amount, "payments")
    if entry.billed is None:
        findings.append(
            Finding(
                kind=DiscrepancyKind.MISSING_IN_BILLING,
                order_id=entry.order_id,
                business_id=entry.business_id,
                gateway=moved,
                detail=f"{settled}; billing's ledger does not show it",
            )
        )
    elif entry.billed != entry.amount:
        findings += _amounts(what, entry, _moved(lines, entry.billed.currency), entry.billed, "billing")
    return findings


def _reversed(reversal: SettlementLine, entry: LedgerEntry | None) -> Finding:
    """A refund the gateway paid out and then took back (its `refund_failure`): what billing
    counts as paid to the customer came back to the merchant. Paying it again to the same card
    would fail the same way; support pays it another way."""
    reversed_ = (
        f"the gateway reversed refund {reversal.business_id} of order {reversal.order_id} ({reversal.reference}) "
        f"on {reversal.settled_at:%Y-%m-%d %H:%M} UTC: {reversal.amount} came back to the merchant and the "
        f"customer was not paid"
    )
    if entry is None or entry.billed is None:
        # Payments or billing already hold it as not paid out (its answer was read after the
        # reversal: declined): what is owed, billing shows; nothing more is due for it.
        detail = (f"{reversed_}. Billing does not count it paid out: what the order still owes is billing's "
                  f"(a money_owed flag names it); nothing more is due for this refund.")
    else:
        detail = (f"{reversed_}, though billing counts {entry.billed} of it paid out. A refund to the same card "
                  f"would fail again (closed or expired): pay the customer another way, then resolve this "
                  f"with a note saying how.")
    return Finding(
        kind=DiscrepancyKind.REFUND_REVERSED,
        order_id=reversal.order_id,
        business_id=reversal.business_id,
        ours=entry.billed if entry is not None else None,
        gateway=reversal.amount,
        detail=detail,
    )


def _moved_in_another_account(lines: list[SettlementLine], entry: LedgerEntry, listed_by: str) -> Finding:
    """Money moved in this listing's account under an id payments sent to another account."""
    first, moved = lines[0], _total(lines)
    return Finding(
        kind=DiscrepancyKind.MISSING_IN_PAYMENTS,
        order_id=first.order_id,
        business_id=first.business_id,
        gateway=moved,
        detail=(
            f"the gateway settled {_shown(moved)} for "
            f"{first.kind} {first.business_id} of order {first.order_id} ({_references(lines)}) in account "
            f"{listed_by}; payments sent it to account {entry.sent_to} and records nothing here"
        ),
    )


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


def _total(lines: list[SettlementLine]) -> Money | None:
    """What the lines moved in all; None when they are in more than one currency."""
    currency = lines[0].amount.currency
    if any(line.amount.currency != currency for line in lines):
        return None
    return total([line.amount for line in lines], currency)


def _shown(moved: Money | None) -> str:
    return str(moved) if moved is not None else "amounts in more than one currency"


def _moved(lines: list[SettlementLine], currency: str) -> Money:
    """What the lines moved, to compare with a record in `currency`: their sum; a line in
    another currency cannot be added, so it is what is compared (the currency differs)."""
    other = [line.amount for line in lines if line.amount.currency != currency]
    return other[0] if other else total([line.amount for line in lines], currency)


SHOWN_REFERENCES = 5  # a finding names this many of the gateway's lines, and counts the rest


def _references(lines: list[SettlementLine]) -> str:
    """The gateway's own ids, for support to look the movements up; with their amounts and
    times when there is more than one."""
    if len(lines) == 1:
        return lines[0].reference
    shown = ", ".join(
        f"{line.reference}: {line.amount} at {line.settled_at:%Y-%m-%d %H:%M} UTC" for line in lines[:SHOWN_REFERENCES]
    )
    return shown + (f" and {len(lines) - SHOWN_REFERENCES} more" if len(lines) > SHOWN_REFERENCES else "")


def _once_per_kind(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[DiscrepancyKind, str]] = set()
    unique = []
    for finding in findings:
        if (finding.kind, finding.business_id) not in seen:
            seen.add((finding.kind, finding.business_id))
            unique.append(finding)
    return unique
