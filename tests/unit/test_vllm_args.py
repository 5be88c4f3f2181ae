"""Engine arguments and environment derived from a scenario for the vllm engine (no vLLM needed)."""

from pathlib import Path

import pytest

from deployments.engines.vllm.args import cpu_thread_binding, launch_for
from deployments.resolve import load_scenario
from schema.deployment import DeploymentSpec, EngineConfig, Hardware, ParallelConfig

REPO = Path(__file__).resolve().parents[2]


def _spec(dtype: str = "fp32", **engine: object) -> DeploymentSpec:
    return DeploymentSpec(
        model="llama-3.1-8b", dtype=dtype, hardware=Hardware(gpu="h100-sxm"),
        engine=EngineConfig(kind="vllm", model_path="/models/m", **engine),  # type: ignore[arg-type]
        configurations=[ParallelConfig(name="a", tp=1)],
    )


def test_cpu_tp1_is_eager_fp32_without_executor_or_binding() -> None:
    launch = launch_for(_spec(dtype="bf16"), ParallelConfig(name="tp1"), "cpu", cores=[0, 1])
    kw = launch.engine_kwargs
    assert kw["dtype"] == "float32" and kw["enforce_eager"] is True
    assert kw["served_model_name"] == "tp1" and kw["model"] == "/models/m"
    assert "distributed_executor_backend" not in kw
    assert "VLLM_CPU_OMP_THREADS_BIND" not in launch.env
    assert kw["block_size"] == 32  # the scenario's 16 rounded up for the CPU attention backend


def test_cpu_tp2_uses_mp_executor_with_one_core_per_rank() -> None:
    launch = launch_for(_spec(), ParallelConfig(name="tp2", tp=2), "cpu", cores=[0, 1])
    assert launch.engine_kwargs["distributed_executor_backend"] == "mp"
    assert launch.engine_kwargs["tensor_parallel_size"] == 2
    assert launch.env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"


def test_cpu_pp2_is_compiled() -> None:
    kw = launch_for(_spec(), ParallelConfig(name="pp2", pp=2), "cpu", cores=[0, 1]).engine_kwargs
    assert kw["enforce_eager"] is False and kw["pipeline_parallel_size"] == 2


def test_thread_binding_splits_cores_into_equal_ranges() -> None:
    assert cpu_thread_binding(4, list(range(16))) == "0-3|4-7|8-11|12-15"
    assert cpu_thread_binding(2, [3, 2, 1, 0]) == "0-1|2-3"


def test_too_few_cores_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"needs at least 4 CPU cores.*lower tp or pp"):
        launch_for(_spec(), ParallelConfig(name="x", tp=2, pp=2), "cpu", cores=[0, 1])


def test_gpu_uses_ray_executor_and_the_scenario_dtypes() -> None:
    spec = _spec(dtype="fp8", gpu_memory_utilization=0.85)
    launch = launch_for(spec.model_copy(update={"kv_dtype": "fp8"}), ParallelConfig(name="t", tp=4, pp=2), "gpu")
    kw = launch.engine_kwargs
    assert kw["distributed_executor_backend"] == "ray"
    assert kw["dtype"] == "bfloat16" and kw["kv_cache_dtype"] == "fp8"
    assert kw["gpu_memory_utilization"] == 0.85 and kw["block_size"] == 16
    assert "enforce_eager" not in kw and launch.env == {}
    single = launch_for(_spec(dtype="bf16"), ParallelConfig(name="t1"), "gpu").engine_kwargs
    assert "kv_cache_dtype" not in single


def test_tp1_on_gpus_runs_its_model_in_a_ray_worker_not_in_the_replica() -> None:
    """Bug 1 of issue 26: without Ray's executor a TP1 engine runs the model in the engine-core process,
    a child of the replica actor, which holds no GPU and sees them all: every TP1 replica of a node would
    open cuda:0. With it, the one rank is a Ray actor holding the replica's GPU bundle."""
    kw = launch_for(_spec(dtype="bf16"), ParallelConfig(name="tp1", replicas=8), "gpu").engine_kwargs
    assert kw["distributed_executor_backend"] == "ray"
    assert kw["tensor_parallel_size"] * kw["pipeline_parallel_size"] == 1


def test_engine_args_override_derived_values() -> None:
    spec = _spec(engine_args={"enforce_eager": False, "enable_prefix_caching": False})
    kw = launch_for(spec, ParallelConfig(name="tp1"), "cpu", cores=[0]).engine_kwargs
    assert kw["enforce_eager"] is False and kw["enable_prefix_caching"] is False


def test_missing_model_path_names_the_field() -> None:
    spec = _spec().model_copy(update={"engine": EngineConfig(kind="vllm")})
    with pytest.raises(ValueError, match=r"engine\.model_path"):
        launch_for(spec, ParallelConfig(name="tp1"), "cpu")


def test_relative_model_path_is_resolved_against_the_scenario(tmp_path: Path) -> None:
    model = tmp_path / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text(
        '{"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,'
        ' "vocab_size": 100}'
    )
    text = (REPO / "scenarios" / "cpu-vllm-tiny.yaml").read_text()
    text = text.replace("../.cache/tiny-llama", "models/tiny")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(text)
    r = load_scenario(scenario)
    assert r.scenario.engine.model_path == str(model.resolve())


@pytest.mark.parametrize("name", ["llama70b-h100-vllm", "llama405b-h200-vllm"])
def test_gpu_scenarios_validate_and_keep_hub_ids(name: str) -> None:
    r = load_scenario(REPO / "scenarios" / f"{name}.yaml")
    s = r.scenario
    assert s.engine.kind == "vllm" and s.engine.model_path and s.engine.model_path.startswith("RedHatAI/")
    for c in s.configurations:
        kw = launch_for(s, c, "gpu").engine_kwargs
        assert kw["tensor_parallel_size"] * kw["pipeline_parallel_size"] == c.tp * c.pp
        assert kw["distributed_executor_backend"] == "ray"


@pytest.mark.parametrize(("pp", "budget"), [(1, 8192), (2, 4096), (8, 1024)])
def test_each_pp_micro_batch_gets_its_share_of_the_token_budget(pp: int, budget: int) -> None:
    """As the simulator schedules PP (SCHEDULER.md): the step's budget is split over the micro-batches."""
    kw = launch_for(_spec(max_num_batched_tokens=8192), ParallelConfig(name="x", pp=pp), "gpu").engine_kwargs
    assert kw["max_num_batched_tokens"] == budget
