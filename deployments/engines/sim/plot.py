"""Latency-throughput curves of a simulated sweep, one line per configuration (matplotlib PNG)."""

from collections.abc import Sequence as Seq
from pathlib import Path

import matplotlib

from deployments.engines.sim.sweep import SweepPoint

PANELS = (("ttft_ms", "p90 TTFT (ms)"), ("tpot_ms", "p90 TPOT (ms)"), ("e2e_ms", "p90 E2E latency (ms)"))


def plot_sweep(points: Seq[SweepPoint], path: Path, title: str = "") -> None:
    """p90 TTFT / TPOT / E2E against output tokens/s, side by side."""
    matplotlib.use("Agg")   # headless: files only
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4), constrained_layout=True)
    for config in dict.fromkeys(p.config for p in points):
        pts = sorted((p for p in points if p.config == config), key=lambda p: p.rate)
        x = [p.summary["output_tokens_per_s"] for p in pts]
        for ax, (key, _) in zip(axes, PANELS, strict=True):
            ax.plot(x, [p.summary[key]["p90"] for p in pts], marker="o", label=config)
    for ax, (_, label) in zip(axes, PANELS, strict=True):
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
