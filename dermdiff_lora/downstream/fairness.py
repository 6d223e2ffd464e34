"""Per-skin-tone-group report of a binary (malignant vs benign) classifier, with fairlearn gaps.

Conventions: label 1 = malignant; score = predicted probability of malignant; a sample is predicted
malignant when ``score >= threshold``. Intervals are percentile bootstrap intervals; each group is resampled
within itself (a stratified bootstrap), from a generator seeded by ``(seed, group name)``, so a group's
interval does not change when other groups are added and two runs on the same test set see the same
resamples. Gap intervals combine the b-th resample of every group. A max - min gap is biased upward under
resampling (and a worst-group value downward), so when the true gap is near zero its percentile interval
can lie above the point estimate: read such an interval as "no gap distinguishable from noise".

Report (plain JSON; every metric ENTRY is {"value": float|None, "low": float|None, "high": float|None,
"n_valid": resamples that defined it, "reason": why value is None, else None})::

    {"schema": "dermdiff-lora/fairness-report/v1", "task": "binary", "positive_class": "malignant",
     "threshold": {"method": "fixed"|"youden", "value", "rule", ["youden_j", "n", "n_positive", "chosen_on"]},
     "bootstrap": {"n_boot", "seed", "level", "method"}, "groups": [names, in report order],
     "overall" and "per_group": {name: {"n", "n_positive", "n_negative", "n_predicted_positive",
         "metrics": {"auc", "balanced_accuracy", "sensitivity", "specificity": ENTRY}}},
     "gaps": {"groups_used": [...], "excluded": {name: reason}, "demographic_parity_difference",
              "equalized_odds_difference", "equal_opportunity_difference", "auc_gap": ENTRY,
              "worst_group_auc": ENTRY + {"group"}},
     ["source": {"path", "label_col", "score_col", "group_col"}  (fairness_from_csv)]}
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    true_positive_rate,
)
from sklearn.metrics import roc_auc_score, roc_curve

from ..core.errors import ConfigError, DataError
from .bootstrap import Statistic, bootstrap_replicates, percentile_interval, resampled_auc

SCHEMA = "dermdiff-lora/fairness-report/v1"
BINARY_METRICS = ("auc", "balanced_accuracy", "sensitivity", "specificity")
OVERALL_KEY = "\0overall"  # seeds the overall resamples; cannot clash with a group name


def group_rng(seed: int, name: str) -> np.random.Generator:
    """The bootstrap generator of one group: ``default_rng([seed, crc32(name)])``."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def metric_entry(value: float | None, replicates: np.ndarray | None, level: float,
                 reason: str | None = None) -> dict[str, Any]:
    """``{"value", "low", "high", "n_valid", "reason"}``; value None means undefined, and says why."""
    if value is None or not np.isfinite(value):
        return {"value": None, "low": None, "high": None, "n_valid": 0, "reason": reason or "undefined"}
    return {"value": float(value), **percentile_interval(replicates, level), "reason": None}


def check_bootstrap(n_boot: int, level: float) -> None:
    """Raise ConfigError unless ``n_boot`` is a whole number >= 0 and 0 < ``level`` < 1."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ConfigError(f"n_boot={n_boot!r}: the number of bootstrap resamples must be a whole number >= 0 "
                          "(0 skips the intervals; 1000 is usual)")
    if not 0.0 < float(level) < 1.0:
        raise ConfigError(f"level={level!r}: the interval level must lie strictly between 0 and 1, e.g. 0.95")


def as_groups(groups: Sequence[Any], n: int,
              expected: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Group names as a str array of length ``n`` and their report order (``expected``, else sorted).

    Raises DataError for a length mismatch, a missing group name, or an expected group without samples.
    """
    raw = list(groups)
    if len(raw) != n:
        raise DataError(f"got {n} labels but {len(raw)} group names; give exactly one group per sample")
    for i, g in enumerate(raw):
        if g is None or (isinstance(g, float) and np.isnan(g)) or str(g).strip() == "":
            raise DataError(f"sample {i} has no group name; give every sample its skin-tone group")
    names = np.array([str(g) for g in raw], dtype=object)
    present = sorted(set(names.tolist()))
    if expected is None:
        return names, present
    order = [str(g) for g in expected]
    empty = [g for g in order if g not in present]
    if empty:
        raise DataError(f"group(s) {', '.join(map(repr, empty))} have no samples (groups present: "
                        f"{', '.join(present)}); drop them from the expected groups or add their predictions")
    return names, order + [g for g in present if g not in order]


def _binary_arrays(labels: Sequence[Any], scores: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int 0/1 and scores as float in [0, 1]; DataError naming the first bad sample otherwise."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    if y.ndim != 1 or s.shape != y.shape:
        raise DataError(f"labels {y.shape} and scores {s.shape} must be 1-D arrays of the same length")
    if y.size == 0:
        raise DataError("no samples: labels and scores are empty")
    bad = np.flatnonzero(~np.isin(y, [0, 1]))
    if bad.size:
        raise DataError(f"sample {bad[0]} has label {y.tolist()[bad[0]]!r}; labels must be 0 (benign) or "
                        "1 (malignant)")
    bad = np.flatnonzero(~((s >= 0) & (s <= 1)))
    if bad.size:
        raise DataError(f"sample {bad[0]} has score {float(s[bad[0]])!r}; scores must be probabilities of "
                        "malignant in [0, 1] (apply a sigmoid to logits first)")
    return y.astype(int), s


def choose_threshold(labels: Sequence[Any], scores: Sequence[Any],
                     method: str | float = "youden") -> dict[str, Any]:
    """Pick the decision threshold, on the validation split: Youden's J or a fixed value.

    ``"youden"`` takes argmax of tpr - fpr over ``roc_curve``'s finite thresholds (the highest threshold
    on ties, values within 1e-12 counting as tied). Returns ``{"method": "youden", "value", "youden_j",
    "n", "n_positive"}`` or ``{"method": "fixed", "value"}``.
    """
    if not isinstance(method, str):
        value = float(method)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"threshold {method!r} is outside [0, 1]; give a probability such as 0.5 "
                              "or 'youden'")
        return {"method": "fixed", "value": value}
    if method != "youden":
        raise ConfigError(f"threshold method {method!r} is unknown; use 'youden' or a number in [0, 1]")
    y, s = _binary_arrays(labels, scores)
    if y.min() == y.max():
        raise DataError(f"Youden's J needs both classes in the validation predictions, but all {y.size} are "
                        f"label {y[0]}; use a fixed threshold or a validation split with both classes")
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    finite = np.isfinite(thresholds)
    j = np.where(finite, tpr - fpr, -np.inf)
    best = int(np.flatnonzero(j >= j.max() - 1e-12)[0])  # ties (up to rounding): highest threshold
    return {"method": "youden", "value": float(thresholds[best]), "youden_j": float(j[best]),
            "n": int(y.size), "n_positive": int(y.sum())}


def _threshold_block(threshold: float | Mapping[str, Any]) -> dict[str, Any]:
    """The report's record of the threshold: a ``choose_threshold`` result, or a fixed float."""
    if isinstance(threshold, Mapping):
        if "value" not in threshold or "method" not in threshold:
            raise ConfigError(f"threshold {dict(threshold)!r} is not a choose_threshold() result")
        block = dict(threshold)
        choose_threshold([], [], float(block["value"]))  # range check only
        return block
    if isinstance(threshold, str):
        raise ConfigError(f"threshold {threshold!r}: choose it on the validation split with "
                          "choose_threshold(val_labels, val_scores, 'youden') and pass the result here")
    return choose_threshold([], [], threshold)


def _replicate_rates(y: np.ndarray, s: np.ndarray, pred: np.ndarray) -> Statistic:
    """A bootstrap statistic giving every rate of one group per resample (NaN where undefined)."""
    def statistic(idx: np.ndarray) -> dict[str, np.ndarray]:
        yy, pp = y[idx].astype(bool), pred[idx]
        pos, neg = yy.sum(axis=1), (~yy).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            sens = (yy & pp).sum(axis=1) / pos
            spec = (~yy & ~pp).sum(axis=1) / neg
        return {"sensitivity": sens, "specificity": spec, "balanced_accuracy": (sens + spec) / 2,
                "auc": resampled_auc(yy, s[idx]), "selection_rate": pp.mean(axis=1),
                "fpr": 1.0 - spec}
    return statistic


def _point_rates(y: np.ndarray, s: np.ndarray, pred: np.ndarray) -> tuple[dict[str, float | None], dict]:
    """Point estimates of one group's metrics (None where undefined) and the reasons for the Nones."""
    pos, neg = int(y.sum()), int((1 - y).sum())
    sens = float((pred & (y == 1)).sum() / pos) if pos else None
    spec = float((~pred & (y == 0)).sum() / neg) if neg else None
    one_class = f"only one class ({pos} malignant, {neg} benign)"
    values = {"sensitivity": sens, "specificity": spec,
              "balanced_accuracy": (sens + spec) / 2 if pos and neg else None,
              "auc": float(roc_auc_score(y, s)) if pos and neg else None}
    reasons = {"sensitivity": "no malignant samples", "specificity": "no benign samples",
               "balanced_accuracy": one_class, "auc": one_class}
    return values, reasons


def _block(y: np.ndarray, s: np.ndarray, pred: np.ndarray, rng: np.random.Generator, n_boot: int,
           level: float) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One group's (or the overall) counts and metric entries, and its bootstrap replicates."""
    values, reasons = _point_rates(y, s, pred)
    reps = bootstrap_replicates(_replicate_rates(y, s, pred), y.size, n_boot=n_boot, rng=rng)
    block = {"n": int(y.size), "n_positive": int(y.sum()), "n_negative": int((1 - y).sum()),
             "n_predicted_positive": int(pred.sum()),
             "metrics": {m: metric_entry(values[m], reps.get(m), level, reasons[m]) for m in BINARY_METRICS}}
    return block, reps


def stack_replicates(reps: dict[str, dict[str, np.ndarray]], keys: list[str],
                     name: str) -> np.ndarray | None:
    """The (groups, n_boot) replicates of ``name`` for ``keys``; None without groups or resamples."""
    rows = [reps[k].get(name) for k in keys]
    return np.vstack(rows) if rows and all(r is not None for r in rows) else None


def _spread(stack: np.ndarray | None) -> np.ndarray | None:
    """Per-resample max - min across groups (NaN when any group is undefined in that resample)."""
    return None if stack is None else stack.max(axis=0) - stack.min(axis=0)


def _gaps(y: np.ndarray, pred: np.ndarray, g: np.ndarray, per_group: dict[str, Any],
          reps: dict[str, dict[str, np.ndarray]], order: list[str], level: float) -> dict[str, Any]:
    """Fairness gaps across groups; the label-dependent ones use only groups with both classes."""
    both = [k for k in order if per_group[k]["n_positive"] and per_group[k]["n_negative"]]
    few = f"needs two groups with both classes; {len(both)} have them"
    mask = np.isin(g, both)
    eo = eop = dp = None
    if len(order) > 1:
        dp = demographic_parity_difference(y, pred, sensitive_features=g)
    if len(both) > 1:
        eo = equalized_odds_difference(y[mask], pred[mask], sensitive_features=g[mask])
        eop = MetricFrame(metrics=true_positive_rate, y_true=y[mask], y_pred=pred[mask],
                          sensitive_features=g[mask]).difference(method="between_groups")
    tpr = _spread(stack_replicates(reps, both, "sensitivity"))
    fpr = _spread(stack_replicates(reps, both, "fpr"))
    aucs = {k: per_group[k]["metrics"]["auc"]["value"] for k in both}
    worst = min(aucs, key=aucs.get) if aucs else None
    auc_stack = stack_replicates(reps, both, "auc")
    worst_reps = None if auc_stack is None else auc_stack.min(axis=0)
    return {
        "groups_used": both,
        "excluded": {k: "only one class" for k in order if k not in both},
        "demographic_parity_difference": metric_entry(
            dp, _spread(stack_replicates(reps, order, "selection_rate")), level, "needs two groups"),
        "equalized_odds_difference": metric_entry(
            eo, None if tpr is None else np.maximum(tpr, fpr), level, few),
        "equal_opportunity_difference": metric_entry(eop, tpr, level, few),
        "auc_gap": metric_entry(max(aucs.values()) - aucs[worst] if len(aucs) > 1 else None,
                                _spread(auc_stack), level, few),
        "worst_group_auc": {**metric_entry(aucs.get(worst), worst_reps, level, "no group has both classes"),
                            "group": worst},
    }


def fairness_report(labels: Sequence[Any], scores: Sequence[Any], groups: Sequence[Any], *,
                    threshold: float | Mapping[str, Any] = 0.5, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95, expected_groups: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON-serialisable per-group report of a binary classifier (schema in the module docstring).

    ``threshold`` is a probability or a ``choose_threshold`` result (chosen on the validation split).
    ``expected_groups`` fixes the group order and makes a group without samples an error.
    """
    check_bootstrap(n_boot, level)
    block = _threshold_block(threshold)
    y, s = _binary_arrays(labels, scores)
    g, order = as_groups(groups, y.size, expected_groups)
    pred = s >= block["value"]
    overall, _ = _block(y, s, pred, group_rng(seed, OVERALL_KEY), n_boot, level)
    per_group, reps = {}, {}
    for k in order:
        m = g == k
        per_group[k], reps[k] = _block(y[m], s[m], pred[m], group_rng(seed, k), n_boot, level)
    return {"schema": SCHEMA, "task": "binary", "positive_class": "malignant",
            "threshold": {**block, "rule": "malignant if score >= threshold"},
            "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "level": float(level),
                          "method": "percentile; resampled within each group"},
            "groups": order, "overall": overall, "per_group": per_group,
            "gaps": _gaps(y, pred.astype(int), g, per_group, reps, order, level)}
