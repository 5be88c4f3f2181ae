"""The report's PNG figures, each drawn from run-folder data by one function."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from controllers.records import Rec, group, summarize

DPI = 90


def save_figure(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _configs(recs: Sequence[Rec]) -> list[str]:
    return sorted({r.config for r in recs})


def latency_vs_throughput(recs: Sequence[Rec], gpus: Mapping[str, int], duration_s: float, path: Path) -> Path:
    """Per configuration and offered rate: output tokens/s per GPU against p90 E2E latency."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for (cfg,), rs in sorted(group(recs, "config").items()):
        pts = []
        for _, step in sorted(group(rs, "rate_step").items()):
            s = summarize(step, duration_s)
            if s.e2e_p90 is not None:
                pts.append((s.output_tps / max(gpus.get(cfg, 1), 1), s.e2e_p90))
        if pts:
            x, y = zip(*pts, strict=True)
            ax.plot(x, y, marker="o", label=cfg)
    ax.set_xlabel("output tokens/s per GPU (measured, routed traffic)")
    ax.set_ylabel("p90 end-to-end latency (s)")
    ax.set_title("Latency vs throughput per configuration")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def slo_vs_rate(recs: Sequence[Rec], classes: Sequence[str], duration_s: float, path: Path) -> Path:
    """Per class: SLO attainment and goodput against the offered rate, one line per configuration."""
    fig, axes = plt.subplots(2, len(classes), figsize=(4.2 * len(classes), 6), squeeze=False)
    for j, cls in enumerate(classes):
        mine = [r for r in recs if r.sla_class == cls]
        for cfg in _configs(mine):
            pts = []
            for _, step in group([r for r in mine if r.config == cfg], "rate_step").items():
                s = summarize(step, duration_s)
                pts.append((step[0].offered_rate or 0.0, s.attainment, s.goodput))
            pts.sort()
            if pts:
                x, att, good = zip(*pts, strict=True)
                axes[0][j].plot(x, att, marker="o", label=cfg)
                axes[1][j].plot(x, good, marker="o", label=cfg)
        axes[0][j].set_title(f"{cls}: SLO attainment")
        axes[0][j].set_ylim(-0.05, 1.05)
        axes[1][j].set_title(f"{cls}: goodput (req/s)")
        axes[1][j].set_xlabel(f"offered rate of {cls} (req/s)")
        for ax in (axes[0][j], axes[1][j]):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return save_figure(fig, path)


def latency_cdfs(recs: Sequence[Rec], classes: Sequence[str], slos: Mapping[str, Any], path: Path) -> Path:
    """TTFT and TPOT distributions (CDFs) per class and configuration, with the SLO target."""
    fig, axes = plt.subplots(2, len(classes), figsize=(4.2 * len(classes), 6), squeeze=False)
    for j, cls in enumerate(classes):
        mine = [r for r in recs if r.sla_class == cls and r.ok]
        for i, (metric, target) in enumerate((("ttft_s", slos[cls].ttft_ms), ("tpot_s", slos[cls].tpot_ms))):
            ax = axes[i][j]
            for cfg in _configs(mine):
                v = np.sort([getattr(r, metric) * 1000 for r in mine if r.config == cfg
                             and getattr(r, metric) is not None])
                if len(v):
                    ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=cfg)
            if target is not None:
                ax.axvline(target, color="k", ls="--", lw=1, label="SLO")
            ax.set_xscale("log")
            ax.set_title(f"{cls}: {metric[:4].upper()} (ms)")
            ax.set_ylabel("share of requests")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return save_figure(fig, path)


def cost_terms(terms: Mapping[str, Mapping[str, Mapping[str, float]]], path: Path) -> Path:
    """Stacked seconds per cost term of one prefill and one decode step, per configuration.

    `terms`: phase ("prefill" / "decode") -> config -> term -> seconds (the simulator's StepCost.terms).
    """
    phases = list(terms)
    fig, axes = plt.subplots(1, len(phases), figsize=(5 * len(phases), 4), squeeze=False)
    for j, phase in enumerate(phases):
        ax = axes[0][j]
        per_cfg = terms[phase]
        names = sorted({t for ts in per_cfg.values() for t in ts})
        bottom = np.zeros(len(per_cfg))
        for t in names:
            h = np.array([per_cfg[c].get(t, 0.0) * 1000 for c in per_cfg])
            ax.bar(list(per_cfg), h, bottom=bottom, label=t)
            bottom += h
        ax.set_title(f"{phase} step: where the time goes")
        ax.set_ylabel("ms on the latency path")
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def weights_over_time(rows: Sequence[Mapping[str, Any]], decisions: Sequence[Mapping[str, Any]],
                      t0: float, path: Path) -> Path:
    """Routing weight of each configuration per class over time; decisions marked."""
    classes = sorted({str(r["sla_class"]) for r in rows})
    fig, axes = plt.subplots(len(classes), 1, figsize=(7, 2.4 * max(1, len(classes))), squeeze=False)
    for i, cls in enumerate(classes):
        ax = axes[i][0]
        mine = [r for r in rows if r["sla_class"] == cls]
        for cfg in sorted({str(r["config"]) for r in mine}):
            pts = sorted((float(r["time"]) - t0, float(r["weight"])) for r in mine if r["config"] == cfg)
            x, y = zip(*pts, strict=True)
            ax.step(x, y, where="post", label=cfg)
        stale = sorted(float(r["time"]) - t0 for r in mine if r.get("stale"))
        if stale:
            ax.plot(stale, [1.02] * len(stale), "x", color="grey", label="stale")
        for d in decisions:
            if d["sla_class"] == cls:
                ax.axvline(float(d["time"]) - t0, color="grey", lw=0.6, ls=":")
        ax.set_ylim(-0.05, 1.1)
        ax.set_title(f"{cls}: routing weights")
        ax.set_ylabel("share")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center right")
    axes[-1][0].set_xlabel("seconds since start")
    return save_figure(fig, path)


def scoreboard_over_time(rows: Sequence[Mapping[str, Any]], t0: float, path: Path) -> Path:
    """Live SLO attainment per (class, configuration) as the controller saw it."""
    live = [r for r in rows if r.get("config") and r.get("attainment") is not None]
    classes = sorted({str(r["sla_class"]) for r in live}) or ["(none)"]
    fig, axes = plt.subplots(len(classes), 1, figsize=(7, 2.4 * len(classes)), squeeze=False)
    for i, cls in enumerate(classes):
        ax = axes[i][0]
        mine = [r for r in live if r["sla_class"] == cls]
        for cfg in sorted({str(r["config"]) for r in mine}):
            pts = sorted((float(r["time"]) - t0, float(r["attainment"])) for r in mine if r["config"] == cfg)
            x, y = zip(*pts, strict=True)
            ax.plot(x, y, label=cfg)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"{cls}: SLO attainment in the controller's window")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1][0].set_xlabel("seconds since start")
    return save_figure(fig, path)


def goodput_with_faults(times: Sequence[float], goodput: Mapping[str, Sequence[float]],
                        faults: Sequence[tuple[str, float, float | None]], path: Path) -> Path:
    """Goodput per configuration over the run (all classes), each fault marked from its action (a line) to the
    end of its effect (a band; to the right edge when it never ended). `faults`: (label, start, end) in the
    same seconds as `times`."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for cfg, ys in goodput.items():
        ax.step(times, ys, where="post", label=cfg)
    right = times[-1] if times else 0.0
    for i, (label, start, end) in enumerate(faults):
        ax.axvline(start, color="red", lw=0.8)
        ax.axvspan(start, right if end is None else end, color="red", alpha=0.08)
        ax.annotate(label, (start, 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                    va="top", ha="right", xytext=(-2 - 9 * (i % 3), 0), textcoords="offset points")
    ax.set_xlabel("seconds since the load started (wall)")
    ax.set_ylabel("goodput (req/s, engine clock)")
    ax.set_title("Goodput per configuration, faults marked")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return save_figure(fig, path)


def repartition_timeline(times: Sequence[float], rates: Mapping[str, Sequence[float]],
                         attainment: Mapping[str, Sequence[float | None]],
                         gpus: Sequence[tuple[float, Mapping[str, int]]], moves: Sequence[tuple[float, float, bool]],
                         end: float, path: Path) -> Path:
    """Three panels over the same time axis (seconds, to `end`): each class's arrival rate per bin starting at
    `times` (the mix), the GPUs per shape (a step at each change), each class's SLO attainment per bin; each
    transition a band from its decision to its end (green: reached, red: rolled back)."""
    fig, axes = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True)
    edges = [*times, end]
    for cls, ys in rates.items():
        axes[0].step(edges, [*ys, ys[-1]], where="post", label=cls)
    axes[0].set_ylabel("arrivals (req/s)")
    shapes = sorted({s for _, g in gpus for s in g})
    if gpus:
        xs = [t for t, _ in gpus] + [end]
        bottom = np.zeros(len(xs))
        for s in shapes:
            held = np.array([g.get(s, 0) for _, g in gpus] + [gpus[-1][1].get(s, 0)], dtype=float)
            axes[1].fill_between(xs, bottom, bottom + held, step="post", alpha=0.6, label=s)
            bottom += held
    axes[1].set_ylabel("GPUs by shape")
    for cls, att in attainment.items():
        ys = [np.nan if y is None else y for y in att]
        axes[2].step(edges, [*ys, ys[-1]], where="post", label=cls)
    axes[2].set_ylabel("SLO attainment")
    axes[2].set_ylim(0, 1.05)
    axes[2].set_xlabel("seconds since the load started (wall)")
    for ax in axes:
        for start, end, reached in moves:
            ax.axvspan(start, max(end, start + 1), color="green" if reached else "red", alpha=0.15)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8)
    axes[0].set_title("Re-partitioning: class mix, GPUs by shape, attainment; transitions shaded")
    return save_figure(fig, path)
