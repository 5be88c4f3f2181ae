"""Physics of prefill/decode disaggregation, through the simulator, on Llama-3.1-8B over two H100s: every
split of the two GPUs, on the same requests.

- Long prompts, short answers and a tight TPOT: an aggregated replica's decodes wait behind every 4000-token
  prefill chunk, so the TPOT target caps its batch; a decode replica never prefills. The 1P+1D split meets the
  SLO at a higher rate than every aggregated split (the what-if's capacity search, `controllers.whatif.capacity`:
  the highest Poisson rate at which 90 % of the requests meet the class's SLO; 600 requests a run here, ~25 times
  a request's lifetime, so the empty engine of the first ones weighs little).
- Short prompts, long answers: the work is decoding, the prefill GPU idles while one decode GPU carries it; two
  aggregated replicas decode twice as much and sustain more requests/s (a closed loop that keeps every slot busy,
  measured over the middle half of the finishes: a rate search would judge mostly the first seconds of runs
  whose requests live ~10 s).
- A slower path for the KV cache (across nodes, then a slower NIC) lengthens every handoff, which is in every
  TTFT: the gain shrinks, monotonically with the link.
"""

import dataclasses
from typing import Any

import pytest

from controllers.whatif import capacity
from deployments.engines.sim.configuration import configuration_replicas
from deployments.engines.sim.workload import fixed_workload
from deployments.resolve import Resolved, parse_scenario

SPLITS = [{"name": "2xtp1", "tp": 1, "replicas": 2}, {"name": "tp2", "tp": 2}, {"name": "pp2", "pp": 2}]
PD = {"name": "1p1d", "disagg": {"prefill": {"tp": 1}, "decode": {"tp": 1}}}
DURATION_S = 60.0   # 600 requests a run at the capacities found here (the what-if's most)


def scenario(configs: list[dict[str, Any]], isl: int, osl: int, ttft_ms: float, tpot_ms: float,
             gpus_per_node: int = 2) -> Resolved:
    return parse_scenario({
        "name": "physics", "model": "llama-3.1-8b", "dtype": "bf16",
        "hardware": {"gpu": "h100-sxm", "gpus_per_node": gpus_per_node, "nodes": 8},
        "configurations": configs,
        "classes": [{"name": "c", "share": 1.0, "slo": {"ttft_ms": ttft_ms, "tpot_ms": tpot_ms, "attainment": 0.9},
                     "input": {"kind": "fixed", "value": isl}, "output": {"kind": "fixed", "value": osl}}]})


def capacities(r: Resolved) -> dict[str, float]:
    tc = r.scenario.classes[0]
    lengths = [(tc.input.value, tc.output.value)]   # type: ignore[union-attr]
    return {c.name: capacity(r, c, tc, lengths, DURATION_S, steps=4) for c in r.scenario.configurations}


LONG = (4000, 100, 1000.0, 15.0)     # ISL, OSL, TTFT, TPOT (an idle 8B decode step on H100 is ~7 ms)


@pytest.fixture(scope="module")
def long_prompts() -> dict[str, float]:
    return capacities(scenario([*SPLITS, PD], *LONG))


def test_long_prompts_short_answers_and_a_tight_tpot_favour_disaggregation(long_prompts: dict[str, float]) -> None:
    best = max(long_prompts[s["name"]] for s in SPLITS)
    assert best > 0
    assert long_prompts["1p1d"] > best, long_prompts


def sustained(r: Resolved, config: str, n: int = 2000) -> float:
    """Requests/s a configuration keeps finishing with twice `max_num_seqs` users always waiting."""
    c = next(c for c in r.scenario.configurations if c.name == config)
    tc = r.scenario.classes[0]
    reqs = fixed_workload(n, tc.input.value, tc.output.value)   # type: ignore[union-attr]
    finish = sorted(x.finish for x in configuration_replicas(r.scenario, c, r.model, r.gpu).run(
        reqs, concurrency=2 * r.scenario.engine.max_num_seqs).records)
    return (n // 2) / (finish[3 * n // 4] - finish[n // 4])


def test_short_prompts_long_answers_keep_aggregated_ahead() -> None:
    r = scenario([SPLITS[0], PD], 100, 500, 1000.0, 50.0)
    assert sustained(r, "2xtp1") > sustained(r, "1p1d") > 0


def test_a_slower_link_shrinks_the_gain(long_prompts: dict[str, float]) -> None:
    best = max(long_prompts[s["name"]] for s in SPLITS)
    apart = scenario([PD], *LONG, gpus_per_node=1)          # the decode replica on the other node: the NICs
    slow = dataclasses.replace(apart, gpu=apart.gpu.model_copy(update={"inter_node_gbps": 1.25}))   # 10 GbE
    gains = [long_prompts["1p1d"] / best, capacities(apart)["1p1d"] / best, capacities(slow)["1p1d"] / best]
    assert gains[0] >= gains[1] >= gains[2] and gains[0] > gains[2], gains
