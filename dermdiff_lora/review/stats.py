"""Reader-study statistics: exact binomial test, Mann-Whitney, Cohen's and Fleiss' kappa.

The binomial and Mann-Whitney tests are scipy's; Cohen's kappa is scikit-learn's; Fleiss' kappa is the
closed form of Fleiss (1971), tested against statsmodels' ``fleiss_kappa``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def binomial(successes: int, n: int, p: float = 0.5) -> dict:
    """Accuracy with its exact two-sided binomial test against ``p`` and a Clopper-Pearson 95 % interval."""
    from scipy.stats import binomtest

    if n == 0:
        return {"n": 0, "correct": 0, "accuracy": None, "p_value": None, "ci95": None}
    test = binomtest(successes, n, p)
    ci = test.proportion_ci(0.95, method="exact")
    return {"n": n, "correct": successes, "accuracy": successes / n, "p_value": float(test.pvalue),
            "ci95": [float(ci.low), float(ci.high)], "null": p}


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> dict:
    """Two-sided Mann-Whitney U of ``a`` vs ``b`` (scipy), with both medians and counts."""
    from scipy.stats import mannwhitneyu

    out = {"n_a": len(a), "n_b": len(b), "median_a": float(np.median(a)) if len(a) else None,
           "median_b": float(np.median(b)) if len(b) else None, "U": None, "p_value": None}
    if len(a) and len(b):
        test = mannwhitneyu(a, b, alternative="two-sided")
        out.update(U=float(test.statistic), p_value=float(test.pvalue))
    return out


def cohen_kappa(a: Sequence, b: Sequence) -> float | None:
    """Cohen's kappa of two raters' labels of the same items (scikit-learn); None below 2 items or when
    neither rater varies (kappa undefined)."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) < 2 or len(set(a) | set(b)) < 2:
        return None
    value = float(cohen_kappa_score(list(a), list(b)))
    return None if np.isnan(value) else value


def fleiss_kappa(table: np.ndarray) -> float | None:
    """Fleiss' kappa of an (items × categories) table of counts, every item rated by the same number of
    raters (Fleiss 1971); None when undefined (one category only)."""
    table = np.asarray(table, dtype=np.float64)
    n_items = table.shape[0]
    raters = table.sum(axis=1)
    if n_items == 0 or not np.all(raters == raters[0]) or raters[0] < 2:
        return None
    m = raters[0]
    p_cat = table.sum(axis=0) / (n_items * m)
    p_item = ((table * table).sum(axis=1) - m) / (m * (m - 1))
    p_bar, p_e = p_item.mean(), float((p_cat * p_cat).sum())
    return None if p_e == 1 else float((p_bar - p_e) / (1 - p_e))


def category_table(ratings: Sequence[Sequence], categories: Sequence) -> np.ndarray:
    """(items × categories) counts from each item's list of ratings."""
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(ratings), len(categories)), dtype=np.int64)
    for row, labels in enumerate(ratings):
        for label in labels:
            table[row, index[label]] += 1
    return table
