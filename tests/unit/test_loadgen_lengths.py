"""Length distributions are honoured; empirical files are read with clear errors."""

import json

import numpy as np
import pytest

from deployments.engines.sim.workload import draw_lengths
from loadgen.errors import LoadError
from loadgen.lengths import make_sampler, with_mean, with_means
from schema.traffic import (
    SLO,
    EmpiricalLength,
    FixedLength,
    LognormalLength,
    NormalLength,
    PresetLength,
    TrafficClass,
    UniformLength,
)


def draws(dist, n=20000, which=0, base_dir=None):
    s = make_sampler(dist, which, base_dir)
    rng = np.random.default_rng(0)
    return np.array([s(rng) for _ in range(n)])


def test_fixed_and_preset():
    assert set(draws(FixedLength(value=17), 100)) == {17}
    assert set(draws(PresetLength(name="longalpaca"), 10, which=0)) == {9092}
    assert set(draws(PresetLength(name="longalpaca"), 10, which=1)) == {208}


def test_uniform_covers_its_range_inclusive():
    x = draws(UniformLength(min=5, max=9))
    assert set(x) == {5, 6, 7, 8, 9}
    assert x.mean() == pytest.approx(7, abs=0.05)


def test_normal_mean_std_and_clipping():
    x = draws(NormalLength(mean=500, std=50))
    assert x.mean() == pytest.approx(500, rel=0.01)
    assert x.std() == pytest.approx(50, rel=0.05)
    y = draws(NormalLength(mean=100, std=80, min=60, max=150))
    assert y.min() == 60 and y.max() == 150


def test_lognormal_has_the_asked_mean_and_spread():
    x = draws(LognormalLength(mean=200, sigma=0.5), 50000)
    assert x.mean() == pytest.approx(200, rel=0.02)
    assert np.log(x).std() == pytest.approx(0.5, rel=0.05)


def test_empirical_from_text_csv_and_jsonl(tmp_path):
    (tmp_path / "l.txt").write_text("10\n20 30\n")
    (tmp_path / "l.csv").write_text("a,len\nx,5\ny,7\n")
    (tmp_path / "l.jsonl").write_text("\n".join(json.dumps({"n": v}) for v in (3, 4)))
    assert set(draws(EmpiricalLength(path="l.txt"), 300, base_dir=tmp_path)) == {10, 20, 30}
    assert set(draws(EmpiricalLength(path=tmp_path / "l.csv", column="len"), 300)) == {5, 7}
    assert set(draws(EmpiricalLength(path=tmp_path / "l.jsonl", column="n"), 300)) == {3, 4}


def test_the_offline_simulator_reads_lengths_files_as_the_load_generator_does(tmp_path):
    (tmp_path / "l.csv").write_text("a,len\nx,5\ny,7\n")
    (tmp_path / "l.jsonl").write_text("\n".join(json.dumps({"n": v}) for v in (3, 4)))
    rng = np.random.default_rng(0)
    assert set(draw_lengths(EmpiricalLength(path="l.csv", column="len"), 0, 300, rng, tmp_path)) == {5, 7}
    assert set(draw_lengths(EmpiricalLength(path="l.jsonl", column="n"), 0, 300, rng, tmp_path)) == {3, 4}


def test_empirical_bad_rows_are_named(tmp_path):
    (tmp_path / "bad.txt").write_text("10\n12\nlots\n")
    with pytest.raises(LoadError, match=r"bad.txt: row 3: 'lots' is not a number"):
        make_sampler(EmpiricalLength(path=tmp_path / "bad.txt"), 0)
    (tmp_path / "b.csv").write_text("len\n4\n")
    with pytest.raises(LoadError, match="column 'n' not in the header"):
        make_sampler(EmpiricalLength(path=tmp_path / "b.csv", column="n"), 0)
    with pytest.raises(LoadError, match="cannot read lengths file"):
        make_sampler(EmpiricalLength(path=tmp_path / "none.txt"), 0)


def test_a_distribution_rescaled_to_a_mean_keeps_its_spread() -> None:
    """What a re-plan does with a class's measured mean length (controllers/repartitioner.planned_lengths)."""
    rng = np.random.default_rng(0)
    logn = LognormalLength(mean=500, sigma=0.5, min=10, max=4000)
    twice = with_mean(logn, 1, 1000.0)
    assert isinstance(twice, LognormalLength)
    assert (twice.mean, twice.sigma, twice.min, twice.max) == (1000, 0.5, 20, 8000)
    sampled = [make_sampler(twice, 1)(rng) for _ in range(20000)]
    assert np.mean(sampled) == pytest.approx(1000, rel=0.03)
    assert with_mean(NormalLength(mean=100, std=10, min=50), 0, 50.0) == NormalLength(mean=50, std=5, min=25)
    assert with_mean(UniformLength(min=10, max=30), 0, 40.0) == UniformLength(min=20, max=60)
    assert with_mean(PresetLength(name="longalpaca"), 0, 1000.4) == FixedLength(value=1000)
    tc = TrafficClass(name="c", share=1.0, slo=SLO(ttft_ms=100), input=FixedLength(value=100),
                      output=FixedLength(value=100))
    assert with_means(tc, 105.0, None, 0.1) is tc                       # within the tolerance: kept
    assert with_means(tc, 150.0, 95.0, 0.1).input == FixedLength(value=150)
    assert with_means(tc, 150.0, 95.0, 0.1).output == FixedLength(value=100)
