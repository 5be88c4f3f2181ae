from collections import Counter

import pytest

from deployments.routing import RoutingError, WeightedRoundRobin, check_weights, uniform_weights

CLASSES = ["chat", "summarize"]
CONFIGS = ["tp8", "tp4pp2", "pp8"]


def test_smooth_weighted_round_robin_keeps_exact_shares() -> None:
    r = WeightedRoundRobin(uniform_weights(CLASSES, CONFIGS))
    r.update(check_weights({"chat": {"tp8": 3, "pp8": 1, "tp4pp2": 0}}, CLASSES, CONFIGS))
    picks = [r.choose("chat") for _ in range(400)]
    assert Counter(picks) == {"tp8": 300, "pp8": 100}
    # never more than one request away from the target share in any prefix
    assert all(abs(picks[:n].count("tp8") - 0.75 * n) <= 1 for n in range(1, 401))
    assert Counter(r.choose("summarize") for _ in range(9)) == dict.fromkeys(CONFIGS, 3)


def test_update_keeps_other_classes() -> None:
    r = WeightedRoundRobin(uniform_weights(CLASSES, CONFIGS))
    r.update({"chat": {"pp8": 1.0}})
    assert r.weights["chat"] == {"pp8": 1.0}
    assert r.weights["summarize"] == dict.fromkeys(CONFIGS, 1.0)


@pytest.mark.parametrize(("update", "needle"), [
    ({"batch": {"tp8": 1}}, "unknown SLA class 'batch'"),
    ({"chat": {"tp16": 1}}, "unknown configuration 'tp16'"),
    ({"chat": {"tp8": -1}}, "chat.tp8: weight must be a finite number ≥ 0"),
    ({"chat": {"tp8": float("nan")}}, "finite"),
    ({"chat": {"tp8": "1"}}, "finite"),
    ({"chat": {"tp8": 0}}, "at least one configuration"),
    ({"chat": {}}, "non-empty"),
    (["chat"], "must be a mapping"),
])
def test_bad_weights_are_refused_with_the_culprit(update: object, needle: str) -> None:
    with pytest.raises(RoutingError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        check_weights(update, CLASSES, CONFIGS)  # type: ignore[arg-type]
