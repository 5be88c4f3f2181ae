"""The fitter: it recovers the constants that generated the data, refuses what the data cannot pin
(naming the measurement to add), and predicts each point again without it (leave-one-out)."""

import pytest

from deployments.catalog.gpus import GPUS
from deployments.catalog.models import LLAMA_3_1_8B
from deployments.engines.sim.calibration import FAMILIES, Calibration, FamilyConstants
from deployments.engines.sim.fit import IllPosedFit, default_free, fit_family, fit_sources
from deployments.engines.sim.measurements import (
    KernelOp,
    KernelTiming,
    Metric,
    Observation,
    ServingRun,
    Setup,
)
from deployments.engines.sim.offline import RequestSpec
from schema.deployment import EngineConfig
from schema.dtypes import Dtype

SETUP = Setup(LLAMA_3_1_8B, GPUS["h100-sxm"], Dtype.bf16, Dtype.bf16, engine=EngineConfig(max_num_seqs=64))
TRUTH = FAMILIES["hopper"].model_copy(update={
    "gemm_flops_fraction": 0.58, "gemm_m_half": 120.0, "hbm_fraction": 0.81, "attn_flops_fraction": 0.45,
    "attn_hbm_fraction": 0.66, "host_prefill_ms": 3.3, "host_decode_ms": 1.4, "host_per_seq_us": 25.0})


def _cal(c: FamilyConstants) -> Calibration:
    return Calibration(families={**FAMILIES, "hopper": c})


def kernel_points(truth: FamilyConstants = TRUTH) -> list[Observation]:
    experiments = [KernelTiming(SETUP, KernelOp.gemm, m) for m in (1, 8, 32, 128, 512, 2048, 8192)]
    experiments += [KernelTiming(SETUP, KernelOp.prefill_attention, n) for n in (1024, 4096, 16384)]
    experiments += [KernelTiming(SETUP, KernelOp.decode_attention, b, ctx) for b in (1, 64) for ctx in (2048, 16384)]
    experiments += [KernelTiming(SETUP, KernelOp.stream, bytes=1e9)]
    return [Observation(e, Metric.seconds, e.predict(_cal(truth))[Metric.seconds], f"{e.op} {e.tokens}")
            for e in experiments]


def serving_points(truth: FamilyConstants = TRUTH, concurrencies: tuple[int, ...] = (1, 8),
                   prompts: tuple[int, ...] = (512,), metrics: tuple[Metric, ...] = (Metric.ttft_median_s,
                                                                                     Metric.tpot_median_s)
                   ) -> list[Observation]:
    out = []
    for c in concurrencies:
        for n in prompts:
            run = ServingRun(SETUP, tuple(RequestSpec(n, 24) for _ in range(3 * c)), c)
            figures = run.predict(_cal(truth))
            out += [Observation(run, m, figures[m], f"c={c} prompt {n} {m}") for m in metrics]
    return out


def test_fit_recovers_known_constants_from_the_models_own_measurements() -> None:
    obs = kernel_points() + serving_points()
    assert set(default_free(obs)) == {*TRUTH.model_fields} - {"layer_overhead_us", "link_fraction", "ring_step_us",
                                                               "oneshot_us", "p2p_us"}
    result = fit_sources(obs, "hopper", FAMILIES["hopper"], loo=False)
    for name in result.free:
        assert getattr(result.constants, name) == pytest.approx(getattr(TRUTH, name), rel=0.01), name
    assert result.median_error() < 1e-3


def test_leave_one_out_predicts_each_point_without_it() -> None:
    obs = kernel_points()
    obs[4] = Observation(obs[4].experiment, obs[4].metric, obs[4].measured * 1.3, "off by 30 %")   # one bad point
    result = fit_family(obs, "hopper", FAMILIES["hopper"], ("gemm_flops_fraction", "gemm_m_half", "hbm_fraction",
                                                            "attn_flops_fraction", "attn_hbm_fraction"))
    bad = result.points[4]
    assert bad.loo_error is not None and abs(bad.loo_error) > abs(bad.error)   # the fit bends towards it
    assert bad.loo_error == pytest.approx(1 / 1.3 - 1, abs=0.03)                # without it, the truth
    assert all(p.loo is not None for p in result.points)


def test_too_few_measurements_are_refused() -> None:
    obs = serving_points(concurrencies=(1,))
    with pytest.raises(IllPosedFit, match=r"2 measurement\(s\) for 3 free constants .*host_per_seq_us: TPOT at a "
                                          r"second concurrency"):
        fit_family(obs, "hopper", FAMILIES["hopper"], ("host_prefill_ms", "host_decode_ms", "host_per_seq_us"))


def test_decode_only_measurements_cannot_pin_the_prefill_time() -> None:
    obs = serving_points(concurrencies=(1,), prompts=(256, 2048), metrics=(Metric.tpot_median_s,))
    with pytest.raises(IllPosedFit, match=r"none of the 2 measurements depends on host_prefill_ms: add TTFT at low"):
        fit_family(obs, "hopper", FAMILIES["hopper"], ("host_prefill_ms", "host_decode_ms"))


def test_one_batch_size_cannot_tell_the_per_step_from_the_per_sequence_time() -> None:
    obs = serving_points(concurrencies=(1,), prompts=(256, 2048))
    with pytest.raises(IllPosedFit, match=r"cannot tell host_(decode_ms|per_seq_us) from host_(decode_ms|per_seq_us)"):
        fit_family(obs, "hopper", FAMILIES["hopper"], ("host_prefill_ms", "host_decode_ms", "host_per_seq_us"))
    # Keeping one of the two (at its true value) makes it well posed: the other is then recovered.
    result = fit_family(obs, "hopper", TRUTH.model_copy(update={"host_prefill_ms": 4.0, "host_decode_ms": 2.0}),
                        ("host_prefill_ms", "host_decode_ms"), loo=False)
    assert result.constants.host_decode_ms == pytest.approx(TRUTH.host_decode_ms, rel=0.01)


def test_measurements_of_another_family_and_unknown_constants_are_refused() -> None:
    obs = kernel_points()
    with pytest.raises(ValueError, match="family hopper cannot calibrate family 'cdna3'"):
        fit_family(obs, "cdna3", FAMILIES["cdna3"], ("hbm_fraction",))
    with pytest.raises(ValueError, match=r"unknown constant.*hbm_speed"):
        fit_family(obs, "hopper", FAMILIES["hopper"], ("hbm_speed",))


def test_a_constant_the_data_pushes_past_its_bound_is_reported() -> None:
    faster = TRUTH.model_copy(update={"hbm_fraction": 0.99})
    obs = [o for o in kernel_points(faster) if isinstance(o.experiment, KernelTiming)
           and o.experiment.op == KernelOp.stream]
    result = fit_family(obs, "hopper", FAMILIES["hopper"], ("hbm_fraction",), bounds={"hbm_fraction": (0.5, 0.9)},
                        loo=False)
    assert result.constants.hbm_fraction == pytest.approx(0.9)
    assert any("hbm_fraction" in n and "upper bound" in n for n in result.notes)
