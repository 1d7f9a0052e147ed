"""A refund as a user runs it: dev server, gateway simulator, `worker.py` and
`starter.py` are separate processes on a private stack (free ports, files in tmp).

Results are checked where they land: billing's view of the order, the workflow's
trail, the visibility store, the gateway's ledger and the customer's mailbox.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from simulators.control import read_ledger
from adapters.mailbox import FileMailbox
from devstack import ROOT, Stack, listening, split_address, temporal_cli
from tests.e2e.conftest import run, run_json
from workflows.process import FLOWS_QUEUE

pytestmark = pytest.mark.e2e

ORDER = "o-e2e"
REFUND = "r-e2e"
REFUND_ARGS = (
    "refund", "--order-id", ORDER, "--amount", "20.00", "--reason", "damaged",
    "--as", "customer:c-1", "--refund-id", REFUND,
)


@pytest.fixture(scope="module")
def refund(stack: Stack) -> dict:
    """Order, ship, deliver, refund: the JSON answer of `refund ... --wait --json`."""
    placed = run_json(
        stack, "place-order", "--order-id", ORDER, "--customer", "c-1",
        "--amount", "120.00", "--currency", "EUR", "--wait",
    )
    assert placed["status"] == "paid", placed
    run(stack, "ship", "--order-id", ORDER, "--tracking", "T1")
    run(stack, "deliver", "--order-id", ORDER)
    return run_json(stack, *REFUND_ARGS, "--wait")


def test_refund_completes(refund: dict) -> None:
    assert refund["workflow_id"] == f"refund-{REFUND}"
    assert refund["started"] is True
    assert refund["status"] == "completed", refund
    assert refund["amount"] == {"amount": "20.00", "currency": "EUR"}


def test_order_shows_the_refund(stack: Stack, refund: dict) -> None:
    order = run_json(stack, "order", ORDER)
    assert order["refunded"] == "20.00 EUR"
    assert order["refundable"] == "100.00 EUR"
    refunds = [(r["refund_id"], r["status"], r["amount"]) for r in order["refunds"]]
    assert refunds == [(REFUND, "completed", "20.00 EUR")]


def test_status_shows_the_trail(stack: Stack, refund: dict) -> None:
    status = run_json(stack, "status", f"refund-{REFUND}")
    assert status["status"] == "completed"
    assert status["execution"] == "COMPLETED"
    steps = [step.split(" → ")[0] for step in status["trail"]]
    assert steps == ["RequestRefund", "ScreenRefund", "SendRefundToGateway", "CompleteRefund", "CreditInvoice",
                     "NotifyCustomer"]
    assert status["trail"][0] == "RequestRefund → billing → RefundApproved"


def test_list_shows_the_completed_refund(stack: Stack, refund: dict) -> None:
    deadline = time.monotonic() + 10  # visibility may lag a moment behind the workflow
    while True:
        rows = run_json(stack, "list", "--status", "completed")
        if any(row["workflow_id"] == f"refund-{REFUND}" for row in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    ours = [row for row in rows if row["workflow_id"] == f"refund-{REFUND}"]
    assert ours and ours[0]["flow_status"] == "completed" and ours[0]["execution"] == "COMPLETED", rows


def test_the_same_refund_id_starts_nothing_new(stack: Stack, refund: dict) -> None:
    again = run(stack, *REFUND_ARGS)
    assert f"refund-{REFUND} already exists; nothing new was started" in again.stdout
    answer = run_json(stack, *REFUND_ARGS, "--wait")
    assert answer["started"] is False
    assert answer["status"] == "completed"  # the first refund's outcome


def test_the_gateway_moved_the_money_once(stack: Stack, refund: dict) -> None:
    run(stack, *REFUND_ARGS)  # asked again: still one refund
    refunds = read_ledger(stack.gateway_url)["refunds"]
    assert [(Decimal(r["amount"]), r["currency"]) for r in refunds] == [(Decimal("20.00"), "EUR")]


def test_the_customer_got_one_message(stack: Stack, refund: dict) -> None:
    messages = FileMailbox(stack.mailbox_dir).messages("customer:c-1")
    completed = [m for m in messages if m["kind"] == "refund_completed"]
    assert len(completed) == 1, messages
    assert completed[0]["subject"] == REFUND


# -- a payment recovered with a new card ------------------------------------------------------
def test_a_declined_payment_is_recovered_with_a_new_card(stack: Stack) -> None:
    placed = run_json(
        stack, "place-order", "--order-id", "o-recover", "--customer", "c-9",
        "--amount", "45.00", "--currency", "EUR", "--card", "tok_capture_declined", "--wait",
    )
    assert (placed["status"], placed["attempts"], placed["next_attempt_at"] is not None) == ("recovering", 1, True)

    answer = run_json(stack, "update-payment-method", "--order-id", "o-recover", "--card", "tok_visa")
    status = run_json(stack, "status", "payment-o-recover")
    order = run_json(stack, "order", "o-recover")

    assert answer["status"] == "paid"
    assert (status["status"], status["attempts"]) == ("paid", 2)
    assert order["paid"] == "45.00 EUR" and order["invoice_number"] == status["invoice_number"] != ""
    assert [c["status"] for c in order["captures"]] == ["declined", "captured"]
    captures = [c for c in read_ledger(stack.gateway_url)["captures"] if c["reference"] == "o-recover"]
    assert len(captures) == 1


def test_a_delivered_order_can_no_longer_be_cancelled(stack: Stack, refund: dict) -> None:
    done = run(stack, "cancel", "--order-id", ORDER, "--as", "customer:c-1", expect=2)
    assert "has ended" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert run_json(stack, "order", ORDER)["cancelled"] is False


# -- bad input: exit code 2, one line on stderr, nothing started ---------------------------
BAD_INPUT = {
    "negative amount": ("refund", "--order-id", ORDER, "--amount", "-5"),
    "too many decimals": ("refund", "--order-id", ORDER, "--amount", "1.234"),
    "not a number": ("refund", "--order-id", ORDER, "--amount", "abc"),
    "unknown currency": (
        "place-order", "--order-id", "o-bad", "--customer", "c-1", "--amount", "10.00", "--currency", "XXX",
    ),
    "unknown role": ("refund", "--order-id", ORDER, "--amount", "5.00", "--as", "pirate:x"),
    "no such order": ("refund", "--order-id", "no-such-order", "--amount", "5.00"),
}
REFUND_DEFAULTS = {"--reason": "bad input", "--as": "customer:c-1"}


def test_bad_input_exits_2_with_one_line_and_starts_nothing(stack: Stack, refund: dict) -> None:
    """Every case of BAD_INPUT, one after the other, then one look at what started since."""
    time.sleep(1 - datetime.now(UTC).microsecond / 1e6)  # `list` gives start times in whole seconds:
    asked_at = datetime.now(UTC).replace(microsecond=0)  # anything started before is in an earlier one
    for case, bad in BAD_INPUT.items():
        args = list(bad)
        if args[0] == "refund":
            for option, value in REFUND_DEFAULTS.items():
                if option not in args:
                    args += [option, value]
            refund_id = "r-bad-" + case.replace(" ", "-")
            args += ["--refund-id", refund_id]
            would_start = f"refund-{refund_id}"
        else:
            would_start = "payment-o-bad"
        done = run(stack, *args, expect=2)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0], (case, done.stderr)
        assert done.stdout == "", case
        # Nothing started: not the workflow this command would have started (read from the
        # server, no visibility lag) ...
        described = subprocess.run(
            [temporal_cli(), "workflow", "describe", "--workflow-id", would_start, "--address", stack.temporal_address],
            capture_output=True, text=True, timeout=15,
        )
        assert described.returncode != 0 and "not found" in (described.stdout + described.stderr).lower(), case
    # ... and nothing else either: no workflow started since the first command was given (a
    # count of the list would also catch earlier workflows the visibility store shows late).
    started = [row for row in run_json(stack, "list") if datetime.fromisoformat(row["started"]) >= asked_at
               and row["type"] != "ReconciliationWorkflow"]  # the worker's schedule may start one any second
    assert started == []


# -- strings from outside are stored verbatim, never executed ------------------------------
def test_ids_with_quotes_and_sql_come_back_verbatim_and_the_order_is_paid(stack: Stack) -> None:
    order_id, customer = "o-'; DROP TABLE orders;--", 'c-"x"'
    placed = run_json(
        stack, "place-order", "--order-id", order_id, "--customer", customer,
        "--amount", "30.00", "--currency", "EUR", "--wait",
    )
    assert (placed["workflow_id"], placed["status"]) == (f"payment-{order_id}", "paid"), placed
    order = run_json(stack, "order", order_id)
    assert (order["order_id"], order["customer_id"], order["paid"]) == (order_id, customer, "30.00 EUR"), order


# -- the demo, as `make demo` runs it ----------------------------------------------------------
def run_devstack(*args: str, env: dict[str, str], timeout: float = 150) -> subprocess.CompletedProcess:
    """`python devstack.py ARGS`; when it takes too long it gets SIGTERM (and so stops what
    it started) rather than the SIGKILL of subprocess.run, which would orphan its children."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "devstack.py"), *args], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"devstack.py {' '.join(args)} took over {timeout:.0f} s\nstdout:\n{stdout}\nstderr:\n{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_devstack_demo_twice_on_the_same_files(tmp_path) -> None:
    """`devstack.py demo --no-wait` on private ports; the second run finds the first run's
    server database, SQLite database and mailbox (as a second `make demo` does)."""
    private = Stack.private(tmp_path)  # only for its free ports and files: devstack starts the parts
    for run in (1, 2):
        done = run_devstack("demo", "--no-wait", "--var-dir", str(tmp_path), env=private.env)
        assert done.returncode == 0, f"run {run}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"

        outcome = re.findall(r"^  ((?:refund|payment)-\S+): (.+)\n  (\S+)$", done.stdout, re.MULTILINE)
        assert len(outcome) == 8, done.stdout
        statuses = [status for _, status, _ in outcome]
        assert statuses[0] == "completed", done.stdout
        assert statuses[1].startswith("rejected"), done.stdout
        assert re.fullmatch(r"completed \(reviewed.*\)", statuses[2]), done.stdout
        assert statuses[3].startswith("failed"), done.stdout
        assert statuses[4].startswith("paid (declined, then paid with a new card"), done.stdout
        assert statuses[5].startswith("abandoned (hard_decline:card_stolen"), done.stdout
        assert statuses[6].startswith("refunded"), done.stdout
        assert re.fullmatch(r"completed \(gateway answer lost, .* resumed by support:sam, discrepancy resolved\)",
                            statuses[7]), done.stdout
        for workflow_id, _, link in outcome:
            assert link == f"{private.web_ui}/namespaces/default/workflows/{workflow_id}"
        for title in (
            "completed refund", "rejected refund", "fraud review", "declined by the gateway",
            "recovered with a new card", "hard decline", "cancelled in transit", "resumed by support",
        ):
            assert title in done.stdout
        # Everything it started is stopped again.
        assert not listening(*split_address(private.temporal_address))
        assert not listening("127.0.0.1", int(private.gateway_url.rsplit(":", 1)[1]))


# -- a person decides a review from the command line -------------------------------------------
def a_large_refund_under_review(stack: Stack, order_id: str, refund_id: str, customer: str) -> None:
    """A paid, delivered order of 1,500 EUR, refunded in full: a fraud analyst must decide."""
    placed = run_json(stack, "place-order", "--order-id", order_id, "--customer", customer,
                      "--amount", "1500.00", "--currency", "EUR", "--wait")
    assert placed["status"] == "paid", placed
    run(stack, "ship", "--order-id", order_id, "--tracking", f"T-{order_id}")
    run(stack, "deliver", "--order-id", order_id)
    run(stack, "refund", "--order-id", order_id, "--reason", "damaged", "--as", f"customer:{customer}",
        "--refund-id", refund_id)
    wait_for_flow_status(stack, f"refund-{refund_id}", "under_review")


def test_a_rejected_review_is_confirmed_in_plain_words(stack: Stack) -> None:
    order_id, refund_id = "o-e2e-review", "r-e2e-review"
    a_large_refund_under_review(stack, order_id, refund_id, "c-9")

    done = run(stack, "review", refund_id, "reject", "--as", "fraud_analyst:B", "--note", "pattern")

    assert done.stdout.startswith(f"refund-{refund_id}: rejected by fraud_analyst:B; refund is now "), done.stdout
    assert run_json(stack, "order", order_id)["refunds"][0]["status"] == "cancelled"


def test_an_order_placed_in_the_past_with_at_ships_and_delivers_after_that(stack: Stack) -> None:
    now = datetime.now(UTC)
    order_id = "o-e2e-past"
    placed = run_json(stack, "place-order", "--order-id", order_id, "--customer", "c-8", "--amount", "30.00",
                      "--currency", "EUR", "--at", (now - timedelta(days=50)).isoformat(), "--wait")
    assert placed["status"] == "paid", placed
    run(stack, "ship", "--order-id", order_id, "--tracking", "T8", "--at", (now - timedelta(days=45)).isoformat())
    run(stack, "deliver", "--order-id", order_id, "--at", (now - timedelta(days=40)).isoformat())
    assert run_json(stack, "order", order_id)["fulfilment"] == "delivered"
    # A parcel cannot leave before its order was placed: billing refuses, the starter says so.
    early = "o-e2e-early"
    run_json(stack, "place-order", "--order-id", early, "--customer", "c-8", "--amount", "30.00",
             "--currency", "EUR", "--wait")
    done = run(stack, "ship", "--order-id", early, "--tracking", "T7", "--at", (now - timedelta(days=1)).isoformat(),
               expect=1)
    assert "shipped_before_placed" in done.stderr or "cannot have shipped earlier" in done.stderr, done.stderr
    assert run_json(stack, "order", early)["fulfilment"] == "pending"
    # Asked again with the right time, the shipment is a new request, not the old failure replayed.
    again = run(stack, "ship", "--order-id", early, "--tracking", "T7")
    assert f"started ship-{early} again" in again.stdout, again.stdout
    assert run_json(stack, "order", early)["fulfilment"] == "shipped"


def test_the_refund_reaches_reporting_through_the_relay_and_the_stream(stack: Stack, refund: dict) -> None:
    report = run_json(stack, "report", "--wait", "90")  # a loaded machine (the suite beside it) may lag
    refunds = {(r["status"], r["count"]): r["totals"] for r in report["refunds"]}
    assert refunds[("completed", 1)] == {"EUR": "20.00"}
    [captured] = [r["totals"] for r in report["payments"] if r["status"] == "captured"]
    assert Decimal(captured["EUR"]) >= Decimal("120.00")  # this order's payment (other tests add theirs)
    assert report["approved_not_settled"] == []
    outbox = run_json(stack, "outbox")
    assert (outbox["unpublished"], outbox["parked"]) == (0, [])


def test_events_shows_the_orders_chain_with_one_correlation_id(stack: Stack, refund: dict) -> None:
    chain = run_json(stack, "events", "--order", ORDER)
    assert {row["correlation_id"] for row in chain} == {f"order-{ORDER}"}
    kinds = [row["event_type"] for row in chain]
    assert kinds.index("OrderPlaced") < kinds.index("RefundApproved") < kinds.index("RefundCompleted")
    completed = next(row for row in chain if row["event_type"] == "RefundCompleted")
    assert completed["published_as"] == "settleflow.billing.refund_completed.v1"
    assert completed["command_type"] == "CompleteRefund" and completed["command_caused_by"]
    unknown = run(stack, "events", "--order", "o-nobody", expect=2)
    assert unknown.stderr.strip() == "starter.py: error: no events for order 'o-nobody'"


def test_a_delivery_confirmed_before_its_shipment_is_kept_and_the_command_line_returns(stack: Stack) -> None:
    now = datetime.now(UTC)
    order_id = "o-e2e-deliver-first"
    placed = run_json(stack, "place-order", "--order-id", order_id, "--customer", "c-7", "--amount", "25.00",
                      "--currency", "EUR", "--at", (now - timedelta(days=3)).isoformat(), "--wait")
    assert placed["status"] == "paid", placed

    held = run_json(stack, "deliver", "--order-id", order_id, "--at", (now - timedelta(days=1)).isoformat())

    assert held["status"] == "waiting_for_shipment", held
    run(stack, "ship", "--order-id", order_id, "--tracking", "T6", "--at", (now - timedelta(days=2)).isoformat())
    deadline = time.monotonic() + 30
    while run_json(stack, "order", order_id)["fulfilment"] != "delivered":
        assert time.monotonic() < deadline, "the kept delivery was never applied after the shipment"
        time.sleep(0.3)


def test_support_resumes_a_terminated_refund_which_then_pays_out_once(stack: Stack) -> None:
    order_id, refund_id = "o-e2e-resume", "r-e2e-resume"
    a_large_refund_under_review(stack, order_id, refund_id, "c-8")
    flow = f"refund-{refund_id}"
    refused = run(stack, "resume-flow", flow, "--note", "too early", "--as", "support:sam", expect=2)
    assert "still runs" in refused.stderr, refused.stderr
    nobody = run(stack, "resume-flow", flow, "--note", "who am I", expect=2)
    assert "required: --as" in nobody.stderr, nobody.stderr
    subprocess.run([temporal_cli(), "workflow", "terminate", "--workflow-id", flow, "--reason", "by mistake",
                    "--address", stack.temporal_address], check=True, capture_output=True, timeout=30)

    done = run(stack, "resume-flow", flow, "--note", "terminated by mistake, ticket 881", "--as", "support:sam")

    assert done.stdout.startswith(f"{flow}: resumed (terminated before)"), done.stdout
    assert "terminated by mistake, ticket 881" in done.stdout  # for support's ticket ...
    history = subprocess.run([temporal_cli(), "workflow", "show", "--workflow-id", flow, "--output", "json",
                              "--address", stack.temporal_address], check=True, capture_output=True, timeout=30).stdout
    assert b"ticket 881" not in history and b"resumed by support:sam; note sha256:" in history  # ... not Temporal's
    wait_for_flow_status(stack, flow, "under_review")
    run(stack, "review", refund_id, "approve", "--as", "fraud_analyst:B", "--note", "fine")
    wait_for_flow_status(stack, flow, "completed")
    assert run_json(stack, "order", order_id)["refunds"][0]["status"] == "completed"
    assert [r["amount"] for r in read_ledger(stack.gateway_url)["refunds"] if r["reference"] == refund_id] == ["1500.00"]
    finished = run(stack, "resume-flow", flow, "--note", "again", "--as", "support:sam", expect=2)
    assert "finished" in finished.stderr, finished.stderr


def started_and_failed(stack: Stack, workflow_type: str, workflow_id: str, request_json: str) -> None:
    """Start a flow with the temporal CLI (as from the web UI) and wait until it has failed."""
    def workflow(*args: str) -> str:
        return subprocess.run([temporal_cli(), "workflow", *args, "--address", stack.temporal_address],
                              check=True, capture_output=True, text=True, timeout=30).stdout

    workflow("start", "--task-queue", FLOWS_QUEUE, "--type", workflow_type, "--workflow-id", workflow_id,
             "--input", request_json)
    deadline = time.monotonic() + 30
    while "failed" not in workflow("describe", "--workflow-id", workflow_id).lower():
        assert time.monotonic() < deadline, f"{workflow_id} never failed"
        time.sleep(0.3)


def test_resuming_a_flow_that_fails_again_on_its_own_history_says_so_with_exit_code_1(stack: Stack) -> None:
    flow = "refund-e2e-wrong-shape"
    wrong_shape = ('{"refund_id": "r-x", "order_id": "o-x", "amount": 20.5, "reason": "damaged", '
                   '"requested_by": {"role": "customer", "id": "c-1"}}')  # the amount as a bare number
    started_and_failed(stack, "RefundWorkflow", flow, wrong_shape)

    done = run(stack, "resume-flow", flow, "--note", "try again", "--as", "support:sam", expect=1)

    assert "was resumed" in done.stderr and "at once failed again" in done.stderr, done.stderr


def wait_for_flow_status(stack: Stack, workflow_id: str, status: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while (seen := run_json(stack, "status", workflow_id)["status"]) != status:
        assert time.monotonic() < deadline, f"{workflow_id} stayed {seen}, never {status}"
        time.sleep(0.3)


def test_a_shipment_refused_before_payment_is_asked_again_once_paid_and_ships(stack: Stack) -> None:
    """`ship` for an unpaid order is refused; once the order is paid the same verb asks again
    (a new run of ship-{order}, its own commands) instead of replaying the old refusal."""
    order_id = "o-e2e-ship-early"
    run_json(stack, "place-order", "--order-id", order_id, "--customer", "c-10", "--amount", "15.00",
             "--currency", "EUR", "--card", "tok_capture_declined", "--wait")
    early = run_json(stack, "ship", "--order-id", order_id, "--tracking", "T10")
    assert early["status"] == "refused", early

    assert run_json(stack, "update-payment-method", "--order-id", order_id, "--card", "tok_visa")["status"] == "paid"
    again = run(stack, "ship", "--order-id", order_id, "--tracking", "T10")

    assert f"started ship-{order_id} again" in again.stdout, again.stdout
    assert run_json(stack, "order", order_id)["fulfilment"] == "shipped"
    duplicate = run(stack, "ship", "--order-id", order_id, "--tracking", "T10")  # shipped: nothing new
    assert f"ship-{order_id} already exists; nothing new was started" in duplicate.stdout, duplicate.stdout


def test_a_placement_that_failed_is_asked_again_with_corrected_facts_and_is_paid(stack: Stack) -> None:
    """A request of the wrong shape (started from the UI or the temporal CLI) fails the order's
    flow and records no order: `place-order` with the right facts is then a new run of
    payment-{order}, not the old failure replayed."""
    order_id = "o-e2e-unplaced"
    flow = f"payment-{order_id}"
    wrong_shape = json.dumps({"order_id": order_id, "customer_id": "c-11", "amount": 12.5, "card_token": "tok_visa",
                              "placed_by": {"role": "customer", "id": "c-11"}})  # the amount as a bare number
    started_and_failed(stack, "PaymentWorkflow", flow, wrong_shape)

    placed = run_json(stack, "place-order", "--order-id", order_id, "--customer", "c-11", "--amount", "12.50",
                      "--currency", "EUR", "--wait")

    assert (placed["started"], placed["status"]) == (True, "paid"), placed
    assert run_json(stack, "order", order_id)["paid"] == "12.50 EUR"


def test_support_compares_a_days_settlements_again_and_once_more_after_that_run_ended(stack: Stack) -> None:
    """`compare-settlements DAY` runs the daily pass for that day (the one a failed run flagged
    `settlements_not_compared`); asked again once that run has ended, it runs again."""
    day = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    first = run_json(stack, "compare-settlements", day)
    again = run(stack, "compare-settlements", day)

    assert (first["workflow_id"], first["status"]) == (f"reconciliation-settlements-{day}", "done"), first
    assert any(line.startswith(f"settlements of {day}:") for line in first["trail"]), first["trail"]
    assert f"started reconciliation-settlements-{day} again" in again.stdout, again.stdout
