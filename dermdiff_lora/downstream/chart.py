"""Bar chart of per-group metrics for two runs (e.g. real only vs real + synthetic), written atomically."""

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
    """Grouped bars (one panel per metric, one bar pair per group, bootstrap intervals as error bars, or
    ± the standard deviation over seeds for seed-averaged reports, said in the title).

    The image format follows ``path``'s suffix (png, pdf, svg); the file is written atomically.
    Undefined metrics (e.g. AUC of a one-class group) are marked "n/a".
    """
    metrics = list(metrics or _DEFAULT[real_only["task"]])
    unknown = [m for m in metrics if m not in _TITLES]
    if unknown:
        raise ConfigError(f"cannot chart metric(s) {unknown}; choose from {', '.join(_TITLES)}")
    path = Path(path)
    if path.suffix.lower().lstrip(".") not in ("png", "pdf", "svg"):
        raise ConfigError(f"chart path {path} must end in .png, .pdf or .svg")
    groups = list(real_only["groups"]) + [g for g in real_plus_synthetic["groups"]
                                          if g not in real_only["groups"]]
    fig = Figure(figsize=(4.0 * len(metrics), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    x, width = np.arange(len(groups)), 0.38
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for j, (name, report) in enumerate(zip(names, (real_only, real_plus_synthetic))):
            values, errs = _bars(report, groups, metric)
            pos = x + (j - 0.5) * width
            ax.bar(pos, values, width, yerr=errs, capsize=3, label=name, color=("#8c8c8c", "#3b75af")[j])
            for p in pos[np.isnan(values)]:
                ax.text(p, 0.02, "n/a", ha="center", va="bottom", fontsize="x-small", rotation=90)
        ax.set_xticks(x, groups, rotation=30 if len(groups) > 4 else 0)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylim(0, 1.05)
        ax.set_title(_TITLES[metric])
        ax.grid(axis="y", alpha=0.3)
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2)
    if any("seeds" in r for r in (real_only, real_plus_synthetic)):
        title = f"{title + chr(10) if title else ''}mean over seeds; error bars ± standard deviation over seeds"
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lower().lstrip("."), dpi=120)
    return path
