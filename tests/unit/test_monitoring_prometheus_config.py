"""The generated prometheus.yml: static 127.0.0.1 targets per job, intervals, vLLM colon names restored."""

import re

from monitoring.prometheus import ScrapeTarget, prometheus_config


def test_jobs_group_their_targets_and_share_the_interval() -> None:
    cfg = prometheus_config([ScrapeTarget("ray", 8080), ScrapeTarget("vllm", 8000), ScrapeTarget("vllm", 8001)],
                            scrape_interval_s=1.5, rule_files=["/run/rules.yml"])
    assert cfg["global"] == {"scrape_interval": "1500ms", "scrape_timeout": "1500ms",
                             "evaluation_interval": "1500ms"}
    assert cfg["rule_files"] == ["/run/rules.yml"]
    assert {j["job_name"]: j["static_configs"][0]["targets"] for j in cfg["scrape_configs"]} == {
        "ray": ["127.0.0.1:8080"], "vllm": ["127.0.0.1:8000", "127.0.0.1:8001"]}


def test_relabel_restores_vllm_colon_names_but_leaves_ray_names() -> None:
    relabel = prometheus_config([ScrapeTarget("vllm", 1)])["scrape_configs"][0]["metric_relabel_configs"][0]
    pattern = re.compile(relabel["regex"])  # Prometheus anchors relabel regexes: fullmatch
    renamed = pattern.fullmatch("vllm_num_requests_running")
    assert renamed and renamed.expand(relabel["replacement"].replace("$1", r"\1")) == "vllm:num_requests_running"
    assert pattern.fullmatch("ray_vllm_num_requests_running") is None
    assert pattern.fullmatch("parallax_client_requests_total") is None


def test_durations_are_valid_prometheus_syntax() -> None:
    from monitoring.duration import prometheus_duration

    assert [prometheus_duration(s) for s in (1, 2.0, 0.5, 1.5, 30)] == ["1s", "2s", "500ms", "1500ms", "30s"]
