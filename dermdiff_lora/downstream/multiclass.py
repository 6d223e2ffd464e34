"""Per-group report of a multi-class lesion classifier (e.g. HAM10000's 7 classes, PAD-UFES-20's 6).

Per group: one-vs-rest ROC AUC of every class, and balanced accuracy of the argmax prediction (the mean
recall over the classes present in that group, as ``sklearn.metrics.balanced_accuracy_score``). Intervals
use the same within-group percentile bootstrap and per-group seeding as the binary report (see the
``fairness`` module for the caveat on gap intervals and the metric ENTRY format).

Report: {"schema": "dermdiff-lora/fairness-report-multiclass/v1", "task": "multiclass", "classes",
"prediction", "bootstrap", "groups", "overall" and "per_group": {name: {"n", "class_counts": {class: n},
"metrics": {"balanced_accuracy": ENTRY, "auc_ovr": {class: ENTRY}}}}, "gaps":
{"worst_group_balanced_accuracy": ENTRY + {"group"}, "balanced_accuracy_gap": ENTRY,
"auc_ovr": {class: {"worst_group": ENTRY + {"group"}, "gap": ENTRY}}}}.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from ..core.errors import DataError
from .bootstrap import Statistic, bootstrap_replicates, resampled_auc
from .fairness import OVERALL_KEY, as_groups, check_bootstrap, group_rng, metric_entry, stack_replicates

SCHEMA = "dermdiff-lora/fairness-report-multiclass/v1"


def _class_indices(labels: Sequence[Any], classes: list[str]) -> np.ndarray:
    """Labels as class indices: each label is a class name of ``classes`` or an index 0..K-1."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.empty(len(labels), dtype=int)
    for i, lab in enumerate(labels):
        if str(lab) in index:
            out[i] = index[str(lab)]
        elif isinstance(lab, (int, np.integer)) and not isinstance(lab, bool) and 0 <= lab < len(classes):
            out[i] = int(lab)
        else:
            raise DataError(f"sample {i} has label {lab!r}, which is none of the classes "
                            f"{', '.join(classes)} (nor an index 0..{len(classes) - 1})")
    return out


def _score_matrix(scores: Any, n: int, k: int) -> np.ndarray:
    """Scores as an (n, k) float array in [0, 1]; DataError naming the first bad sample otherwise."""
    s = np.asarray(scores, dtype=float)
    if s.shape != (n, k):
        raise DataError(f"scores have shape {s.shape}; expected ({n}, {k}): one row per sample, one column "
                        "per class in the order of `classes`")
    bad = np.argwhere(~((s >= 0) & (s <= 1)))
    if bad.size:
        i, j = bad[0]
        raise DataError(f"sample {i}, class column {j} has score {float(s[i, j])!r}; scores must be "
                        "probabilities in [0, 1] (apply a softmax to logits first)")
    return s


def _statistic(y: np.ndarray, s: np.ndarray, k: int) -> Statistic:
    """A bootstrap statistic: balanced accuracy and each class's one-vs-rest AUC per resample."""
    correct = s.argmax(axis=1) == y

    def statistic(idx: np.ndarray) -> dict[str, np.ndarray]:
        yy, ok = y[idx], correct[idx]
        out, recalls = {}, []
        for c in range(k):
            is_c = yy == c
            count = is_c.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                recalls.append(np.where(count > 0, (is_c & ok).sum(axis=1) / count, np.nan))
            out[f"auc:{c}"] = resampled_auc(is_c, s[:, c][idx])
        out["balanced_accuracy"] = np.nanmean(np.vstack(recalls), axis=0)
        return out
    return statistic


def _block(y: np.ndarray, s: np.ndarray, classes: list[str], rng: np.random.Generator, n_boot: int,
           level: float) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One group's (or the overall) class counts, balanced accuracy and per-class AUCs, and replicates."""
    k = len(classes)
    reps = bootstrap_replicates(_statistic(y, s, k), y.size, n_boot=n_boot, rng=rng)
    counts = np.bincount(y, minlength=k)
    aucs = {}
    for c, name in enumerate(classes):
        defined = 0 < counts[c] < y.size
        value = float(roc_auc_score(y == c, s[:, c])) if defined else None
        reason = f"{'no' if counts[c] == 0 else 'only'} {name} samples"
        aucs[name] = metric_entry(value, reps.get(f"auc:{c}"), level, reason)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": expected within a group
        warnings.simplefilter("ignore", UserWarning)
        bal = float(balanced_accuracy_score(y, s.argmax(axis=1)))
    block = {"n": int(y.size), "class_counts": {name: int(counts[c]) for c, name in enumerate(classes)},
             "metrics": {"balanced_accuracy": metric_entry(bal, reps.get("balanced_accuracy"), level),
                         "auc_ovr": aucs}}
    return block, reps


def _worst_and_gap(values: dict[str, float], stack: np.ndarray | None, level: float,
                   what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The worst group's value and the max - min gap across groups, each with its bootstrap interval."""
    few = f"needs two groups where {what} is defined; {len(values)} have it"
    worst = min(values, key=values.get) if values else None
    gap = max(values.values()) - values[worst] if len(values) > 1 else None
    worst_entry = {**metric_entry(values.get(worst), None if stack is None else stack.min(axis=0), level,
                                  f"no group where {what} is defined"), "group": worst}
    spread = None if stack is None else stack.max(axis=0) - stack.min(axis=0)
    gap_entry = metric_entry(gap, spread, level, few)
    return worst_entry, gap_entry


def _gaps(per_group: dict[str, Any], reps: dict[str, Any], classes: list[str], level: float) -> dict:
    """Worst group and gap of balanced accuracy, and per class of the one-vs-rest AUC."""
    bal = {g: b["metrics"]["balanced_accuracy"]["value"] for g, b in per_group.items()}
    bal_stack = stack_replicates(reps, list(bal), "balanced_accuracy")
    worst, gap = _worst_and_gap(bal, bal_stack, level, "balanced accuracy")
    out = {"worst_group_balanced_accuracy": worst, "balanced_accuracy_gap": gap, "auc_ovr": {}}
    for c, name in enumerate(classes):
        aucs = {g: b["metrics"]["auc_ovr"][name]["value"] for g, b in per_group.items()
                if b["metrics"]["auc_ovr"][name]["value"] is not None}
        auc_stack = stack_replicates(reps, list(aucs), f"auc:{c}")
        worst, gap = _worst_and_gap(aucs, auc_stack, level, f"{name} AUC")
        out["auc_ovr"][name] = {"worst_group": worst, "gap": gap}
    return out


def multiclass_report(labels: Sequence[Any], scores: Any, groups: Sequence[Any], *,
                      classes: Sequence[str], n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                      expected_groups: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON-serialisable per-group report of a multi-class classifier.

    ``scores`` is (n, K) with columns in the order of ``classes``; each label is a class name or index.
    """
    check_bootstrap(n_boot, level)
    classes = [str(c) for c in classes]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DataError(f"classes {classes!r} must be at least two distinct names")
    y = _class_indices(list(labels), classes)
    if y.size == 0:
        raise DataError("no samples: labels are empty")
    s = _score_matrix(scores, y.size, len(classes))
    g, order = as_groups(groups, y.size, expected_groups)
    overall, _ = _block(y, s, classes, group_rng(seed, OVERALL_KEY), n_boot, level)
    per_group, reps = {}, {}
    for k in order:
        m = g == k
        per_group[k], reps[k] = _block(y[m], s[m], classes, group_rng(seed, k), n_boot, level)
    return {"schema": SCHEMA, "task": "multiclass", "classes": classes, "prediction": "argmax of scores",
            "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "level": float(level),
                          "method": "percentile; resampled within each group"},
            "groups": order, "overall": overall, "per_group": per_group,
            "gaps": _gaps(per_group, reps, classes, level)}
