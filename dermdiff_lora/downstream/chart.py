"""Bar chart of per-group metrics for several runs (e.g. the arms of ``downstream``), written atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..core.errors import ConfigError
from ..core.fsutil import atomic_path

_DEFAULT = {"binary": ("sensitivity", "specificity", "auc"), "multiclass": ("balanced_accuracy",)}
_TITLES = {"sensitivity": "Sensitivity (malignant)", "specificity": "Specificity (benign)", "auc": "ROC AUC",
           "balanced_accuracy": "Balanced accuracy"}


def _bars(report: Mapping[str, Any], groups: list[str], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Values (NaN if undefined or absent) and (2, n) error-bar lengths of ``metric`` per group: the bootstrap
    interval, or ± the standard deviation over seeds for a seed-averaged report."""
    values, errs = [], []
    for g in groups:
        entry = report["per_group"].get(g, {}).get("metrics", {}).get(metric) or {}
        v = entry.get("value")
        values.append(np.nan if v is None else v)
        low, high = entry.get("low"), entry.get("high")
        if "by_seed" in entry:
            sd = entry.get("sd_over_seeds") or 0.0
            low, high = (None, None) if v is None else (v - sd, v + sd)
        if v is None:
            errs.append((np.nan, np.nan))
        else:
            errs.append((0.0, 0.0) if low is None else (max(v - low, 0.0), max(high - v, 0.0)))
    return np.array(values, dtype=float), np.array(errs, dtype=float).T.reshape(2, -1)


def save_chart(real_only: Mapping[str, Any], real_plus_synthetic: Mapping[str, Any],
               path: str | os.PathLike, *, names: tuple[str, str] = ("real only", "real + synthetic"),
               metrics: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Two runs' grouped bars (see ``save_arms_chart``)."""
    return save_arms_chart(list(zip(names, (real_only, real_plus_synthetic))), path, metrics=metrics, title=title)


_COLOURS = ("#8c8c8c", "#3b75af", "#e1812c", "#3a923a", "#c03d3e", "#9372b2")


def save_arms_chart(runs: Sequence[tuple[str, Mapping[str, Any]]], path: str | os.PathLike, *,
                    metrics: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Grouped bars (one panel per metric, one bar per run and group, bootstrap intervals as error bars).

    ``runs`` are (name, report) pairs, e.g. every arm of ``downstream``. The image format follows
    ``path``'s suffix (png, pdf, svg); the file is written atomically. Undefined metrics (e.g. AUC of a
    one-class group) are marked "n/a".
    """
    metrics = list(metrics or _DEFAULT[runs[0][1]["task"]])
    unknown = [m for m in metrics if m not in _TITLES]
    if unknown:
        raise ConfigError(f"cannot chart metric(s) {unknown}; choose from {', '.join(_TITLES)}")
    path = Path(path)
    if path.suffix.lower().lstrip(".") not in ("png", "pdf", "svg"):
        raise ConfigError(f"chart path {path} must end in .png, .pdf or .svg")
    groups = list(dict.fromkeys(g for _, report in runs for g in report["groups"]))
    fig = Figure(figsize=(max(4.0, 1.2 * len(runs) + 1.6) * len(metrics), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    x, width = np.arange(len(groups)), 0.8 / len(runs)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for j, (name, report) in enumerate(runs):
            values, errs = _bars(report, groups, metric)
            pos = x + (j - (len(runs) - 1) / 2) * width
            ax.bar(pos, values, width, yerr=errs, capsize=3, label=name, color=_COLOURS[j % len(_COLOURS)])
            for p in pos[np.isnan(values)]:
                ax.text(p, 0.02, "n/a", ha="center", va="bottom", fontsize="x-small", rotation=90)
        ax.set_xticks(x, groups, rotation=30 if len(groups) > 4 else 0)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylim(0, 1.05)
        ax.set_title(_TITLES[metric])
        ax.grid(axis="y", alpha=0.3)
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(len(runs), 4))
    if any("seeds" in report for _, report in runs):
        title = f"{title + chr(10) if title else ''}mean over seeds; error bars ± standard deviation over seeds"
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lower().lstrip("."), dpi=120)
    return path
