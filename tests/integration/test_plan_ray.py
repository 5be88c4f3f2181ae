"""The planner's simulations as Ray tasks when RAY_ADDRESS names a cluster: a real two-node local cluster
(`ray start`), the code shipped as py_modules, and the same plan as worker processes give (the simulations
are deterministic for a seed)."""

from pathlib import Path

import pytest

from controllers.plan.parallel import RayTasks, runner
from controllers.plan.search import PlanOptions, search
from deployments.resolve import parse_scenario
from tests.integration.ray_cluster import driver_env, local_cluster

pytestmark = pytest.mark.integration

SCENARIO = {
    "name": "ray-plan", "model": "llama-3.1-70b", "dtype": "fp8",
    "hardware": {"gpu": "mi325x", "gpus_per_node": 2, "nodes": 1},
    "classes": [{"name": "chat", "share": 0.6, "slo": {"ttft_ms": 450, "tpot_ms": 40},
                 "input": {"kind": "fixed", "value": 200}, "output": {"kind": "fixed", "value": 32}},
                {"name": "long", "share": 0.4, "slo": {"ttft_ms": 3000, "tpot_ms": 100},
                 "input": {"kind": "fixed", "value": 3000}, "output": {"kind": "fixed", "value": 32}}],
}
OPTS = PlanOptions(refine_pools=2, seeds=1)


def test_a_plan_over_ray_tasks_is_the_plan_of_local_workers(tmp_path: Path) -> None:
    resolved = parse_scenario(SCENARIO, str(tmp_path / "s.yaml"), tmp_path, need_configurations=False)
    with runner(2) as local:
        expected = search(resolved, OPTS, local)
    with local_cluster(head_gpus=0, head_cpus=1) as cluster:
        cluster.add_node("w1", gpus=0, cpus=1)
        with driver_env(cluster), runner() as remote:
            assert isinstance(remote, RayTasks) and "(2 CPUs)" in remote.where
            got = search(resolved, OPTS, remote)
    assert got.where.startswith("Ray tasks on 127.0.0.1:")
    assert [e.candidate for e in got.ranked] == [e.candidate for e in expected.ranked]
    assert [e.max_rate for e in got.ranked] == [e.max_rate for e in expected.ranked]
    assert [e.max_rate for e in got.screened] == [e.max_rate for e in expected.screened]
