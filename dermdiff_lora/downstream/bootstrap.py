"""The one seeded percentile bootstrap behind every interval in the downstream reports."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# A chunk of resamples holds at most this many drawn indices, so memory stays bounded for big test sets.
_MAX_CELLS = 2_000_000

Statistic = Callable[[np.ndarray], dict[str, np.ndarray]]


def bootstrap_replicates(statistic: Statistic, n: int, *, n_boot: int,
                         rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw ``n_boot`` resamples of ``n`` indices with replacement and evaluate ``statistic`` on them.

    ``statistic`` gets an integer array of shape (b, n) -- one resample per row -- and returns named arrays
    of shape (b,), NaN where a resample leaves the statistic undefined (e.g. AUC with one class). Resamples
    are drawn in chunks from ``rng`` in order, so a given generator state always gives the same replicates.
    Returns each name's (n_boot,) replicates.
    """
    if n < 1 or n_boot < 1:
        return {}
    chunk = max(1, _MAX_CELLS // n)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        for name, values in statistic(idx).items():
            parts.setdefault(name, []).append(np.asarray(values, dtype=float))
    return {name: np.concatenate(values) for name, values in parts.items()}


def percentile_interval(replicates: np.ndarray | None, level: float = 0.95) -> dict[str, float | int | None]:
    """The percentile interval of the finite ``replicates``: ``{"low", "high", "n_valid"}``.

    Undefined resamples (NaN) are skipped and counted out of ``n_valid``; with none valid, low/high are None.
    """
    values = np.asarray(replicates if replicates is not None else [], dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"low": None, "high": None, "n_valid": 0}
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return {"low": float(low), "high": float(high), "n_valid": int(values.size)}


def resampled_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Row-wise ROC AUC of (b, n) label and score arrays (Mann-Whitney U with average ranks for ties).

    Equals ``sklearn.metrics.roc_auc_score`` on every row that has both classes; NaN on the others.
    """
    from scipy.stats import rankdata

    labels = np.asarray(labels, dtype=bool)
    ranks = rankdata(scores, axis=1)
    n_pos = labels.sum(axis=1).astype(float)
    n_neg = labels.shape[1] - n_pos
    u = (ranks * labels).sum(axis=1) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = u / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc
