"""Which gateway account can answer for a request: only the one it went to."""

from __future__ import annotations

import pytest

from domain.payments.gateway import may_be_the_same_account


@pytest.mark.parametrize(
    "sent_to, asked_of",
    [
        ("live:acct_1", "live:acct_1"),
        ("", "live:acct_1"),  # recorded before accounts were kept: asked of any account, as before
    ],
)
def test_the_account_a_request_went_to_may_answer_for_it(sent_to, asked_of):
    assert may_be_the_same_account(sent_to, asked_of)


@pytest.mark.parametrize(
    "sent_to, asked_of",
    [
        ("live:acct_1", "live:acct_2"),  # another account's key
        ("test:acct_1", "live:acct_1"),  # test records asked of live: separate records under one id
        ("live:acct_1", "live:"),  # a key that cannot say whose it is: never taken for the right one
        ("live:acct_1", ""),
    ],
)
def test_another_account_the_other_mode_or_an_unknown_one_cannot_answer_for_a_request(sent_to, asked_of):
    assert not may_be_the_same_account(sent_to, asked_of)
