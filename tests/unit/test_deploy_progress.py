"""How long a deployment may take to start (server.deploy_timeout_s, per engine by default), and what each
configuration is shown to wait for meanwhile."""

from pathlib import Path

import pytest

from deployments.progress import config_progress
from deployments.resolve import load_scenario, parse_scenario
from schema.scenario import ScenarioError

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def test_vllm_waits_long_enough_to_download_load_and_compile_a_large_model() -> None:
    """Bug 4 of issue 26: the wait was 120 s whatever the engine, then the application was deleted."""
    assert load_scenario(SCENARIOS / "llama405b-h200-vllm.yaml").scenario.resolved_deploy_timeout_s == 3600
    assert load_scenario(SCENARIOS / "cpu-vllm-tiny.yaml").scenario.resolved_deploy_timeout_s == 3600
    assert load_scenario(SCENARIOS / "demo.yaml").scenario.resolved_deploy_timeout_s == 120


def test_the_scenario_sets_its_own_wait() -> None:
    data = {"name": "x", "model": "llama-3.1-8b", "hardware": {"gpu": "h100-sxm"},
            "configurations": [{"name": "tp1"}],
            "classes": [{"name": "c", "share": 1.0, "slo": {"ttft_ms": 100},
                         "input": {"kind": "fixed", "value": 8}, "output": {"kind": "fixed", "value": 4}}]}
    assert parse_scenario({**data, "server": {"deploy_timeout_s": 900}}).scenario.resolved_deploy_timeout_s == 900
    with pytest.raises(ScenarioError, match=r"server\.deploy_timeout_s"):
        parse_scenario({**data, "server": {"deploy_timeout_s": 0}})


def test_progress_says_what_each_replica_waits_for() -> None:
    waiting = config_progress("tp8", 3, {"RUNNING": 1, "STARTING": 2}, "UPDATING",
                              "Deployment 'llm-tp8' in application 'parallax' has 1 replicas that have taken more "
                              "than 30s to be scheduled. This may be due to waiting for the cluster to auto-scale.",
                              ["CREATED", "CREATED", "PENDING"])
    assert waiting.line() == ("tp8: 1/3 running, 1 for GPUs/CPUs (placement group pending); 1 starting (engine: "
                              "model download, weight loading, compilation); Serve: Deployment 'llm-tp8' in "
                              "application 'parallax' has 1 replicas that have taken more than 30s to be scheduled")
    done = config_progress("tp8", 3, {"RUNNING": 3}, "HEALTHY", "", ["CREATED"] * 3)
    assert done.line() == "tp8: 3/3 running" and done.waiting_for == ""
    failed = config_progress("pp8", 1, {"STARTING": 1}, "DEPLOY_FAILED", "The deployment failed to start 3 times\n"
                             "Traceback ...", ["CREATED"])
    assert failed.line().endswith("[DEPLOY_FAILED]; Serve: The deployment failed to start 3 times")
