"""`parallax plan --verify` end to end on the real stack (Ray Serve + sim engine + Prometheus + load generator):
the plan's top two deployments run side by side, each gets the same share of every rung of the load ladder,
and the live ranking agrees with the predicted one (the same simulator runs live: self-consistency)."""

import os
from pathlib import Path

import pytest
from rich.console import Console

from controllers.plan.parallel import runner
from controllers.plan.proposal import proposal
from controllers.plan.search import PlanOptions, search
from controllers.plan.verify import verify
from deployments.resolve import parse_scenario

pytestmark = pytest.mark.integration

# Short prompts and outputs: over a hundred requests per deployment and rung in a short run. Two TP1 replicas
# of 70B FP8 on MI325X hold about twice what one PP2 (or TP2) replica does for this class, so the ladder's
# second rung separates them.
SCENARIO = {
    "name": "verify", "model": "llama-3.1-70b", "dtype": "fp8",
    "hardware": {"gpu": "mi325x", "gpus_per_node": 8, "nodes": 1},
    "engine": {"kind": "sim", "time_scale": 2, "stream_interval_ms": 100},
    "server": {"port": 0},
    "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 200, "tpot_ms": 40, "attainment": 0.9},
                 "input": {"kind": "fixed", "value": 300}, "output": {"kind": "fixed", "value": 16}}],
    "load": {"arrival": {"kind": "poisson", "rate": 1.0}, "duration_s": 30},
}


def test_the_live_ranking_of_the_top_two_agrees_with_the_plan(tmp_path: Path) -> None:
    resolved = parse_scenario(SCENARIO, str(tmp_path / "verify.yaml"), tmp_path, need_configurations=False)
    with runner() as pool:
        # aggregated only, as `parallax plan --verify` plans: live serving has no disaggregated split yet
        opts = PlanOptions(gpus=2, refine_pools=2, seeds=1, heterogeneous=False, disaggregated=False)
        plan = search(resolved, opts, pool)
    top = plan.ranked[:2]
    assert len(top) == 2 and top[0].max_rate > 1.5 * top[1].max_rate   # e.g. 2×TP1 against 1×PP2
    with open(os.devnull, "w") as quiet:
        v = verify(resolved, proposal(resolved, plan, 2), tmp_path / "runs", Console(file=quiet))
    assert v.error is None, v.error
    c = v.comparison
    assert c is not None and len(c.deployments) == 2
    assert c.ranks_agree, [(d.planned.rank, d.live_rank, [s.attainment for s in d.steps]) for d in c.deployments]
    assert [d.passed for d in c.deployments] == [2, 1]       # the second rung tells them apart
    assert c.steps_agree == c.steps_measured == 4
    page = (v.folder / "report.html").read_text()
    assert "Plan vs live" in page and "the live ranking agrees with the plan" in page
