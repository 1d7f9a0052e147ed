"""The service layer, outside Temporal: guard, load, let the owner decide, save.

`activities.handling.decide` / `prepare` and the activity classes run here on a
FakeUnitOfWork. Refusals become `temporalio.exceptions.ApplicationError`, which
is exactly what a worker would hand to Temporal.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

import domain.contracts as contracts
from activities.authorization import authorize
from adapters.identity import load_trust
from activities.billing import BillingActivities
from activities.fraud import FraudActivities
from activities.handling import RACE_RETRIES, decide, prepare
from activities.invoicing import InvoicingActivities
from activities.notifications import NotificationsActivities
from activities.payments import PaymentsActivities
from activities.shipping import ShippingActivities
from domain.billing.commands import (
    CancelRefund,
    CompleteRefund,
    MarkOrderPaid,
    OrderLine,
    RecordDelivery,
    RecordShipment,
    RequestRefund,
)
from domain.billing.order import Order
from domain.billing.refund import RefundStatus
from domain.contracts import Outcome
from domain.billing.events import RefundApproved, RefundRejected
from domain.fraud.commands import ExpireFraudReview, ResolveFraudReview, ReviewDecision, ScreenRefund
from domain.invoicing.commands import CreateInvoice, CreditInvoice
from domain.notifications.commands import NotifyCustomer, NotifyTeam
from domain.notifications.events import MessageSent
from domain.payments.commands import (
    CapturePayment,
    ReconcileCapture,
    ReconcileGatewayRefund,
    RetryPaymentCapture,
    SendRefundToGateway,
    UpdatePaymentMethod,
)
from domain.payments.gateway import (
    Accepted,
    CaptureRequest,
    Declined,
    GatewayRefusedRequest,
    GatewayUnavailable,
    RefundRequest,
)
from domain.payments.payment import Payment
from domain.shared.actor import Actor, Role
from domain.shared.errors import InvalidCommand, NotAuthorized
from domain.shared.messages import Command
from domain.shipping.commands import ConfirmDelivery, InterceptShipment, ShipOrder
from tests.fakes import FakeDatabase, FakeUnitOfWork
from tests.tokens import SINCE, token_for
from tests.unit.builders import (
    CUSTOMER,
    CUSTOMER_ID,
    DELIVERED_AT,
    FRAUD_ANALYST,
    ORDER_ID,
    OTHER_CUSTOMER,
    SUPPORT,
    T0,
    WAREHOUSE,
    command,
    days,
    eur,
    names,
    place_order,
)


# -- the fake database, seen from the outside -------------------------------------------------------------
@dataclass
class Service:
    db: FakeDatabase = field(default_factory=FakeDatabase)

    def uow(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self.db)

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "tables": {
                    name: {id: (doc.version, doc.state) for id, doc in rows.items()} for name, rows in self.db.tables.items()
                },
                "outbox": [event.model_dump() for event in self.db.outbox],
                "processed": self.db.processed,
            }
        )

    def order(self, order_id: str = ORDER_ID) -> Order:
        with self.uow() as uow:
            return uow.orders.get(order_id)


@pytest.fixture
def service() -> Service:
    return Service()


@pytest.fixture
def billing(service: Service) -> BillingActivities:
    return BillingActivities(service.uow)


def delivered(billing: BillingActivities, total: str = "100.00") -> None:
    """An order placed, paid, shipped and delivered, through billing's activities."""
    billing.place_order(place_order(total))
    billing.mark_order_paid(command(MarkOrderPaid, order_id=ORDER_ID, amount=eur(total), payment_reference="ch_1"))
    billing.record_shipment(command(RecordShipment, order_id=ORDER_ID, tracking="TRK-1", shipped_at=T0))
    billing.record_delivery(command(RecordDelivery, order_id=ORDER_ID, delivered_at=DELIVERED_AT))


def refund_request(refund_id: str = "r-1", amount: str | None = "30.00", actor: Actor = CUSTOMER, **fields) -> RequestRefund:
    return command(
        RequestRefund,
        actor=actor,
        issued_at=fields.pop("issued_at", DELIVERED_AT + days(1)),
        order_id=fields.pop("order_id", ORDER_ID),
        refund_id=refund_id,
        amount=eur(amount) if amount else None,
        reason="broken",
        **fields,
    )


def refuses(call: Callable[[], object]) -> ApplicationError:
    with pytest.raises(ApplicationError) as refused:
        call()
    return refused.value


# == delivered twice =====================================================================================
def test_a_command_delivered_twice_returns_the_first_outcome_and_records_nothing_twice(service, billing):
    delivered(billing)
    cmd = refund_request()
    first = billing.request_refund(cmd)
    after_first = service.snapshot()
    again = billing.request_refund(cmd)
    assert again == first
    assert names(again.events) == ["RefundApproved"]
    assert service.snapshot() == after_first
    assert len(service.db.outbox) == len(after_first["outbox"])


def test_a_command_delivered_twice_is_not_decided_anew(service):
    asked = []
    cmd = command(CompleteRefund, order_id=ORDER_ID, refund_id="r-1", gateway_reference="re_1")
    decide(service.uow, cmd, lambda uow: asked.append(1))
    decide(service.uow, cmd, lambda uow: asked.append(2))
    assert asked == [1]


def test_a_command_delivered_again_later_gets_its_first_answer_although_the_state_moved_on(service, billing):
    delivered(billing)
    everything = refund_request("r-1", amount=None)
    assert names(billing.request_refund(everything).events) == ["RefundApproved"]
    # decided now, the same request would be a duplicate refund id with nothing left to refund
    assert names(billing.request_refund(everything).events) == ["RefundApproved"]
    assert billing.request_refund(everything).events[0].amount == eur("100")


def test_the_same_command_sent_again_later_with_another_token_gets_its_first_answer(service, billing):
    delivered(billing)
    first = billing.request_refund(refund_request(command_id="refund-r-1/request"))
    # A flow resumed days later sends it again: issued later, its token minted anew.
    again = billing.request_refund(refund_request(
        command_id="refund-r-1/request", issued_at=DELIVERED_AT + days(3),
        credential=token_for(CUSTOMER, lifetime=days(365 * 400)),
    ))
    assert again == first


def test_a_command_id_reused_for_another_order_is_refused_not_answered_with_the_first_orders_facts(service, billing):
    delivered(billing)
    billing.request_refund(refund_request("r-1", command_id="refund-r-1/request"))
    billing.place_order(place_order("40.00", order_id="o-2"))
    before = service.snapshot()

    # The refund id given again, for another order, after Temporal forgot the first flow.
    refused = refuses(lambda: billing.request_refund(
        refund_request("r-1", command_id="refund-r-1/request", order_id="o-2", amount="10.00")))

    assert (refused.type, refused.details) == ("InvalidCommand", ("command_id_reused",))
    assert "ask again under a new id" in refused.message
    assert service.snapshot() == before
    assert service.order("o-2").refunds == {}


def test_the_same_decision_taken_again_by_someone_else_gets_the_first_answer(service, billing):
    # A reset lost the Update that carried the first decision; another person decides again.
    delivered(billing)
    first = billing.request_refund(refund_request("r-1", command_id="refund-r-1/request"))

    again = billing.request_refund(refund_request("r-1", command_id="refund-r-1/request", actor=SUPPORT))

    assert again == first


def test_the_stored_outcome_reads_back_equal_to_the_one_first_returned(service, billing):
    delivered(billing)
    cmd = refund_request()
    first = billing.request_refund(cmd)
    assert Outcome.model_validate(service.db.processed[cmd.command_id]) == first


def test_every_processed_command_is_remembered_once(service, billing):
    delivered(billing)
    assert len(service.db.processed) == 4
    assert len(service.db.outbox) == 4
    assert names(service.db.outbox) == ["OrderPlaced", "OrderPaid", "ShipmentRecorded", "DeliveryRecorded"]


# == refusals ===============================================================================================
REFUSALS: dict[str, tuple[Callable[[], Command], str, str]] = {
    "amount_not_positive": (lambda: refund_request(amount="0.00"), "InvalidCommand", "amount_not_positive"),
    "currency_mismatch": (
        lambda: refund_request(amount=None).model_copy(update={"amount": contracts.Money.of("1", "USD")}),
        "InvalidCommand",
        "currency_mismatch",
    ),
    "someone_elses_order": (lambda: refund_request(actor=OTHER_CUSTOMER), "NotAuthorized", "not_your_order"),
    "role_not_allowed": (lambda: refund_request(actor=WAREHOUSE), "NotAuthorized", "role_not_allowed"),
    "unknown_order": (lambda: refund_request(order_id="o-404"), "NotFound", "not_found"),
}


@pytest.mark.parametrize(("build", "kind", "code"), REFUSALS.values(), ids=REFUSALS.keys())
def test_a_refused_command_fails_for_good_and_leaves_the_database_unchanged(service, billing, build, kind, code):
    delivered(billing)
    before = service.snapshot()
    cmd = build()
    error = refuses(lambda: billing.request_refund(cmd))
    assert error.type == kind
    assert error.non_retryable is True
    assert error.details == (code,)
    assert service.snapshot() == before
    assert cmd.command_id not in service.db.processed


def test_a_copy_of_a_command_decided_while_it_was_deciding_gets_the_first_answer_not_a_refusal(service, billing):
    """A timed-out local activity's retry runs beside its first attempt. The retry finds no
    answer in the inbox, the first attempt then commits, and the retry's owner sees the new
    state (PostgreSQL's READ COMMITTED) and refuses: `duplicate_refund`. The flow took that
    for a rejection while billing had approved and reserved the refund."""
    delivered(billing)
    cmd = refund_request()
    first: list[Outcome] = []

    class FirstCopyCommitsMeanwhile(FakeUnitOfWork):
        def processed_result(self, command_id: str):
            found = super().processed_result(command_id)
            if command_id == cmd.command_id and not first:
                first.append(billing.request_refund(cmd))  # the other copy decides now
            return found

    second = BillingActivities(lambda: FirstCopyCommitsMeanwhile(service.db)).request_refund(cmd)

    assert second == first[0] and names(second.events) == ["RefundApproved"]
    assert names(service.db.outbox).count("RefundApproved") == 1


def test_a_refused_command_may_be_asked_again_and_is_refused_again(service, billing):
    delivered(billing)
    cmd = refund_request(actor=OTHER_CUSTOMER)
    assert refuses(lambda: billing.request_refund(cmd)).type == "NotAuthorized"
    assert refuses(lambda: billing.request_refund(cmd)).type == "NotAuthorized"


def test_a_second_order_with_the_same_id_is_refused_and_the_first_is_kept(service, billing):
    billing.place_order(place_order("100.00"))
    before = service.snapshot()
    error = refuses(lambda: billing.place_order(place_order("5.00")))
    assert (error.type, error.details, error.non_retryable) == ("InvalidCommand", ("already_exists",), True)
    assert service.snapshot() == before
    assert service.order().total == eur("100")


def test_a_business_no_is_an_outcome_not_a_failure(service, billing):
    delivered(billing)
    outcome = billing.request_refund(refund_request(amount="100.01"))
    assert names(outcome.events) == ["RefundRejected"]
    assert outcome.events[0].reason_code == "exceeds_refundable"
    assert service.order().refunds["r-1"].status is RefundStatus.REJECTED


# == the authorization guard ==================================================================================
def test_a_command_decided_before_is_answered_from_the_inbox_even_once_its_token_has_expired(service, billing):
    # A resumed flow sends its request again, issued at the resume: after its token expired.
    delivered(billing)
    asked_at = DELIVERED_AT + days(1)
    token = token_for(CUSTOMER, lifetime=asked_at - SINCE + days(1))  # valid for a day after asking
    first = billing.request_refund(refund_request("r-1", credential=token, command_id="refund-r-1/request"))
    after_first = service.snapshot()

    again = billing.request_refund(
        refund_request("r-1", credential=token, command_id="refund-r-1/request", issued_at=asked_at + days(30))
    )

    assert again == first
    assert service.snapshot() == after_first
    new_request = refund_request("r-2", credential=token, issued_at=asked_at + days(30))
    assert refuses(lambda: billing.request_refund(new_request)).type == "NotAuthorized"  # never decided: refused


def test_a_known_command_id_with_another_actors_or_a_forged_token_gets_no_answer_from_the_inbox(service, billing):
    delivered(billing)
    asked_at = DELIVERED_AT + days(1)
    billing.request_refund(refund_request("r-1", command_id="refund-r-1/request"))
    expired_other = token_for(Actor(role=Role.CUSTOMER, id="c-other"), lifetime=asked_at - SINCE)
    forged = token_for(CUSTOMER)[:-4] + "AAAA"
    for token in (expired_other, forged, None):
        again = refund_request("r-1", credential=token, command_id="refund-r-1/request", issued_at=asked_at + days(30))
        assert refuses(lambda: billing.request_refund(again)).type == "NotAuthorized"


def test_the_guard_refuses_a_role_the_command_does_not_allow_before_the_owner_is_called(service, billing):
    delivered(billing)
    billing.request_refund(refund_request("r-1"))
    before = service.snapshot()
    asked = []
    by_customer = command(CompleteRefund, actor=CUSTOMER, order_id=ORDER_ID, refund_id="r-1", gateway_reference="re_x")
    error = refuses(lambda: decide(service.uow, by_customer, lambda uow: asked.append(uow)))
    assert asked == []
    assert (error.type, error.details, error.non_retryable) == ("NotAuthorized", ("role_not_allowed",), True)
    assert "customer may not send CompleteRefund" in error.message
    assert refuses(lambda: billing.complete_refund(by_customer)).type == "NotAuthorized"
    assert service.snapshot() == before
    assert service.order().refunds["r-1"].status is RefundStatus.APPROVED


def test_the_guard_also_runs_before_prepare(service):
    asked = []
    cmd = command(
        CapturePayment, actor=CUSTOMER, order_id=ORDER_ID, customer_id=CUSTOMER_ID, amount=eur("1"), card_token="tok"
    )
    assert refuses(lambda: prepare(service.uow, cmd, lambda uow: asked.append(uow))).type == "NotAuthorized"
    assert asked == []


def all_commands() -> list[type[Command]]:
    """Every concrete command of the domain (a class that says who may issue it)."""
    import domain

    for module in pkgutil.walk_packages(domain.__path__, "domain."):
        importlib.import_module(module.name)
    found, todo = set(), [Command]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("domain.") and hasattr(sub, "issued_by") and not sub.__subclasses__():
                found.add(sub)
    return sorted(found, key=lambda cls: cls.__name__)


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("command_type", all_commands(), ids=lambda cls: cls.__name__)
def test_the_guard_lets_through_exactly_the_roles_a_command_is_issued_by(command_type, role):
    actor = Actor(role=role, id="someone")
    cmd = command_type.model_construct(
        actor=actor, issued_at=T0, credential=None if role is Role.SYSTEM else token_for(actor)
    )
    if role in command_type.issued_by:
        authorize(cmd)
    else:
        with pytest.raises(NotAuthorized) as refused:
            authorize(cmd)
        assert refused.value.code == "role_not_allowed"


S, C, SU, W, F = Role.SYSTEM, Role.CUSTOMER, Role.SUPPORT, Role.WAREHOUSE, Role.FRAUD_ANALYST
WHO_MAY_SEND = {
    "PlaceOrder": {C, SU, S},
    "RequestRefund": {C, SU, S},
    "CancelOrder": {C, SU, S},
    "MarkOrderPaid": {S},
    "RecordShipment": {S},
    "ClearOrderForShipping": {S, W, SU},
    "RecordInterceptOutcome": {S},
    "RecordDelivery": {S},
    "CompleteRefund": {S},
    "FailRefund": {S},
    "CancelRefund": {S},
    "CapturePayment": {S},
    "RetryPaymentCapture": {S},
    "UpdatePaymentMethod": {C, SU, S},
    "SendRefundToGateway": {S},
    "MarkRefundUnknown": {S},
    "MarkCaptureUnknown": {S},
    "ReconcileGatewayRefund": {S},
    "ReconcileCapture": {S},
    "RecordDiscrepancy": {S},
    "ResolveDiscrepancy": {SU},
    "ScreenRefund": {S},
    "ResolveFraudReview": {F},
    "ExpireFraudReview": {S},
    "WithdrawRefund": {S},
    "ShipOrder": {W, SU},
    "ConfirmDelivery": {W, SU},
    "InterceptShipment": {S},
    "NotifyCustomer": {S},
    "NotifyTeam": {S},
    "CreateInvoice": {S},
    "CreditInvoice": {S},
}


@pytest.mark.parametrize("command_type", all_commands(), ids=lambda cls: cls.__name__)
def test_each_command_is_issued_by_the_roles_the_design_names(command_type):
    assert command_type.name() in WHO_MAY_SEND, f"{command_type.name()} has no entry in WHO_MAY_SEND"
    assert set(command_type.issued_by) == WHO_MAY_SEND[command_type.name()]


# == lost races ================================================================================================
def test_a_lost_race_reloads_and_lets_the_owner_decide_again_on_fresh_state(service, billing):
    delivered(billing)
    rival_cmd = refund_request("r-rival", amount="80.00", actor=SUPPORT)
    ours = refund_request("r-ours", amount="50.00")
    seen_refundable = []

    def owner_decides(uow):
        order = uow.orders.get(ORDER_ID)
        seen_refundable.append(order.refundable)
        if len(seen_refundable) == 1:
            # another worker, on the same database, commits first
            rival = FakeUnitOfWork(service.db)
            with rival:
                rival.orders.get(ORDER_ID).request_refund(rival_cmd)
                rival.commit(rival_cmd, {})
        order.request_refund(ours)

    outcome = decide(service.uow, ours, owner_decides)
    assert seen_refundable == [eur("100"), eur("20")]
    assert names(outcome.events) == ["RefundRejected"]
    assert outcome.events[0].reason_code == "exceeds_refundable"
    order = service.order()
    assert order.refunds["r-rival"].status is RefundStatus.APPROVED
    assert order.refunds["r-ours"].status is RefundStatus.REJECTED
    assert names(service.db.outbox)[-2:] == ["RefundApproved", "RefundRejected"]
    assert ours.command_id in service.db.processed


def test_a_command_that_keeps_losing_races_is_handed_back_to_temporal_to_retry(service, billing):
    delivered(billing)
    attempts = []

    def owner_decides(uow):
        order = uow.orders.get(ORDER_ID)
        attempts.append(1)
        rival_cmd = refund_request(f"r-rival-{len(attempts)}", amount="1.00", actor=SUPPORT)
        with FakeUnitOfWork(service.db) as rival:
            rival.orders.get(ORDER_ID).request_refund(rival_cmd)
            rival.commit(rival_cmd, {})
        order.request_refund(refund_request("r-ours", amount="1.00"))

    ours = refund_request("r-ours", amount="1.00")
    error = refuses(lambda: decide(service.uow, ours, owner_decides))
    assert error.type == "ConcurrencyConflict"
    assert error.non_retryable is False
    assert len(attempts) == RACE_RETRIES
    assert "r-ours" not in service.order().refunds
    assert ours.command_id not in service.db.processed


def test_the_same_command_racing_itself_is_decided_once(service, billing):
    delivered(billing)
    cmd = refund_request("r-1", amount="30.00")

    def owner_decides(uow):
        order = uow.orders.get(ORDER_ID)
        if cmd.command_id not in service.db.processed:
            # the same command, delivered twice at once, finishes first elsewhere
            other = BillingActivities(service.uow)
            other.request_refund(cmd)
        order.request_refund(cmd)

    outcome = decide(service.uow, cmd, owner_decides)
    assert names(outcome.events) == ["RefundApproved"]
    assert names(service.db.outbox).count("RefundApproved") == 1
    assert service.order().refundable == eur("70")


# == the trace on every event ===================================================================================
def test_events_carry_the_correlation_and_causation_ids_of_their_command(service, billing):
    delivered(billing)
    cmd = refund_request(correlation_id="refund-r-1")
    outcome = billing.request_refund(cmd)
    recorded = service.db.outbox[-1]
    for event in (*outcome.events, recorded):
        assert event.correlation_id == "refund-r-1"
        assert event.causation_id == cmd.command_id
        assert event.occurred_at == cmd.issued_at
    assert recorded.event_id == outcome.events[0].event_id


def test_event_ids_are_derived_from_the_command_so_deciding_again_gives_the_same_ids():
    def run() -> list[str]:
        billing = BillingActivities(Service().uow)
        billing.place_order(place_order("100.00").model_copy(update={"command_id": "place-1"}))
        billing.mark_order_paid(
            command(MarkOrderPaid, command_id="pay-1", order_id=ORDER_ID, amount=eur("100"), payment_reference="ch")
        )
        billing.record_shipment(
            command(RecordShipment, command_id="ship-1", order_id=ORDER_ID, tracking="TRK", shipped_at=T0)
        )
        outcome = billing.request_refund(refund_request(command_id="refund-1", amount=None))
        return [event.event_id for event in outcome.events]

    first, second = run(), run()
    assert first == second
    assert len(first) == 2 and len(set(first)) == 2  # RefundApproved, ShipmentInterceptRequested


def test_different_commands_record_different_event_ids(service, billing):
    delivered(billing)
    ids = [event.event_id for event in service.db.outbox]
    assert len(set(ids)) == len(ids)
    assert all(ids)


# == prepare: the first half of a decision around a gateway call =================================================
def capture(command_id: str = "capture-1") -> CapturePayment:
    return command(
        CapturePayment,
        command_id=command_id,
        order_id=ORDER_ID,
        customer_id=CUSTOMER_ID,
        amount=eur("100"),
        card_token="tok_visa",
    )


def begin(uow, cmd: CapturePayment) -> CaptureRequest:
    payment = uow.payments.find(cmd.order_id) or uow.payments.add(Payment.for_order(cmd))
    return payment.begin_capture(cmd)


def test_prepare_saves_what_the_owner_decided_to_ask_without_marking_the_command_processed(service):
    cmd = capture()
    request = prepare(service.uow, cmd, lambda uow: begin(uow, cmd))
    assert isinstance(request, CaptureRequest) and request.idempotency_key == "capture-1"
    assert names(service.db.outbox) == ["CaptureAttempted"]
    assert cmd.command_id not in service.db.processed
    with service.uow() as uow:
        assert uow.payments.get(ORDER_ID).attempts[0].attempt_id == "capture-1"


def test_prepare_asked_again_asks_the_same_thing_and_records_nothing_new(service):
    cmd = capture()
    first = prepare(service.uow, cmd, lambda uow: begin(uow, cmd))
    before = service.snapshot()
    assert prepare(service.uow, cmd, lambda uow: begin(uow, cmd)) == first
    assert service.snapshot() == before


def test_once_the_decision_is_finished_prepare_returns_the_stored_outcome(service):
    cmd = capture()
    prepare(service.uow, cmd, lambda uow: begin(uow, cmd))
    outcome = decide(service.uow, cmd, lambda uow: uow.payments.get(ORDER_ID).record_capture_answer(cmd, Accepted("ch")))
    assert names(outcome.events) == ["PaymentCaptured"]
    asked = []
    assert prepare(service.uow, cmd, lambda uow: asked.append(uow)) == outcome
    assert asked == []


def test_a_refusal_in_prepare_is_final_and_saves_nothing(service):
    cmd = capture()
    prepare(service.uow, cmd, lambda uow: begin(uow, cmd))
    decide(service.uow, cmd, lambda uow: uow.payments.get(ORDER_ID).record_capture_answer(cmd, Accepted("ch")))
    before = service.snapshot()
    second = capture("capture-2")
    error = refuses(lambda: prepare(service.uow, second, lambda uow: begin(uow, second)))
    assert (error.type, error.details, error.non_retryable) == ("InvalidCommand", ("already_captured",), True)
    assert service.snapshot() == before


# == the activity classes, called directly ========================================================================
def test_billing_activities_run_a_refund_from_request_to_completion(service, billing):
    delivered(billing)
    approved = billing.request_refund(refund_request("r-1", amount="30.00"))
    assert names(approved.events) == ["RefundApproved"]
    assert service.order().refundable == eur("70")
    completed = billing.complete_refund(
        command(CompleteRefund, order_id=ORDER_ID, refund_id="r-1", gateway_reference="re_1")
    )
    assert names(completed.events) == ["RefundCompleted"]
    order = service.order()
    assert order.refunds["r-1"].status is RefundStatus.COMPLETED
    assert order.refunded == eur("30") and order.version == 6


def test_billing_activities_cancel_a_refund_and_free_its_amount(service, billing):
    delivered(billing)
    billing.request_refund(refund_request("r-1", amount="30.00"))
    outcome = billing.cancel_refund(command(CancelRefund, order_id=ORDER_ID, refund_id="r-1", reason="review_rejected"))
    assert names(outcome.events) == ["RefundCancelled"]
    assert service.order().refundable == eur("100")


def test_billing_activities_refuse_a_refund_that_is_no_longer_in_flight(service, billing):
    delivered(billing)
    billing.request_refund(refund_request("r-1", amount="30.00"))
    billing.complete_refund(command(CompleteRefund, order_id=ORDER_ID, refund_id="r-1", gateway_reference="re_1"))
    before = service.snapshot()
    error = refuses(
        lambda: billing.fail_refund(
            command(
                contracts.FailRefund,
                order_id=ORDER_ID,
                refund_id="r-1",
                reason="late decline",
                confirmed_by="GatewayRefundDeclined",
                evidence="event-1",
            )
        )
    )
    assert (error.type, error.details) == ("InvalidCommand", ("refund_not_in_flight",))
    assert service.snapshot() == before


def test_billing_activities_cancel_a_paid_order_and_say_a_refund_is_owed(service, billing):
    billing.place_order(place_order("100.00"))
    billing.mark_order_paid(command(MarkOrderPaid, order_id=ORDER_ID, amount=eur("100"), payment_reference="ch_1"))
    outcome = billing.cancel_order(command(contracts.CancelOrder, actor=CUSTOMER, order_id=ORDER_ID, reason="too slow"))
    assert names(outcome.events) == ["OrderCancelled", "RefundOwed"]
    assert service.order().cancelled


@dataclass
class FakeGateway:
    """Answers like a card processor would; remembers every request it saw."""

    answers: list[Any] = field(default_factory=list)
    captures: list[CaptureRequest] = field(default_factory=list)
    refunds: list[RefundRequest] = field(default_factory=list)
    account_id: str | Exception = "test:acct_fake"

    def account(self) -> str:
        if isinstance(self.account_id, Exception):
            raise self.account_id
        return self.account_id

    def capture(self, request: CaptureRequest):
        self.captures.append(request)
        return self._answer()

    def refund(self, request: RefundRequest):
        self.refunds.append(request)
        return self._answer()

    def _answer(self):
        answer = self.answers.pop(0) if self.answers else Accepted("gw_1")
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_payments_activities_capture_once_however_often_the_command_is_delivered(service):
    gateway = FakeGateway(answers=[Accepted("ch_1")])
    payments = PaymentsActivities(service.uow, gateway)
    cmd = capture()
    first = payments.capture_payment(cmd)
    assert names(first.events) == ["PaymentCaptured"]
    assert payments.capture_payment(cmd) == first
    assert len(gateway.captures) == 1
    assert names(service.db.outbox) == ["CaptureAttempted", "PaymentCaptured"]


def test_payments_keeps_the_account_each_request_went_to(service):
    gateway = FakeGateway(answers=[Accepted("ch_1"), Accepted("re_1")], account_id="live:acct_1")
    payments = PaymentsActivities(service.uow, gateway)
    payments.capture_payment(capture())
    with service.uow() as uow:
        payment = uow.payments.get("o-1")
    assert [a.sent_to for a in payment.attempts] == ["live:acct_1"]


@pytest.mark.parametrize("trouble", [GatewayUnavailable("Stripe unreachable"), GatewayRefusedRequest("key revoked")])
def test_a_capture_whose_account_cannot_be_told_is_retried_and_records_nothing(service, trouble):
    gateway = FakeGateway(account_id=trouble)
    payments = PaymentsActivities(service.uow, gateway)
    with pytest.raises(ApplicationError) as raised:
        payments.capture_payment(capture())
    assert (raised.value.type, raised.value.non_retryable) == ("GatewayAccountUnknown", False)
    assert gateway.captures == [] and service.db.outbox == []


def test_payments_activities_record_a_decline_with_its_code(service):
    payments = PaymentsActivities(service.uow, FakeGateway(answers=[Declined("insufficient_funds")]))
    outcome = payments.capture_payment(capture())
    assert names(outcome.events) == ["PaymentDeclined"]
    assert outcome.events[0].decline_code == "insufficient_funds"


def test_an_unavailable_gateway_is_retried_with_the_same_idempotency_key(service):
    gateway = FakeGateway(answers=[GatewayUnavailable("503"), Accepted("ch_1")])
    payments = PaymentsActivities(service.uow, gateway)
    cmd = capture()
    error = refuses(lambda: payments.capture_payment(cmd))
    assert error.type == "GatewayUnavailable" and error.non_retryable is False
    assert cmd.command_id not in service.db.processed
    outcome = payments.capture_payment(cmd)  # Temporal's retry: the same command
    assert names(outcome.events) == ["PaymentCaptured"]
    assert [r.idempotency_key for r in gateway.captures] == ["capture-1", "capture-1"]
    assert names(service.db.outbox) == ["CaptureAttempted", "PaymentCaptured"]


def test_payments_activities_send_a_refund_against_the_capture(service):
    gateway = FakeGateway(answers=[Accepted("ch_1", "EUR"), Accepted("re_1")])
    payments = PaymentsActivities(service.uow, gateway)
    payments.capture_payment(capture())
    send = command(SendRefundToGateway, order_id=ORDER_ID, refund_id="r-1", amount=eur("30"))
    outcome = payments.send_refund_to_gateway(send)
    assert names(outcome.events) == ["GatewayRefundSettled"]  # the request itself was saved by `prepare`
    assert names(service.db.outbox)[-2:] == ["GatewayRefundRequested", "GatewayRefundSettled"]
    assert gateway.refunds == [RefundRequest(idempotency_key="r-1", charge="ch_1", amount=eur("30"), reference="r-1",
                                             order_id=ORDER_ID, charge_currency="EUR", sent_to="test:acct_fake")]
    assert payments.send_refund_to_gateway(send) == outcome
    assert len(gateway.refunds) == 1


@dataclass
class GatewayAnsweringLate(FakeGateway):
    """While a request is out, reconciliation looks the same business id up and settles it
    (the request was sent so long ago that its flow seemed gone): `meanwhile` runs then."""

    meanwhile: Callable[[], object] = lambda: None

    def capture(self, request: CaptureRequest):
        self.meanwhile()
        return super().capture(request)

    def refund(self, request: RefundRequest):
        self.meanwhile()
        return super().refund(request)

    def find_capture(self, request: CaptureRequest):
        return Accepted("ch_1", "EUR")

    def find_refund(self, request: RefundRequest):
        return Accepted("re_1")


def test_a_capture_answered_by_reconciliation_while_its_request_was_out_gets_reconciliations_answer(service):
    """The flow's own answer arrives after reconciliation recorded one: the flow used to be
    refused (no_open_attempt) and fail; it now gets the answer payments recorded, once."""
    gateway = GatewayAnsweringLate(answers=[Accepted("ch_1", "EUR")])
    payments = PaymentsActivities(service.uow, gateway)
    cmd = capture()
    late = command(ReconcileCapture, order_id=ORDER_ID, attempt_id=cmd.command_id, issued_at=T0 + Payment.SENT_TOO_LONG)
    gateway.meanwhile = lambda: payments.reconcile_capture(late)

    outcome = payments.capture_payment(cmd)

    assert names(outcome.events) == ["PaymentCaptured"] and outcome.command_id == late.command_id
    assert names(service.db.outbox) == ["CaptureAttempted", "PaymentCaptured"]  # recorded once
    assert payments.capture_payment(cmd) == outcome  # delivered again: the same answer


def test_a_refund_answered_by_reconciliation_while_its_request_was_out_gets_reconciliations_answer(service):
    gateway = GatewayAnsweringLate(answers=[Accepted("ch_1", "EUR"), Accepted("re_1")])
    payments = PaymentsActivities(service.uow, gateway)
    payments.capture_payment(capture())
    send = command(SendRefundToGateway, order_id=ORDER_ID, refund_id="r-1", amount=eur("30"))
    late = command(ReconcileGatewayRefund, order_id=ORDER_ID, refund_id="r-1", issued_at=T0 + Payment.SENT_TOO_LONG)
    gateway.meanwhile = lambda: payments.reconcile_gateway_refund(late)

    outcome = payments.send_refund_to_gateway(send)

    assert names(outcome.events) == ["GatewayRefundSettled"]
    assert names(service.db.outbox).count("GatewayRefundSettled") == 1


@dataclass
class FakeMailbox:
    delivered: list[MessageSent] = field(default_factory=list)

    def deliver(self, message: MessageSent) -> None:
        self.delivered.append(message)


def test_the_customer_gets_exactly_one_message_however_often_it_is_asked_for(service):
    mailbox = FakeMailbox()
    notifications = NotificationsActivities(service.uow, mailbox)

    def notify() -> NotifyCustomer:
        return command(
            NotifyCustomer,
            customer_id=CUSTOMER_ID,
            kind="refund_completed",
            subject="r-1",
            facts={"refund_id": "r-1", "order_id": ORDER_ID, "amount": "30.00 EUR"},
        )

    first = notifications.notify_customer(notify())
    second = notifications.notify_customer(notify())  # another command: another step asked again
    assert names(first.events) == ["MessageSent"] and second.events == []
    assert len(mailbox.delivered) == 1
    assert names(service.db.outbox).count("MessageSent") == 1


def test_a_message_that_cannot_be_rendered_is_neither_delivered_nor_saved(service):
    mailbox = FakeMailbox()
    notifications = NotificationsActivities(service.uow, mailbox)
    cmd = command(NotifyCustomer, customer_id=CUSTOMER_ID, kind="refund_completed", subject="r-1", facts={})
    error = refuses(lambda: notifications.notify_customer(cmd))
    assert (error.type, error.details) == ("InvalidCommand", ("missing_fact",))
    assert mailbox.delivered == [] and service.snapshot()["tables"].get("notifications", {}) == {}


def test_an_order_is_invoiced_once_however_often_it_is_asked(service):
    invoicing = InvoicingActivities(service.uow)

    def create() -> CreateInvoice:
        return command(
            CreateInvoice,
            order_id=ORDER_ID,
            customer_id=CUSTOMER_ID,
            lines=[OrderLine(description="book", amount=eur("100"))],
            total=eur("100"),
            payment_reference="ch_1",
        )

    first = invoicing.create_invoice(create())
    second = invoicing.create_invoice(create())
    assert names(first.events) == ["InvoiceCreated"] and second.events == []
    assert len(service.db.tables["invoices"]) == 1


def test_a_refund_is_credited_on_the_orders_invoice_once_and_an_order_never_invoiced_is_refused(service):
    invoicing = InvoicingActivities(service.uow)
    invoicing.create_invoice(command(
        CreateInvoice, order_id=ORDER_ID, customer_id=CUSTOMER_ID,
        lines=[OrderLine(description="book", amount=eur("100"))], total=eur("100"), payment_reference="ch_1",
    ))

    def credit(order_id: str = ORDER_ID) -> CreditInvoice:
        return command(CreditInvoice, order_id=order_id, refund_id="r-1", amount=eur("40"))

    first, again = invoicing.credit_invoice(credit()), invoicing.credit_invoice(credit())
    error = refuses(lambda: invoicing.credit_invoice(credit("o-never-invoiced")))

    assert names(first.events) == ["InvoiceCredited"] and again.events == []
    [stored] = service.db.tables["invoices"].values()
    assert [note["refund_id"] for note in stored.state["credit_notes"]] == ["r-1"]
    assert (error.type, error.details) == ("NotFound", ("no_invoice",))


def test_fraud_activities_screen_against_the_customers_recorded_history(service):
    fraud = FraudActivities(service.uow)

    def screen(refund_id: str, days_ago: int) -> ScreenRefund:
        return command(
            ScreenRefund,
            refund_id=refund_id,
            order_id=f"o-{refund_id}",
            customer_id=CUSTOMER_ID,
            amount=eur("10"),
            approved_at=T0 - days(days_ago),
        )

    assert names(fraud.screen_refund(screen("r-1", 2)).events) == ["RefundCleared"]
    assert names(fraud.screen_refund(screen("r-2", 1)).events) == ["RefundCleared"]
    third = fraud.screen_refund(screen("r-3", 0))
    assert names(third.events) == ["FraudReviewOpened"]
    assert third.events[0].reasons == ["frequent_refunds"]
    error = refuses(lambda: fraud.screen_refund(screen("r-3", 0)))  # another command for the same refund
    assert (error.type, error.details) == ("InvalidCommand", ("already_exists",))


def test_shipping_activities_ship_and_intercept_a_parcel(service):
    shipping = ShippingActivities(service.uow)
    shipped = shipping.ship_order(command(ShipOrder, actor=WAREHOUSE, order_id=ORDER_ID, tracking="TRK-1"))
    assert names(shipped.events) == ["OrderShipped"]
    stopped = shipping.intercept_shipment(command(InterceptShipment, order_id=ORDER_ID, refund_id="r-1"))
    assert names(stopped.events) == ["ShipmentIntercepted"]
    error = refuses(
        lambda: shipping.intercept_shipment(command(InterceptShipment, order_id="o-404", refund_id="r-1"))
    )
    assert error.type == "NotFound"


# == the messages themselves ==========================================================================================
def test_a_command_must_say_when_it_was_issued_with_a_time_zone():
    with pytest.raises(ValidationError):
        command(CompleteRefund, issued_at=datetime(2025, 3, 1, 9, 0), order_id=ORDER_ID, refund_id="r", gateway_reference="g")


def test_a_command_needs_an_id_and_takes_no_unknown_fields():
    with pytest.raises(ValidationError):
        command(CompleteRefund, command_id="", order_id=ORDER_ID, refund_id="r", gateway_reference="g")
    with pytest.raises(ValidationError):
        command(CompleteRefund, order_id=ORDER_ID, refund_id="r", gateway_reference="g", surprise=1)


def test_commands_and_events_are_immutable():
    cmd = refund_request()
    with pytest.raises(ValidationError):
        cmd.amount = eur("1")  # type: ignore[misc]


def test_a_command_names_its_owners_activity():
    assert RequestRefund.activity_name() == "billing.RequestRefund"
    assert CapturePayment.activity_name() == "payments.CapturePayment"
    assert ScreenRefund.activity_name() == "fraud.ScreenRefund"
    assert ShipOrder.activity_name() == "shipping.ShipOrder"
    assert CreateInvoice.activity_name() == "invoicing.CreateInvoice"
    assert NotifyCustomer.activity_name() == "notifications.NotifyCustomer"


def test_an_actor_is_written_role_colon_id():
    assert Actor.parse("customer:c-1") == CUSTOMER
    assert str(SUPPORT) == "support:agent-7"
    assert Actor.system("payment-recovery") == Actor(role=Role.SYSTEM, id="payment-recovery")


@pytest.mark.parametrize(("text", "code"), [("c-1", "invalid_actor"), ("customer:", "invalid_actor"), ("boss:b-1", "unknown_role")])
def test_an_actor_that_cannot_be_read_is_refused(text, code):
    with pytest.raises(InvalidCommand) as refused:
        Actor.parse(text)
    assert refused.value.code == code


def test_an_actor_needs_an_id():
    with pytest.raises(ValidationError):
        Actor(role=Role.CUSTOMER, id="  ")


# == the remaining activities ===========================================================================================
def test_fraud_activities_resolve_and_expire_reviews(service):
    fraud = FraudActivities(service.uow)
    for refund_id in ("r-big-1", "r-big-2"):
        opened = fraud.screen_refund(
            command(
                ScreenRefund,
                refund_id=refund_id,
                order_id=f"o-{refund_id}",
                customer_id=f"c-{refund_id}",
                amount=eur("2500"),
                approved_at=T0,
            )
        )
        assert names(opened.events) == ["FraudReviewOpened"]
    approved = fraud.resolve_fraud_review(
        command(ResolveFraudReview, actor=FRAUD_ANALYST, refund_id="r-big-1", decision=ReviewDecision.APPROVE)
    )
    assert names(approved.events) == ["ReviewApproved"]
    expired = fraud.expire_fraud_review(command(ExpireFraudReview, refund_id="r-big-2", issued_at=T0 + days(3)))
    assert names(expired.events) == ["ReviewRejected"] and expired.events[0].reason == "review_expired"
    before = service.snapshot()
    error = refuses(lambda: fraud.expire_fraud_review(command(ExpireFraudReview, refund_id="r-big-1")))
    assert (error.type, error.details) == ("InvalidCommand", ("review_not_open",))
    assert service.snapshot() == before
    by_support = command(ResolveFraudReview, actor=SUPPORT, refund_id="r-big-2", decision=ReviewDecision.APPROVE)
    assert refuses(lambda: fraud.resolve_fraud_review(by_support)).type == "NotAuthorized"


def test_a_team_gets_exactly_one_alert_however_often_it_is_asked_for(service):
    mailbox = FakeMailbox()
    notifications = NotificationsActivities(service.uow, mailbox)

    def alert() -> NotifyTeam:
        return command(
            NotifyTeam,
            team="fraud",
            kind="fraud_review_reminder",
            subject="r-1",
            facts={"refund_id": "r-1", "order_id": ORDER_ID, "amount": "2500.00 EUR"},
        )

    assert names(notifications.notify_team(alert()).events) == ["MessageSent"]
    assert notifications.notify_team(alert()).events == []
    assert [m.recipient for m in mailbox.delivered] == ["team:fraud"]


def test_payments_activities_retry_a_declined_capture_with_the_new_card(service):
    gateway = FakeGateway(answers=[Declined("insufficient_funds"), Accepted("ch_2")])
    payments = PaymentsActivities(service.uow, gateway)
    payments.capture_payment(capture())
    updated = payments.update_payment_method(
        command(UpdatePaymentMethod, actor=CUSTOMER, order_id=ORDER_ID, card_token="tok_new")
    )
    assert names(updated.events) == ["PaymentMethodUpdated"]
    retry = command(RetryPaymentCapture, order_id=ORDER_ID)
    outcome = payments.retry_payment_capture(retry)
    assert names(outcome.events) == ["PaymentCaptured"]
    assert [r.card_token for r in gateway.captures] == ["tok_visa", "tok_new"]
    assert [r.idempotency_key for r in gateway.captures] == ["capture-1", retry.command_id]


def test_a_retry_for_an_order_without_a_payment_is_not_found(service):
    payments = PaymentsActivities(service.uow, FakeGateway())
    error = refuses(lambda: payments.retry_payment_capture(command(RetryPaymentCapture, order_id="o-404")))
    assert (error.type, error.non_retryable) == ("NotFound", True)


def test_a_request_the_gateway_calls_wrong_is_not_retried(service):
    gateway = FakeGateway(answers=[GatewayRefusedRequest("unknown card token")])
    payments = PaymentsActivities(service.uow, gateway)
    error = refuses(lambda: payments.capture_payment(capture()))
    assert (error.type, error.non_retryable) == ("GatewayRefusedRequest", True)
    assert capture().command_id not in service.db.processed


def test_shipping_activities_confirm_a_delivery(service):
    shipping = ShippingActivities(service.uow)
    shipping.ship_order(command(ShipOrder, actor=WAREHOUSE, order_id=ORDER_ID, tracking="TRK-1", issued_at=T0))
    arrived = shipping.confirm_delivery(
        command(ConfirmDelivery, actor=WAREHOUSE, order_id=ORDER_ID, issued_at=T0 + days(2))
    )
    assert names(arrived.events) == ["OrderDelivered"] and arrived.events[0].delivered_at == T0 + days(2)
    late = shipping.intercept_shipment(command(InterceptShipment, order_id=ORDER_ID, refund_id="r-1"))
    assert names(late.events) == ["ShipmentInterceptFailed"]


def test_an_outcome_answers_which_events_it_holds(service, billing):
    delivered(billing)
    outcome = billing.request_refund(refund_request(amount="500.00"))
    assert outcome.has(RefundRejected) and not outcome.has(RefundApproved)
    assert outcome.first(RefundRejected).reason_code == "exceeds_refundable"
    assert outcome.first(RefundApproved) is None
    assert outcome.event_names == ["RefundRejected"] == [RefundRejected.name()]


def test_every_command_is_served_on_its_owners_task_queue_and_nowhere_else():
    from activities.registry import OWNER_QUEUES, activities_for

    served = {
        queue: {
            getattr(fn, "__temporal_activity_definition").name
            for fn in activities_for(queue, Service().uow, FakeGateway(), FakeMailbox())
        }
        for queue in OWNER_QUEUES
    }
    for command_type in all_commands():
        queues = [queue for queue, names_ in served.items() if command_type.activity_name() in names_]
        assert queues == [command_type.owner], f"{command_type.name()} is served on {queues}"


def test_a_payload_with_an_unknown_key_id_fails_with_a_message_naming_the_key():
    import asyncio

    from adapters.codec import EncryptionCodec, KeyRing, UnknownPayloadKey
    from temporalio.api.common.v1 import Payload

    one = EncryptionCodec(KeyRing("k1", {"k1": b"1" * 32}))
    two = EncryptionCodec(KeyRing("k2", {"k2": b"2" * 32}))
    ring = EncryptionCodec(KeyRing("k2", {"k1": b"1" * 32, "k2": b"2" * 32}))
    sealed = asyncio.run(one.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"card tok_secret"')]))
    assert b"tok_secret" not in sealed[0].SerializeToString()
    assert asyncio.run(ring.decode(sealed))[0].data == b'"card tok_secret"'
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"recorded before the codec"')
    assert asyncio.run(two.decode([plain]))[0] == plain
    with pytest.raises(UnknownPayloadKey, match="'k1', which is not in this process's key ring"):
        asyncio.run(two.decode(sealed))


def test_production_token_keys_without_payload_keys_encrypt_nothing_with_a_machines_dev_key(tmp_path):
    # Each host would encrypt with a dev key of its own: what one wrote, no other could read.
    from adapters.codec import KeyRing
    from adapters.identity import TrustSettings

    forgot = TrustSettings(token_keys=str(tmp_path / "idp.pem"), payload_keys="", dev_dir=str(tmp_path / "dev"))

    with pytest.raises(ValueError, match="SETTLEFLOW_TOKEN_KEYS is set but SETTLEFLOW_PAYLOAD_KEYS is not"):
        KeyRing.from_settings(forgot)
    assert not (tmp_path / "dev" / "payload.key").exists()


def test_a_payload_key_id_named_twice_is_refused_rather_than_one_key_silently_dropped():
    import base64

    from adapters.codec import KeyRing
    from adapters.identity import TrustSettings

    old, new = (base64.b64encode(bytes([n]) * 32).decode() for n in (1, 2))
    with pytest.raises(ValueError, match="names key id 'k1' twice"):
        KeyRing.from_settings(TrustSettings(payload_keys=f"k1={old},k1={new}", token_keys="idp.pem"))


def test_the_guard_proves_the_actor_by_the_token_and_hands_the_owner_the_command_without_it():
    from datetime import timedelta

    from adapters.identity import load_trust, mint
    from domain.billing.commands import CancelOrder

    def cancel(actor: Actor, credential: str | None) -> CancelOrder:
        return CancelOrder(command_id="c-1", actor=actor, credential=credential, issued_at=T0, order_id=ORDER_ID,
                           reason="moved")

    verified = authorize(cancel(CUSTOMER, token_for(CUSTOMER)))
    assert verified.actor == CUSTOMER and verified.credential is None
    assert "credential" not in repr(cancel(CUSTOMER, token_for(CUSTOMER)))
    refusals = {
        "no_token": cancel(CUSTOMER, None),
        "actor_mismatch": cancel(CUSTOMER, token_for("customer:c-2")),
        "token_expired": cancel(CUSTOMER, mint(load_trust(), "customer", CUSTOMER.id, now=T0 - timedelta(hours=1))),
        "token_not_yet_valid": cancel(CUSTOMER, mint(load_trust(), "customer", CUSTOMER.id, now=T0 + timedelta(hours=1))),
        "role_not_allowed": cancel(WAREHOUSE, token_for(WAREHOUSE)),  # proven, but may not cancel
        "bad_signature": cancel(CUSTOMER, _tampered(token_for(CUSTOMER))),
        "system_from_outside": cancel(Actor.system("x"), token_for(CUSTOMER)),  # a system command carries none
    }
    for code, command_ in refusals.items():
        with pytest.raises(NotAuthorized) as refused:
            authorize(command_)
        assert refused.value.code == code, (code, refused.value.message)
    with pytest.raises(NotAuthorized, match="may not act from outside"):  # no token ever acts as system
        authorize(cancel(Actor.system("x"), None).model_copy(
            update={"actor": CUSTOMER, "credential": mint(load_trust(), "system", CUSTOMER.id, now=T0)}))


def test_the_guard_reads_the_trust_settings_once_and_again_when_the_environment_changes(monkeypatch):
    """Every command from outside is verified: the settings it is verified against are built once,
    not per command, yet a changed variable (another issuer, other keys) is the next command's rule."""
    from adapters.identity import load_trust, mint
    from domain.billing.commands import CancelOrder

    assert load_trust() is load_trust()
    token = token_for(CUSTOMER)
    command_ = CancelOrder(command_id="c-1", actor=CUSTOMER, credential=token, issued_at=T0, order_id=ORDER_ID,
                           reason="moved")
    assert authorize(command_).actor == CUSTOMER

    monkeypatch.setenv("SETTLEFLOW_TOKEN_ISSUER", "another-issuer")
    assert load_trust().token_issuer == "another-issuer"
    with pytest.raises(NotAuthorized) as refused:
        authorize(command_)  # the token's issuer is no longer the configured one
    assert refused.value.code == "wrong_issuer"
    assert authorize(command_.model_copy(update={"credential": mint(load_trust(), "customer", CUSTOMER.id,
                                                                     now=T0)})).actor == CUSTOMER

    monkeypatch.delenv("SETTLEFLOW_TOKEN_ISSUER")
    assert authorize(command_).actor == CUSTOMER

    # The settings read a variable whatever its case, so the same goes for noticing its change.
    monkeypatch.setenv("settleflow_token_issuer", "another-issuer")
    assert load_trust().token_issuer == "another-issuer"
    monkeypatch.delenv("settleflow_token_issuer")
    assert load_trust().token_issuer == "settleflow-dev"


def test_beside_production_payload_keys_an_owner_trusts_no_dev_token_unless_a_test_stack_says_so(monkeypatch):
    command_ = refund_request()  # signed by the dev issuer
    monkeypatch.setenv("SETTLEFLOW_ALLOW_DEV_ISSUER", "0")  # the suite's payload keys stay: production's

    with pytest.raises(NotAuthorized) as refused:
        authorize(command_)
    assert refused.value.code == "dev_issuer_refused"
    assert "SETTLEFLOW_TOKEN_KEYS is not" in refused.value.message

    monkeypatch.setenv("SETTLEFLOW_ALLOW_DEV_ISSUER", "1")
    assert authorize(command_).actor == CUSTOMER


def _tampered(token: str) -> str:
    """The same token with its claims changed (a customer id swapped), signature kept."""
    import base64
    import json

    header, claims, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    body["exp"] += 1
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


def test_every_kind_of_refusal_an_owner_raises_is_one_the_workflows_never_retry():
    from domain.shared.errors import DomainError, InvalidCommand, NotAuthorized, NotFound, refusal_kinds
    from workflows.process import REFUSALS as NEVER_RETRIED

    assert NEVER_RETRIED == sorted(kind.kind for kind in (InvalidCommand, NotAuthorized, NotFound))
    assert set(NEVER_RETRIED) == {kind.kind for kind in DomainError.__subclasses__()}

    class AlreadyArchived(NotFound):  # a refusal added later, under another one
        kind = "AlreadyArchived"

    assert "AlreadyArchived" in refusal_kinds()


def test_a_token_with_malformed_claims_is_refused_for_good_not_failed_again_and_again():
    """A role written as a list (as some issuers do) or a time that is not a number used to
    raise a TypeError: the decide step, retried until done, would fail for ever."""
    import jwt as pyjwt

    from adapters.identity import dev_private_key, load_trust, verifier

    settings = load_trust()
    good = {"iss": settings.token_issuer, "aud": settings.token_audience, "sub": CUSTOMER.id,
            settings.role_claim: "customer", "exp": int(T0.timestamp()) + 3600}
    for claims, code in [
        ({**good, settings.role_claim: ["customer"]}, "role_not_allowed"),
        ({**good, "exp": "tomorrow"}, "invalid_token"),
        ({**good, "exp": float("inf")}, "invalid_token"),  # JSON's Infinity: int() of it overflows
        ({**good, "nbf": {"at": 1}}, "invalid_token"),
        ({**good, "sub": 42}, "invalid_token"),
    ]:
        token = pyjwt.encode(claims, dev_private_key(settings), algorithm="ES256")
        with pytest.raises(NotAuthorized) as refused:
            verifier().verify(token, T0)
        assert refused.value.code == code, (claims, refused.value.message)
    assert verifier().verify(pyjwt.encode(good, dev_private_key(settings), algorithm="ES256"), T0) == CUSTOMER


def test_a_token_is_checked_against_every_trusted_key_whatever_their_types():
    """A key set with an EC key before an Ed25519 one: an EdDSA token is verified by the second."""
    from dataclasses import replace

    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from adapters.identity import load_trust, mint, verifier

    issuer = ed25519.Ed25519PrivateKey.generate()
    other = ec.generate_private_key(ec.SECP256R1())
    trusting_both = replace(verifier(), keys=(other.public_key(), issuer.public_key()))
    token = mint(load_trust(), "customer", CUSTOMER.id, now=T0, private_key=issuer, algorithm="EdDSA")
    assert trusting_both.verify(token, T0) == CUSTOMER
    with pytest.raises(NotAuthorized) as refused:
        replace(verifier(), keys=(other.public_key(),)).verify(token, T0)
    assert refused.value.code == "bad_signature"


def test_a_key_set_listing_rsa_and_symmetric_keys_first_still_verifies_tokens_by_its_ec_and_ed25519_keys(tmp_path):
    """Identity providers' key sets often list RSA (and sometimes symmetric) keys: they are left
    out, and the keys settleflow's algorithms use verify, in whatever order they are listed."""
    import json

    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    from adapters.identity import Verifier, load_trust, mint

    ec_issuer, ed_issuer = ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate()
    jwks = {"keys": [
        json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())),
        {"kty": "oct", "k": "c2VjcmV0LWtleS1vZi1hbm90aGVyLXNlcnZpY2U", "alg": "HS256"},
        json.loads(OKPAlgorithm.to_jwk(ed_issuer.public_key())),
        json.loads(ECAlgorithm.to_jwk(ec_issuer.public_key())),
    ]}
    path = tmp_path / "issuer-keys.json"
    path.write_text(json.dumps(jwks))
    trust = load_trust()
    checked = Verifier.from_settings(trust.model_copy(update={"token_keys": str(path)}))

    assert len(checked.keys) == 2
    for issuer, algorithm in ((ec_issuer, "ES256"), (ed_issuer, "EdDSA")):
        token = mint(trust, "customer", CUSTOMER.id, now=T0, private_key=issuer, algorithm=algorithm)
        assert checked.verify(token, T0) == CUSTOMER


def test_a_key_removed_from_the_trusted_key_set_stops_verifying_without_a_restart(tmp_path):
    """A compromised key taken out of the identity provider's set: the next command refuses it."""
    import json
    import os

    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    from adapters.identity import load_trust, mint, verifier

    compromised, current = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    path = tmp_path / "issuer-keys.json"

    def trust_only(*keys) -> None:
        path.write_text(json.dumps({"keys": [json.loads(ECAlgorithm.to_jwk(k.public_key())) for k in keys]}))
        stamp = path.stat().st_mtime_ns + 1_000_000  # a later version, however coarse the file system's clock
        os.utime(path, ns=(stamp, stamp))

    settings = load_trust().model_copy(update={"token_keys": str(path)})
    token = mint(settings, "customer", CUSTOMER.id, now=T0, private_key=compromised)
    trust_only(compromised, current)
    assert verifier(settings).verify(token, T0) == CUSTOMER

    trust_only(current)

    with pytest.raises(NotAuthorized) as refused:
        verifier(settings).verify(token, T0)
    assert refused.value.code == "bad_signature"


@pytest.mark.parametrize(("value", "allowed"), [
    ("1", True), ("true", True), ("YES", True), ("0", False), ("", False), ("2", False), ("no", False),
])
def test_only_a_clear_yes_lets_a_test_stack_trust_the_dev_issuer_and_no_value_stops_a_process(
    monkeypatch, value, allowed,
):
    monkeypatch.setenv("SETTLEFLOW_ALLOW_DEV_ISSUER", value)
    assert (load_trust().dev_issuer_refused == "") is allowed


def test_another_services_unprefixed_variables_change_no_trust_setting(monkeypatch):
    # TOKEN_AUDIENCE, ROLE_CLAIM, PAYLOAD_KEYS ... are common names: only SETTLEFLOW_* ones count.
    before = load_trust()
    for name, value in {"TOKEN_AUDIENCE": "another-service", "ROLE_CLAIM": "groups", "TOKEN_ISSUER": "https://x",
                        "TOKEN_KEYS": "/etc/other/keys.json", "PAYLOAD_KEY_ID": "theirs", "DEV_DIR": "/tmp/x"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("settleflow_token_audience", "settleflow-eu")  # its own name, in any case, does

    after = load_trust()

    assert after.model_dump() == {**before.model_dump(), "token_audience": "settleflow-eu"}


def test_an_unprefixed_allow_dev_issuer_does_not_lift_the_refusal(monkeypatch):
    monkeypatch.setenv("SETTLEFLOW_ALLOW_DEV_ISSUER", "0")
    monkeypatch.setenv("ALLOW_DEV_ISSUER", "1")
    assert load_trust().dev_issuer_refused != ""
