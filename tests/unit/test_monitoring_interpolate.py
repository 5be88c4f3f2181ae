"""Template variables are substituted the way Grafana's Prometheus datasource does it."""

from monitoring.dashboards.check import ALL, format_variable, interpolate, interval_macros

MULTI = {"multi": True, "includeAll": True, "allValue": ".*"}
SINGLE = {"multi": False, "includeAll": False}


def test_single_value_is_inserted_as_is() -> None:
    assert format_variable(SINGLE, ["vllm:"], ["ray_vllm_", "vllm:"]) == "vllm:"
    assert format_variable(SINGLE, ["it's"], []) == "it\\\\'s"


def test_multi_values_become_an_escaped_regex_alternation() -> None:
    assert format_variable(MULTI, ["tp8", "tp4pp2"], []) == "(tp8|tp4pp2)"
    assert format_variable(MULTI, ["tp8"], []) == "tp8"
    assert format_variable(MULTI, ["a.b"], []) == "a\\\\.b"


def test_all_uses_all_value_or_every_option() -> None:
    assert format_variable(MULTI, [ALL], ["x", "y"]) == ".*"
    assert format_variable({"multi": True, "includeAll": True}, [ALL], ["x", "y"]) == "(x|y)"


def test_interpolate_handles_every_syntax_and_leaves_unknown_names() -> None:
    values = {"engine_prefix": "vllm:", "config": "(a|b)", "__rate_interval": "4s"}
    expr = 'rate(${engine_prefix}num_preemptions_total{model_name=~"$config"}[$__rate_interval]) [[config]] $other'
    assert interpolate(expr, values) == 'rate(vllm:num_preemptions_total{model_name=~"(a|b)"}[4s]) (a|b) $other'
    assert interpolate("${config:regex}", values) == "(a|b)"


def test_rate_interval_is_at_least_four_scrapes() -> None:
    assert interval_macros(2.0, 1.0, 60)["__rate_interval"] == "4s"
    assert interval_macros(10.0, 1.0, 60)["__rate_interval"] == "11s"
    assert interval_macros(2.0, 1.0, 60)["__interval"] == "2s"
