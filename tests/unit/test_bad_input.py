"""Bad input to the owners: hypothesis-generated payloads either fail to become a
command at all (a clear validation error), or the owner refuses them with a domain
error and nothing changes, or the owner records a decision. Nothing else."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.billing.commands import CancelOrder, RequestRefund
from domain.billing.events import OrderCancelled, RefundApproved, RefundOwed, RefundRejected
from domain.shared.actor import Actor, Role
from domain.shared.errors import DomainError
from tests.unit.builders import SUPPORT, T0, command, delivered_order

NASTY_TEXT = st.one_of(
    st.text(max_size=50),
    st.sampled_from(["'; DROP TABLE orders; --", '" OR 1=1 --', "x" * 5000, "", " ", "\x00", "ÿ\u202e"]),
)
AMOUNT_PAYLOADS = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.integers(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.floats(),
    st.booleans(),
    st.fixed_dictionaries({"amount": st.text(max_size=10), "currency": st.text(max_size=4)}),
    st.fixed_dictionaries({"amount": st.decimals(places=2, min_value=-1000, max_value=1000).map(str),
                           "currency": st.sampled_from(["EUR", "USD", "JPY", "eur", "XXX"])}),
)
ROLES = st.sampled_from(list(Role))


@settings(max_examples=300, deadline=None)
@given(
    amount=AMOUNT_PAYLOADS,
    refund_id=NASTY_TEXT,
    reason=NASTY_TEXT,
    role=ROLES,
    actor_id=NASTY_TEXT,
)
def test_any_refund_request_is_refused_cleanly_or_decided(amount, refund_id, reason, role, actor_id):
    order = delivered_order()
    before = order.model_dump()
    try:
        request = command(
            RequestRefund,
            actor=Actor(role=role, id=actor_id),
            issued_at=T0,
            order_id=order.id,
            refund_id=refund_id,
            amount=amount,
            reason=reason,
        )
    except ValidationError:
        return  # never became a command: the caller gets a clear validation error
    try:
        order.request_refund(request)
    except DomainError:
        assert order.model_dump() == before and order.pending_events == []
        return
    [decision, *rest] = order.pending_events
    assert isinstance(decision, RefundApproved | RefundRejected)
    assert order.refundable.amount >= Decimal(0)
    stored = order.refunds[request.refund_id]
    assert (stored.refund_id, stored.reason) == (request.refund_id, request.reason)  # verbatim


@settings(max_examples=200, deadline=None)
@given(role=ROLES, actor_id=NASTY_TEXT, reason=NASTY_TEXT)
def test_any_cancellation_is_refused_cleanly_or_decided(role, actor_id, reason):
    order = delivered_order()
    before = order.model_dump()
    try:
        cancel = command(CancelOrder, actor=Actor(role=role, id=actor_id), order_id=order.id, reason=reason)
    except ValidationError:
        return
    try:
        order.cancel(cancel)
    except DomainError:
        assert order.model_dump() == before and order.pending_events == []
        return
    raise AssertionError(f"a delivered order was cancelled by {cancel.actor}: {order.pending_events}")


def test_support_cancelling_an_undelivered_paid_order_owes_the_refund_exactly():
    order = delivered_order()
    order.fulfilment = order.fulfilment.SHIPPED  # still on the road
    order.cancel(command(CancelOrder, actor=SUPPORT, order_id=order.id, reason="moved"))
    cancelled, owed = order.pending_events
    assert isinstance(cancelled, OrderCancelled) and isinstance(owed, RefundOwed)
    assert owed.amount == order.paid
