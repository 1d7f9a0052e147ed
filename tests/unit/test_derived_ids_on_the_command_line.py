"""starter.py takes the ids settleflow derives from ids people give — a discrepancy id
(`capture:payment-{order}/retry-2`), a flow's workflow id (`refund-{order}-cancellation`, for
`resume-flow` and `status`) —
up to the derived limit, so support can resolve and resume what an order of the longest id
left behind; longer, empty or with control characters, they are refused with one line, exit 2."""

from __future__ import annotations

import pytest

import starter
from domain.shared.messages import DERIVED_ID_MAX, ID_MAX

LONGEST_ORDER = "o-" + "x" * (ID_MAX - 2)
DERIVED = {
    "resolve-discrepancy": ("discrepancy_id", f"capture:payment-{LONGEST_ORDER}/retry-2"),
    "resume-flow": ("workflow_id", f"refund-{LONGEST_ORDER}-cancellation"),
    "status": ("workflow_id", f"refund-{LONGEST_ORDER}-cancellation"),
}
SUPPORTS_NOTE = ["--note", "ticket 881", "--as", "support:sam"]


def parse(verb: str, the_id: str):
    return starter.build_parser().parse_args([verb, the_id, *(SUPPORTS_NOTE if verb != "status" else [])])


@pytest.mark.parametrize("verb", list(DERIVED))
def test_an_id_derived_from_the_longest_order_id_is_accepted(verb: str) -> None:
    field, derived = DERIVED[verb]
    assert len(derived) > ID_MAX

    assert getattr(parse(verb, derived), field) == derived


@pytest.mark.parametrize("verb", list(DERIVED))
@pytest.mark.parametrize(
    "bad, words",
    [
        ("d" * (DERIVED_ID_MAX + 1), ("id", str(DERIVED_ID_MAX))),
        ("   ", ("id", "empty")),
        ("r-1\nok", ("id", "control")),
    ],
    ids=["one over the derived limit", "blank", "a newline"],
)
def test_an_id_over_the_derived_limit_or_otherwise_bad_is_refused_with_one_line_and_exit_2(
    verb: str, bad: str, words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        parse(verb, bad)

    assert refused.value.code == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert captured.out == "" and line.startswith(f"starter.py {verb}: error: argument")
    assert all(word in line for word in words), line
    assert len(line) < 200
