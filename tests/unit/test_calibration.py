"""Per-family constants: overrides from YAML, clear errors, and the fit's error on rows it never saw."""

import statistics
from pathlib import Path

import pytest
import yaml

from bench.fit_calibration import FITS, family_observations, run_fit
from deployments.catalog.gpus import GPUS
from deployments.catalog.models import LLAMA_3_1_70B
from deployments.engines.sim.calibration import DEFAULT_CALIBRATION, FAMILIES, load_calibration
from deployments.engines.sim.measurements import predict_all
from deployments.engines.sim.perf_model import PerfModel
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.work import BatchShape
from deployments.resolve import load_scenario
from schema.dtypes import Dtype
from schema.scenario import ScenarioError


def test_every_catalog_gpu_has_constants() -> None:
    for gpu in GPUS.values():
        assert DEFAULT_CALIBRATION.for_gpu(gpu) is FAMILIES[gpu.family]


def test_yaml_override_changes_only_what_it_names(tmp_path: Path) -> None:
    f = tmp_path / "cal.yaml"
    f.write_text("families:\n  hopper:\n    host_decode_ms: 7.5\n")
    cal = load_calibration(f)
    assert cal.families["hopper"].host_decode_ms == 7.5
    assert cal.families["hopper"].hbm_fraction == FAMILIES["hopper"].hbm_fraction
    assert cal.families["cdna3"] == FAMILIES["cdna3"]
    shape = BatchShape(decode_seqs=1, decode_context=100)
    base = PerfModel(LLAMA_3_1_70B, GPUS["h100-sxm"], Dtype.fp8, Dtype.fp8, tp=2).step(shape)
    slow = PerfModel(LLAMA_3_1_70B, GPUS["h100-sxm"], Dtype.fp8, Dtype.fp8, tp=2, calibration=cal).step(shape)
    assert slow.latency_s - base.latency_s == pytest.approx((7.5 - FAMILIES["hopper"].host_decode_ms) * 1e-3)


@pytest.mark.parametrize(("text", "message"), [
    ("families:\n  hopper:\n    hbm_fraction: 1.5\n", "families.hopper.hbm_fraction"),
    ("families:\n  hopper:\n    hbm_speed: 1\n", "families.hopper.hbm_speed"),
    ("families:\n  newfam:\n    hbm_fraction: 0.8\n", "families.newfam"),
    ("hopper: {}\n", "expected a mapping `families"),
    ("families: [1\n", "invalid YAML"),
])
def test_bad_calibration_files_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "cal.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        load_calibration(f)


def test_missing_file_and_unknown_family_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file; give a calibration YAML file"):
        load_calibration(tmp_path / "absent.yaml")
    odd = GPUS["h100-sxm"].model_copy(update={"family": "volta"})
    with pytest.raises(ValueError, match="no calibration for GPU family 'volta'"):
        PerfModel(LLAMA_3_1_70B, odd, Dtype.bf16, Dtype.bf16)


def test_unmeasured_families_follow_their_stated_derivation() -> None:
    hopper, cdna3, cdna4 = FAMILIES["hopper"], FAMILIES["cdna3"], FAMILIES["cdna4"]
    assert FAMILIES["ampere"] == hopper
    assert FAMILIES["blackwell"].gemm_m_half == 2 * hopper.gemm_m_half
    assert cdna3.ring_step_us == 2 * hopper.ring_step_us and cdna3.hbm_fraction == hopper.hbm_fraction
    assert cdna4.link_fraction == cdna3.link_fraction     # TP1 rows cannot see MI355X's links


def test_shipped_amd_constants_predict_the_amd_rows() -> None:
    """CDNA-3 (fluid estimates, fast): in-sample and leave-one-out median ≤ 10 % on the rows fitted.
    CDNA-4 (simulated request by request): in-sample median ≤ 10 %; its leave-one-out is printed by
    `python -m bench.calibration` (minutes)."""
    cdna3 = run_fit(FITS["cdna3"])
    assert cdna3.median_error("fit") <= 0.10 and cdna3.median_error("loo") <= 0.10
    for name in ("gemm_flops_fraction", "link_fraction"):   # the fit reproduces the shipped constants
        assert getattr(cdna3.constants, name) == pytest.approx(getattr(FAMILIES["cdna3"], name), rel=0.01)
    obs = [o for o in family_observations(FITS["cdna4"]) if o.fit]
    errors = [abs(p / o.measured - 1) for o, p in zip(obs, predict_all(obs, DEFAULT_CALIBRATION), strict=True)]
    assert len(errors) == 9 and statistics.median(errors) <= 0.10


def test_model_predicts_held_out_measurements() -> None:
    obs = family_observations(FITS["hopper"])
    errors = [(abs(p / o.measured - 1), o.fit) for o, p in zip(obs, predict_all(obs, DEFAULT_CALIBRATION), strict=True)]
    held_out = [e for e, fit in errors if not fit]
    fitted = [e for e, fit in errors if fit]
    assert len(held_out) > 2 * len(fitted) > 0
    assert statistics.median(held_out) <= 0.15
    assert statistics.median(fitted) <= 0.15


def _scenario_with(tmp_path: Path, engine_lines: str, gpu: str = "mi325x") -> Path:
    demo = (Path(__file__).resolve().parents[2] / "scenarios" / "demo.yaml").read_text()
    text = demo.replace("engine:\n  kind: sim\n", f"engine:\n  kind: sim\n{engine_lines}").replace(
        "gpu: mi325x", f"gpu: {gpu}")
    f = tmp_path / "s.yaml"
    f.write_text(text)
    return f


def test_scenario_names_a_calibration_file(tmp_path: Path) -> None:
    (tmp_path / "cal.yaml").write_text("families:\n  cdna3:\n    host_decode_ms: 3.0\n")
    r = load_scenario(_scenario_with(tmp_path, "  calibration: cal.yaml\n"))
    # read next to the scenario by whoever builds replicas (live engine, sweep, what-if), wherever they run
    assert r.scenario.engine.calibration == str((tmp_path / "cal.yaml").resolve())
    for c in r.scenario.configurations:
        factory = ReplicaFactory.for_deployment(r.scenario, c, r.model, r.gpu)
        assert factory.cost_model.constants.host_decode_ms == 3.0
    (tmp_path / "bad.yaml").write_text("families:\n  cdna3:\n    host_decode_ms: -1\n")
    with pytest.raises(ScenarioError, match=r"engine\.calibration: .*families\.cdna3\.host_decode_ms"):
        load_scenario(_scenario_with(tmp_path, "  calibration: bad.yaml\n"))


def test_scenario_with_a_gpu_family_without_constants_is_refused(tmp_path: Path) -> None:
    spec = GPUS["h100-sxm"].model_dump(mode="json") | {"name": "v100", "family": "volta"}
    (tmp_path / "v100.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ScenarioError, match=r"hardware\.gpu: no calibration for GPU family 'volta'"):
        load_scenario(_scenario_with(tmp_path, "", gpu="v100.yaml"))
