"""Trust, on the real servers: only a verified identity moves anything, and Temporal
holds no readable customer data.

- The token table: a refund (and a review decision) with no token, a forged one, one
  from another issuer, for another audience, expired when the request arrived, from a
  role that may not ask, claiming `system` from outside, and an analyst deciding the
  review of a refund they requested — each refused, with nothing written.
- The raw histories of every flow, read without the codec, show no customer id, reason,
  amount or card token; decoded with the codec they do.
- Key rotation: a flow started under key 1 completes under key 2 and replays with the ring.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import Message as Proto
from sqlalchemy import func, select
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue, RetryPolicy
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio import workflow
from temporalio.exceptions import ActivityError
from temporalio.worker import Replayer, Worker

from adapters import db
from adapters.codec import KeyRing, data_converter
from adapters.temporal import AddressUpdates
from adapters.seal import Seals, SealsCommands
from adapters.identity import TrustSettings, load_trust, mint
from adapters.tables import metadata
from domain.contracts import ReviewDecision
from domain.shared.actor import Actor
from domain.shared.money import Money
from tests.tokens import SINCE, signed, token_for
from tests.workflows.flows import (
    delivered_order, finished, new_id, place_order, real_time, ship, deliver, start_refund, wait_for_status,
)
from worker import ALL_QUEUES, Dependencies, build_workers
from workflows.payment import NewPaymentMethod, OrderRequest, PaymentWorkflow
from workflows.process import FLOWS_QUEUE
from workflows.refund import RefundRequest, RefundWorkflow, ReviewResolution
from workflows.registry import WORKFLOWS

ANALYST = Actor.parse("fraud_analyst:alice")
LONG = timedelta(days=365 * 500)


def row_counts(harness) -> dict[str, int]:
    with harness.engine.connect() as connection:
        return {t.name: connection.execute(select(func.count()).select_from(t)).scalar_one()
                for t in metadata.sorted_tables}


def bad_token(case: str, actor: str) -> str | None:
    settings, who = load_trust(), Actor.parse(actor)
    stranger = ec.generate_private_key(ec.SECP256R1())
    return {
        "none": None,
        "forged signature": mint(settings, who.role, who.id, now=SINCE, lifetime=LONG, private_key=stranger),
        "other issuer": mint(settings, who.role, who.id, now=SINCE, lifetime=LONG, issuer="https://evil.example"),
        "wrong audience": mint(settings, who.role, who.id, now=SINCE, lifetime=LONG, audience="another-app"),
        "expired": mint(settings, who.role, who.id, now=SINCE, lifetime=timedelta(minutes=15)),
        "another person's": token_for("customer:c-2"),
    }[case]


@pytest.mark.parametrize(
    "case", ["none", "forged signature", "other issuer", "wrong audience", "expired", "another person's"]
)
async def test_a_refund_without_a_valid_token_for_its_requester_is_refused_and_changes_nothing(harness, case):
    order_id = await delivered_order(harness)
    before = row_counts(harness)
    refund_id = new_id("r")
    async with real_time(harness.env):
        handle = harness.track(await harness.client.start_workflow(
            RefundWorkflow.run,
            RefundRequest(refund_id=refund_id, order_id=order_id, reason="arrived damaged",
                          requested_by=Actor.parse("customer:c-1"), token=bad_token(case, "customer:c-1")),
            id=f"refund-{refund_id}", task_queue=FLOWS_QUEUE,
        ))
        result = await handle.result()
    words = {"none": "no token", "forged signature": "signature", "other issuer": "issuer",
             "wrong audience": "audience", "expired": "expired", "another person's": "the token is customer:c-2's"}
    assert result.status == "rejected" and words[case] in result.reason, result
    assert row_counts(harness) == before
    assert harness.order(order_id).refunds == {}


async def test_an_owners_refusal_is_an_answer_kept_out_of_the_workers_warnings(harness, caplog):
    # Its message names orders and people: as a warning with its traceback it would sit readable
    # in every worker's log. The flow still reads it (encrypted, in the activity's failure).
    order_id = await delivered_order(harness)
    caplog.set_level(logging.WARNING)
    handle = await start_refund(harness, order_id, by="customer:c-2")  # another customer's order

    result = await finished(harness, handle)

    assert result.status == "rejected" and "belongs to another customer" in result.reason
    assert [r.getMessage() for r in caplog.records if order_id in r.getMessage() or "another customer" in r.getMessage()
            or "another customer" in str(r.exc_info)] == []


async def test_a_role_that_may_not_ask_is_refused_even_with_a_valid_token(harness):
    order_id = await delivered_order(harness)
    before = row_counts(harness)
    handle = await start_refund(harness, order_id, by="warehouse:w-1")
    result = await finished(harness, handle)
    assert result.status == "rejected" and "may not send RequestRefund" in result.reason
    assert row_counts(harness) == before


async def test_system_claimed_from_outside_is_refused_before_any_owner_is_asked(harness):
    order_id = await delivered_order(harness)
    before = row_counts(harness)
    refund_id = new_id("r")
    async with real_time(harness.env):
        handle = harness.track(await harness.client.start_workflow(
            RefundWorkflow.run,
            RefundRequest(refund_id=refund_id, order_id=order_id, reason="mine now",
                          requested_by=Actor.system("me"), token=token_for("support:me")),
            id=f"refund-{refund_id}", task_queue=FLOWS_QUEUE,
        ))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert "system is settleflow's workflows alone" in str(failed.value.cause)
    assert row_counts(harness) == before


@workflow.defn(name="NotSettleflowsPaymentFlow", sandboxed=False)
class NotSettleflowsPaymentFlow:
    """Anyone's workflow, starting a refund as its child and naming it settleflow's own."""

    @workflow.run
    async def run(self, order_id: str) -> None:
        await workflow.execute_child_workflow(
            "RefundWorkflow",
            RefundRequest(refund_id=f"{order_id}-cancellation", order_id=order_id, reason="owed, surely",
                          requested_by=Actor.system("cancellation-refund")),
            id=f"refund-{order_id}-cancellation", task_queue=FLOWS_QUEUE,
        )


async def test_system_claimed_by_a_child_of_anyones_workflow_is_refused_before_any_owner_is_asked(harness):
    order_id = await delivered_order(harness)
    before = row_counts(harness)
    async with real_time(harness.env), Worker(harness.client, task_queue="not-settleflow",
                                              workflows=[NotSettleflowsPaymentFlow]):
        with pytest.raises(WorkflowFailureError) as failed:
            await harness.client.execute_workflow(NotSettleflowsPaymentFlow.run, order_id, id=new_id("parent"),
                                                  task_queue="not-settleflow")
    assert f"started by payment-{order_id} alone" in str(failed.value.cause.cause)
    assert row_counts(harness) == before


@workflow.defn(name="Intruder", sandboxed=False)
class Intruder:
    """Someone with access to the namespace, running a worker of their own: they schedule an
    owner's activity on its task queue themselves, naming `system`, which carries no token."""

    @workflow.run
    async def run(self, command: dict) -> str:
        try:
            await workflow.execute_activity(
                "billing.CancelOrder", command, task_queue="billing", start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError as refused:
            return f"{refused.cause.type}: {refused.cause.message}"  # type: ignore[union-attr]
        return "decided"


async def test_a_command_no_settleflow_workflow_sealed_is_refused_and_changes_nothing(harness):
    order_id, _ = await place_order(harness)
    before = row_counts(harness)
    # Their own client and worker, with no seals. (It holds the payload codec only so that this
    # test can read the owner's refusal: without it the refusal is ciphertext to them.)
    theirs = Client(harness.client.service_client, namespace=harness.client.namespace,
                    data_converter=data_converter())
    command = {"command_id": f"intruder/{order_id}", "actor": {"role": "system", "id": "settleflow"},
               "issued_at": "2030-01-01T00:00:00Z", "order_id": order_id, "reason": "payment_failed"}
    async with Worker(theirs, task_queue="intruders", workflows=[Intruder]):
        answer = await theirs.execute_workflow(Intruder.run, command, id=new_id("intruder"), task_queue="intruders")

    assert answer.startswith("NotAuthorized: billing.CancelOrder intruder/") and "carries no seal" in answer
    order = harness.order(order_id)
    assert not order.cancelled and order.paid == Money.of("120.00", "EUR")
    assert row_counts(harness) == before  # nothing decided, nothing recorded, nothing published


async def test_a_flow_started_under_another_id_than_its_request_derives_is_refused_before_any_owner_is_asked(harness):
    order_id = await delivered_order(harness)
    before = row_counts(harness)
    async with real_time(harness.env):
        handle = harness.track(await harness.client.start_workflow(
            RefundWorkflow.run,
            RefundRequest(refund_id=new_id("r"), order_id=order_id, reason="arrived damaged",
                          requested_by=Actor.parse("customer:c-1"), **signed(Actor.parse("customer:c-1"))),
            id=f"refund-{order_id}-cancellation", task_queue=FLOWS_QUEUE,  # the order's cancellation refund's
        ))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert f"not as refund-{order_id}-cancellation" in str(failed.value.cause)
    assert row_counts(harness) == before


@pytest.mark.parametrize("case", ["none", "forged signature", "expired", "own refund", "system"])
async def test_a_review_decision_without_a_valid_independent_token_is_refused_and_the_review_stays_open(
    harness, case
):
    order_id = await delivered_order(harness, amount="1500.00")
    handle = await start_refund(harness, order_id, by="support:eve")  # eve asked for the money
    await wait_for_status(handle, "under_review")
    reviewer = {"own refund": Actor.parse("fraud_analyst:eve"), "system": Actor.system("x")}.get(case, ANALYST)
    token = token_for(reviewer) if case in ("own refund", "system") else bad_token(case, str(ANALYST))
    before = row_counts(harness)

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            RefundWorkflow.resolve_review,
            ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=reviewer, token=token),
        )
    words = {"none": "no token", "forged signature": "signature", "expired": "expired",
             "own refund": "may not decide its review", "system": "system is settleflow's workflows alone"}[case]
    assert words in str(refused.value.cause), refused.value.cause
    assert row_counts(harness) == before
    with harness.uow_factory() as uow:
        assert uow.fraud_reviews.get(handle.id.removeprefix("refund-")).status == "open"

    await handle.execute_update(
        RefundWorkflow.resolve_review, ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=ANALYST,
                                                        **signed(ANALYST)))
    assert (await finished(harness, handle)).status == "completed"


async def test_a_review_decision_lifted_from_one_refunds_history_decides_nothing_in_another(harness):
    """Someone who can read histories and send Updates, without the payload key or a token,
    copies alice's encrypted approval of refund A and sends it as refund B's decision."""
    refunds = []
    for requester in ("support:eve", "support:mallory"):
        order_id = await delivered_order(harness, amount="1500.00")
        refunds.append(await start_refund(harness, order_id, by=requester))
    a, b = refunds
    for handle in refunds:
        await wait_for_status(handle, "under_review")
    await a.execute_update(RefundWorkflow.resolve_review,
                           ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=ANALYST, **signed(ANALYST)))
    [accepted] = [e async for e in a.fetch_history_events()
                  if e.HasField("workflow_execution_update_accepted_event_attributes")]
    [lifted] = accepted.workflow_execution_update_accepted_event_attributes.accepted_request.input.args.payloads
    assert lifted.metadata["encoding"] == b"binary/encrypted"  # unreadable, but whole
    keyless = Client(harness.client.service_client, namespace=harness.client.namespace,
                     data_converter=pydantic_data_converter)

    with pytest.raises(WorkflowUpdateFailedError):  # refused (why: encrypted, for the key holder)
        await keyless.get_workflow_handle(b.id).execute_update("resolve_review", RawValue(lifted))
    with pytest.raises(WorkflowUpdateFailedError) as refused:  # the same argument, read with the key
        await b.execute_update(RefundWorkflow.resolve_review, ReviewResolution(
            decision=ReviewDecision.APPROVE, reviewer=ANALYST, **signed(ANALYST), to_flow=a.id))

    assert f"addressed to {a.id}, not to {b.id}" in str(refused.value.cause)
    with harness.uow_factory() as uow:
        assert uow.fraud_reviews.get(b.id.removeprefix("refund-")).status == "open"
    assert (await b.query("status"))["status"] == "under_review"
    assert (await finished(harness, a)).status == "completed"


# -- what Temporal holds --------------------------------------------------------------------
def payloads_in(message: Proto) -> list[Payload]:
    found: list[Payload] = []
    if isinstance(message, Payload):
        return [message]
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = list(value.values())
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        for item in values:
            if isinstance(item, Proto):
                found += payloads_in(item)
    return found


async def test_raw_histories_hold_no_customer_data_which_the_codec_decodes(harness):
    secrets = {"customer": "cust-7f3a9", "card": "tok_visa_4242secret", "reason": "scratched-lid-and-bent",
               "amount": "1234.56"}
    order_id = new_id("o")
    placed = harness.track(await harness.client.start_workflow(
        PaymentWorkflow.run,
        OrderRequest(order_id=order_id, customer_id=secrets["customer"], amount=Money.of(secrets["amount"], "EUR"),
                     card_token=secrets["card"], placed_by=Actor.parse(f"customer:{secrets['customer']}"),
                     **signed(f"customer:{secrets['customer']}")),
        id=f"payment-{order_id}", task_queue=FLOWS_QUEUE,
    ))
    await wait_for_status(placed, "paid", env=harness.env)
    await ship(harness, order_id)
    await deliver(harness, order_id)
    refund_id = new_id("r")
    refund = harness.track(await harness.client.start_workflow(
        RefundWorkflow.run,
        RefundRequest(refund_id=refund_id, order_id=order_id, reason=secrets["reason"],
                      requested_by=Actor.parse(f"customer:{secrets['customer']}"),
                      **signed(f"customer:{secrets['customer']}")),
        id=f"refund-{refund_id}", task_queue=FLOWS_QUEUE,
    ))
    await wait_for_status(refund, "under_review")
    await refund.execute_update(RefundWorkflow.resolve_review,
                                ReviewResolution(decision=ReviewDecision.APPROVE, reviewer=ANALYST, **signed(ANALYST)))
    await finished(harness, refund)

    # Read as a Temporal operator would: the same server, no codec.
    plain = Client(harness.client.service_client, namespace=harness.client.namespace,
                   data_converter=pydantic_data_converter)
    codec = data_converter().payload_codec
    assert codec is not None
    decoded_text = ""
    for workflow_id in (f"payment-{order_id}", f"ship-{order_id}", f"deliver-{order_id}", f"refund-{refund_id}"):
        history = await plain.get_workflow_handle(workflow_id).fetch_history()
        # Search attributes hold opaque ids and statuses only (CustomerId is an opaque id);
        # everything else must be ciphertext.
        for event in history.events:
            if event.HasField("upsert_workflow_search_attributes_event_attributes"):
                event.ClearField("upsert_workflow_search_attributes_event_attributes")
            event.workflow_execution_started_event_attributes.ClearField("search_attributes")
        raw = b"".join(p.SerializeToString() for e in history.events for p in payloads_in(e))
        raw += history.to_json().encode()
        for name, secret in secrets.items():
            assert secret.encode() not in raw, f"{name} readable in {workflow_id}'s raw history"
        decoded = await codec.decode([p for e in history.events for p in payloads_in(e)])
        decoded_text += b"".join(p.data for p in decoded).decode("utf-8", "replace")
    for name, secret in secrets.items():
        assert secret in decoded_text, f"{name} not found even with the codec"
    assert "eyJ" in decoded_text  # the signed tokens travelled (encrypted) with the requests ...

    # ... but settleflow's own database never keeps one: not the processed commands' outcomes,
    # not the outbox, not any aggregate.
    with harness.engine.connect() as connection:
        stored = "".join(str(row) for table in metadata.sorted_tables for row in connection.execute(select(table)))
    assert "eyJ" not in stored and secrets["customer"] in stored


# -- key rotation ---------------------------------------------------------------------------------
KEY_1 = "k1=" + "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE="
KEY_2 = "k2=" + "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI="


def client_with(env_client: Client, keys: str, active: str) -> Client:
    settings = TrustSettings(payload_keys=keys, payload_key_id=active)
    return Client(env_client.service_client, namespace=env_client.namespace, data_converter=data_converter(settings),
                  interceptors=[AddressUpdates(), SealsCommands(Seals(KeyRing.from_settings(settings)))])


async def test_a_flow_started_under_key_1_completes_and_replays_after_key_2_becomes_active(env, gateway_url, tmp_path):
    url = f"sqlite:///{tmp_path / 'settleflow.db'}"
    db.upgrade(url)
    deps = Dependencies.connect(url, gateway_url, tmp_path / "mailbox", gateway_timeout_seconds=0.5)
    old = client_with(env.client, KEY_1, "k1")
    new = client_with(env.client, f"{KEY_1},{KEY_2}", "k2")
    order_id = new_id("o")
    customer = Actor.parse("customer:c-rot")
    # No workflow cache: the second deployment takes the flow over at once (no sticky queue).
    with ThreadPoolExecutor(max_workers=8) as executor:
        async with AsyncExitStack() as stack:
            for worker in build_workers(old, deps, list(ALL_QUEUES), executor, max_cached_workflows=0):
                await stack.enter_async_context(worker)
            handle = await old.start_workflow(
                PaymentWorkflow.run,
                OrderRequest(order_id=order_id, customer_id="c-rot", amount=Money.of("30.00", "EUR"),
                             card_token="tok_capture_declined", placed_by=customer, **signed(customer)),
                id=f"payment-{order_id}", task_queue=FLOWS_QUEUE,
            )
            await wait_for_status(handle, "recovering")
        async with AsyncExitStack() as stack:  # the deployment now encrypts with key 2
            for worker in build_workers(new, deps, list(ALL_QUEUES), executor, max_cached_workflows=0):
                await stack.enter_async_context(worker)
            handle = new.get_workflow_handle(f"payment-{order_id}")
            await handle.execute_update(PaymentWorkflow.update_payment_method,
                                        NewPaymentMethod(card_token="tok_visa", given_by=customer, **signed(customer)))
            await wait_for_status(handle, "paid")
            stack_of_key_2 = SimpleNamespace(client=new, env=env)  # the deployment now running
            await ship(stack_of_key_2, order_id)
            await deliver(stack_of_key_2, order_id)  # billing records it, and the payment process closes
            with env.auto_time_skipping_disabled():
                assert (await handle.result())["status"] == "paid"
    deps.engine.dispose()

    history = await new.get_workflow_handle(f"payment-{order_id}").fetch_history()
    kids = {p.metadata.get("encryption-key-id") for e in history.events for p in payloads_in(e)}
    assert {b"k1", b"k2"} <= kids  # both keys really were used
    await Replayer(workflows=WORKFLOWS, data_converter=new.data_converter).replay_workflow(history)
    key_2_only = client_with(env.client, KEY_2, "k2").data_converter
    # A ring without key 1 cannot read it: the workflow task fails as UnknownPayloadKey (its
    # message, naming the key, is itself encrypted in the failure), never silently.
    with pytest.raises(Exception, match="UnknownPayloadKey"):
        await Replayer(workflows=WORKFLOWS, data_converter=key_2_only).replay_workflow(history)
