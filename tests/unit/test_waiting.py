"""The tests' wait helper: it returns as soon as the condition holds, and past its deadline it fails naming
what it awaited and how long it waited."""

import time

import pytest

from tests.support.waiting import wait_until


def test_returns_the_seconds_until_the_condition_held() -> None:
    ready_at = time.monotonic() + 0.3
    took = wait_until(lambda: time.monotonic() >= ready_at, 5, "the clock", poll_s=0.01)
    assert 0.25 <= took < 2.0


def test_a_condition_that_holds_at_once_costs_no_poll() -> None:
    assert wait_until(lambda: True, 5, "nothing", poll_s=10) < 1.0


def test_past_the_deadline_it_names_what_it_waited_for() -> None:
    calls = []
    with pytest.raises(AssertionError, match=r"waited 0\.\d s \(deadline 0\.2 s\) for the moon to turn blue"):
        wait_until(lambda: calls.append(1), 0.2, "the moon to turn blue", poll_s=0.02)
    assert len(calls) >= 5  # it kept looking until the deadline


def test_the_message_can_say_what_was_still_missing_at_the_deadline() -> None:
    seen = {"a"}
    with pytest.raises(AssertionError, match=r"for series a, b \(missing: b\)"):
        wait_until(lambda: seen >= {"a", "b"}, 0.1, lambda: f"series a, b (missing: {', '.join({'a', 'b'} - seen)})",
                   poll_s=0.02)
