"""Paired bootstrap of each arm's difference from ``real``: is it better, worse, or indistinguishable?

Every arm is scored on the same test images, so the difference of a metric between two arms is resampled
in pairs: each resample draws test images (within each tone group, as the fairness report does) and
evaluates BOTH arms on the same draw; an arm's value on a draw is the mean over its seeds (each seed at its
own validation-chosen threshold). The interval of the differences (arm - real) is a percentile interval.
An arm is called better (or worse) on a metric only when that interval excludes 0; otherwise the two are
not distinguishable on this test set.

Metrics: binary: AUC, balanced accuracy, worst-group balanced accuracy (higher is better) and the
equalized-odds difference (lower is fairer); multi-class: balanced accuracy and worst-group balanced
accuracy.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .bootstrap import percentile_interval, resampled_auc
from .fairness import group_rng

BINARY = {"auc": "AUC", "balanced_accuracy": "bal. acc.", "worst_group_balanced_accuracy": "worst-group bal. acc.",
          "equalized_odds_difference": "equalized odds diff."}
MULTICLASS = {k: BINARY[k] for k in ("balanced_accuracy", "worst_group_balanced_accuracy")}
LOWER_IS_BETTER = {"equalized_odds_difference"}


def draws(groups: Sequence[str], order: Sequence[str], n_boot: int, seed: int) -> tuple[np.ndarray, dict]:
    """(n_boot + 1, n) test indices, row 0 the identity, then resamples within each group; group -> columns."""
    groups = np.asarray(groups, dtype=str)
    columns, parts, start = {}, [], 0
    for g in order:
        members = np.flatnonzero(groups == g)
        rng = group_rng(seed, "paired:" + g)
        drawn = members[rng.integers(0, members.size, size=(n_boot, members.size))] if members.size else \
            np.empty((n_boot, 0), dtype=int)
        parts.append(np.vstack([members[None], drawn]))
        columns[g] = slice(start, start + members.size)
        start += members.size
    return np.hstack(parts), columns


def _rates(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise true and false positive rates (NaN where a class is absent)."""
    pos, neg = y.sum(axis=1), (~y).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pred & y).sum(axis=1) / pos, (pred & ~y).sum(axis=1) / neg


def _recall_mean(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    recalls = []
    for c in range(n_classes):
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(((pred == c) & (y == c)).sum(axis=1) / (y == c).sum(axis=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        return np.nanmean(np.vstack(recalls), axis=0)


def _nan(fn, stack: list[np.ndarray]) -> np.ndarray:
    if not stack:
        return np.full(0, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(np.vstack(stack), axis=0)


def metrics_on(idx: np.ndarray, columns: Mapping[str, slice], labels: np.ndarray, values: np.ndarray,
               threshold: float | None, n_classes: int) -> dict[str, np.ndarray]:
    """Each metric of one fitted model on every row of ``idx`` ((B, n) -> (B,) arrays)."""
    binary = threshold is not None
    y = labels[idx]
    if binary:
        scores = values[idx]
        pred, yb = scores >= threshold, y.astype(bool)
        tpr, fpr = _rates(yb, pred)
        out = {"auc": resampled_auc(yb, scores), "balanced_accuracy": (tpr + 1.0 - fpr) / 2.0}
    else:
        pred = values.argmax(axis=1)[idx]
        out = {"balanced_accuracy": _recall_mean(y, pred, n_classes)}
    per_group, tprs, fprs = [], [], []
    for cols in columns.values():
        if binary:
            t, f = _rates(yb[:, cols], pred[:, cols])
            per_group.append((t + 1.0 - f) / 2.0)
            tprs.append(t)
            fprs.append(f)
        else:
            per_group.append(_recall_mean(y[:, cols], pred[:, cols], n_classes))
    out["worst_group_balanced_accuracy"] = _nan(np.nanmin, per_group)
    if binary:
        out["equalized_odds_difference"] = np.fmax(_nan(np.nanmax, tprs) - _nan(np.nanmin, tprs),
                                                   _nan(np.nanmax, fprs) - _nan(np.nanmin, fprs))
    return out


def paired_comparison(labels: Sequence[int], groups: Sequence[str], order: Sequence[str],
                      runs: Mapping[str, Sequence[tuple[np.ndarray, float | None]]], *, reference: str = "real_only",
                      n_classes: int = 2, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                      arm_names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Differences arm - ``reference`` per metric with paired percentile intervals and a verdict.

    ``runs[arm]`` holds one (test scores or probabilities, threshold or None) per seed, in seed order.
    """
    labels = np.asarray(labels)
    used = [g for g in order if g in set(groups)]
    idx, columns = draws(groups, used, max(n_boot, 0), seed)
    binary = next(iter(runs.values()))[0][1] is not None
    names = BINARY if binary else MULTICLASS
    means = {}
    for arm, per_seed in runs.items():
        values = [metrics_on(idx, columns, labels, np.asarray(v), th, n_classes) for v, th in per_seed]
        means[arm] = {m: np.mean([v[m] for v in values], axis=0) for m in names}
    out = {}
    for arm in runs:
        if arm == reference:
            continue
        out[arm] = {}
        for metric in names:
            diff = means[arm][metric] - means[reference][metric]
            entry = {"value": None if np.isnan(diff[0]) else float(diff[0]),
                     **percentile_interval(diff[1:] if n_boot else None, level)}
            out[arm][metric] = {**entry, "verdict": verdict(entry, metric in LOWER_IS_BETTER)}
    return {"reference": reference, "metrics": dict(names), "lower_is_better": sorted(LOWER_IS_BETTER & set(names)),
            "differences": out, "bootstrap": {"n_boot": n_boot, "seed": seed, "level": level,
                                              "method": "paired percentile, test images resampled within each "
                                                        "tone group, both arms on the same draws"},
            "summary": summary(out, names, arm_names or {})}


def verdict(entry: Mapping[str, Any], lower_is_better: bool) -> str:
    """"better" / "worse" when the interval excludes 0, else "not distinguishable"."""
    low, high = entry.get("low"), entry.get("high")
    if low is None or high is None or low <= 0.0 <= high:
        return "not distinguishable"
    up = low > 0.0
    return "better" if up != lower_is_better else "worse"


def summary(differences: Mapping[str, Mapping[str, Mapping]], names: Mapping[str, str],
            arm_names: Mapping[str, str]) -> list[str]:
    """One line per arm naming the metrics it is better / worse on; a single line when none differs."""
    lines, any_differs = [], False
    for arm, metrics in differences.items():
        better = [names[m] for m, e in metrics.items() if e["verdict"] == "better"]
        worse = [names[m] for m, e in metrics.items() if e["verdict"] == "worse"]
        any_differs |= bool(better or worse)
        parts = [f"better than real only on {', '.join(better)}" if better else "",
                 f"worse on {', '.join(worse)}" if worse else ""]
        lines.append(f"{arm_names.get(arm, arm)}: " + ("; ".join(p for p in parts if p) or
                                                     "not distinguishable from real only on any metric"))
    return lines if any_differs else ["no arm is distinguishable from real only (every paired interval includes 0)"]
