"""Pipeline stages spread over nodes: the transfers that cross nodes go at the network's bandwidth."""

import pytest

from deployments.catalog.gpus import GB, GPUS, GpuSpec
from deployments.catalog.models import LLAMA_3_1_70B
from deployments.engines.sim.perf_model import ACT_BYTES, PerfModel
from deployments.engines.sim.work import BatchShape
from schema.dtypes import Dtype

H100 = GPUS["h100-sxm"]
PREFILL = BatchShape(prefill_tokens=8192, prefill_seqs=4, prefill_attn_pairs=4 * 2048 * 2049 / 2)


def model(hops: int, gpu: GpuSpec = H100) -> PerfModel:
    return PerfModel(LLAMA_3_1_70B, gpu, Dtype.fp8, Dtype.fp8, tp=4, pp=4, inter_node_hops=hops)


def test_each_crossing_moves_the_hidden_states_over_the_network() -> None:
    one_node, spread = model(0).step(PREFILL), model(2).step(PREFILL)
    f = model(0).constants.link_fraction
    per_hop = 8192 * LLAMA_3_1_70B.hidden_size * ACT_BYTES / f
    extra = 2 * per_hop * (1 / (H100.inter_node_gbps * GB) - 1 / H100.link.group_bandwidth(2))
    assert spread.terms["p2p"] - one_node.terms["p2p"] == pytest.approx(extra, rel=1e-9)
    assert spread.latency_s - one_node.latency_s == pytest.approx(extra, rel=1e-9)
    assert spread.stage_s == one_node.stage_s  # compute-bound stages still set the pipeline's pace


def test_a_slower_network_costs_more() -> None:
    slow = H100.model_copy(update={"inter_node_gbps": 5.0})
    assert model(3, slow).step(PREFILL).terms["p2p"] > model(3).step(PREFILL).terms["p2p"] > model(0).step(
        PREFILL).terms["p2p"]


@pytest.mark.parametrize("hops", [-1, 4])
def test_hops_beyond_the_pipeline_are_refused(hops: int) -> None:
    with pytest.raises(ValueError, match="4 stages has 3 transfers"):
        model(hops)
