"""Figures shared by the methods' experiments (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reprozoo.core.io import atomic_savefig
from reprozoo.core.results import Result

__all__ = ["metric_by_dataset", "line_plot", "figure"]


def figure(width: float = 6.4, height: float = 4.0):
    """A new (fig, ax) on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def metric_by_dataset(result: Result, metric: str, path: str | Path, *, setting: str | None = None) -> Path:
    """Grouped bar chart of ``metric`` (mean ± std over seeds): data sets on x, one bar per method."""
    summary = result.summary()
    datasets = result.datasets()
    methods = list(dict.fromkeys(k[2] for k in summary if setting is None or k[1] == setting))
    fig, ax = figure(max(6.4, 1.1 * len(datasets) + 2), 4.0)
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(datasets))
    for i, method in enumerate(methods):
        means, stds = [], []
        for d in datasets:
            vals = [s[metric] for k, s in summary.items() if k[0] == d and k[2] == method
                    and metric in s and (setting is None or k[1] == setting)]
            means.append(vals[0][0] if vals else np.nan)
            stds.append(vals[0][1] if vals else 0.0)
        multi_seed = any(s > 0 for s in stds)
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width, yerr=stds if multi_seed else None,
               label=method, capsize=2)
    ax.set_xticks(x, datasets, rotation=30, ha="right")
    ax.set_ylabel(metric + (" (mean ± std over seeds)" if len(result.records) and _n_seeds(result) > 1 else ""))
    ax.set_title(f"{result.name}: {metric} by data set")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return atomic_savefig(fig, path)


def _n_seeds(result: Result) -> int:
    return len({r.seed for r in result.records})


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    integer_x: bool = False,
) -> Path:
    """One line per entry of ``series`` (``label: (x, y)``), markers on the points.

    ``integer_x`` puts ticks on integers only (iterations, rounds, depths).
    """
    fig, ax = figure()
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if integer_x:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return atomic_savefig(fig, path)
