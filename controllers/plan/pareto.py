"""The plan's figure: output tokens/s per GPU against each class's p90 TTFT and TPOT, one point per refined
deployment at its max rate, the Pareto front (more throughput for less latency) drawn through them."""

from pathlib import Path

import matplotlib.pyplot as plt

from controllers.figures import save_figure
from controllers.plan.search import Evaluated, Plan


def front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both lower x and higher y, by rising x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    out: list[int] = []
    best_y = float("-inf")
    for i in order:
        if points[i][1] > best_y:
            out.append(i)
            best_y = points[i][1]
    return out


def _class_latency(e: Evaluated, name: str, metric: str) -> float | None:
    for f in e.figures:
        if name in f.classes and f.classes[name].requests:
            return getattr(f.classes[name], metric)["p90"]
    return None


def pareto_figure(plan: Plan, classes: list[str], path: Path) -> Path:
    fig, axes = plt.subplots(2, len(classes), figsize=(max(4.2 * len(classes), 6.4), 6.5), squeeze=False)
    labels = {id(e): f"#{i + 1}" for i, e in enumerate(plan.ranked)}
    for col, name in enumerate(classes):
        for row, (metric, title) in enumerate((("ttft_ms", "p90 TTFT (ms)"), ("tpot_ms", "p90 TPOT (ms)"))):
            ax = axes[row][col]
            pts, who = [], []
            for e in plan.ranked:
                x = _class_latency(e, name, metric)
                if x is not None:
                    pts.append((x, e.output_tokens_per_s_per_gpu))
                    who.append(e)
            for (x, y), e in zip(pts, who, strict=True):
                color = ("tab:green" if e.candidate.disaggregated else "tab:blue" if e.candidate.homogeneous
                         else "tab:orange")
                ax.scatter([x], [y], color=color, zorder=3)
                ax.annotate(labels[id(e)], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
            if pts:
                idx = front(pts)
                ax.plot([pts[i][0] for i in idx], [pts[i][1] for i in idx], color="gray", lw=1, ls="--")
            ax.set_xlabel(f"{name}: {title}")
            ax.set_ylabel("output tokens/s per GPU")
            ax.grid(alpha=0.3)
    fig.suptitle(f"{plan.scenario}: deployments at their max rate\n(#rank; blue homogeneous, orange split, green "
                 "disaggregated)")
    return save_figure(fig, path)
