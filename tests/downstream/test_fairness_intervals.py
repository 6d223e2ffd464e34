"""The gap intervals of the binary fairness report against a bootstrap done by hand on a small fixed sample.

The reference redraws each group's resamples as the report documents (``default_rng([seed, crc32(group)])``,
one (n_boot, n) draw per group, the b-th resample of every group combined), counts every resample's rates
and AUC (pairs) by hand, and takes numpy's percentiles; the point values are fairlearn's.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    true_positive_rate,
)

from dermdiff_lora.downstream.fairness import _replicate_rates, fairness_report

# TPR A 2/3, B 1/2, C 2/3 (spread 1/6); FPR A 1/4, B 1/3, C 2/3 (spread 5/12): equalized odds is the FPR half
GROUPS = {
    "A": ([1, 1, 1, 0, 0, 0, 0], [0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4]),
    "B": ([1, 1, 0, 0, 0], [0.8, 0.45, 0.55, 0.3, 0.2]),
    "C": ([1, 0, 0, 1, 1, 0], [0.51, 0.49, 0.95, 0.05, 0.5, 0.6]),
}
N_BOOT, SEED, LEVEL = 120, 11, 0.9


def _rates(y: np.ndarray, s: np.ndarray) -> tuple[float, float, float, float]:
    """(TPR, FPR, selection rate, AUC) of one group's resample, counted by hand (NaN where undefined)."""
    pred = s >= 0.5
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    tpr = sum(p and t for p, t in zip(pred, y)) / pos if pos else np.nan
    fpr = sum(p and not t for p, t in zip(pred, y)) / neg if neg else np.nan
    pairs = [(a > c) + 0.5 * (a == c) for a, t in zip(s, y) if t for c, u in zip(s, y) if not u]
    return tpr, fpr, float(pred.mean()), (sum(pairs) / len(pairs) if pos and neg else np.nan)


def _hand_bootstrap() -> dict[str, np.ndarray]:
    """Each gap's replicate per combined resample: max - min over groups of rates counted by hand (NaN when a
    group lacks a class in that resample, which the report skips too)."""
    per_group = []
    for g, (y, s) in GROUPS.items():
        rng = np.random.default_rng([SEED, zlib.crc32(g.encode("utf-8"))])
        idx = rng.integers(0, len(y), size=(N_BOOT, len(y)))
        per_group.append([_rates(np.asarray(y)[i], np.asarray(s)[i]) for i in idx])
    rates = np.array(per_group)  # (groups, n_boot, 4)
    spread = rates.max(axis=0) - rates.min(axis=0)  # NaN propagates: a group undefined, the gap undefined
    return {"eop": spread[:, 0], "eo": np.maximum(spread[:, 0], spread[:, 1]), "dp": spread[:, 2],
            "auc_gap": spread[:, 3], "worst_auc": rates[:, :, 3].min(axis=0)}


def _interval(values: np.ndarray) -> tuple[float, float, int]:
    finite = values[np.isfinite(values)]
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high), int(finite.size)


@pytest.fixture(scope="module")
def both():
    labels = [y for g in GROUPS for y in GROUPS[g][0]]
    scores = [s for g in GROUPS for s in GROUPS[g][1]]
    groups = [g for g in GROUPS for _ in GROUPS[g][0]]
    report = fairness_report(labels, scores, groups, threshold=0.5, n_boot=N_BOOT, seed=SEED, level=LEVEL)
    return report, _hand_bootstrap(), (np.array(labels), (np.array(scores) >= 0.5).astype(int), np.array(groups))


def test_gap_point_values_are_fairlearns(both):
    report, _, (y, pred, g) = both
    gaps = report["gaps"]
    assert gaps["equalized_odds_difference"]["value"] == pytest.approx(equalized_odds_difference(y, pred, sensitive_features=g))
    assert gaps["equalized_odds_difference"]["value"] == pytest.approx(5 / 12)  # the FPR half: 2/3 - 1/4
    assert gaps["demographic_parity_difference"]["value"] == pytest.approx(
        demographic_parity_difference(y, pred, sensitive_features=g))
    assert gaps["equal_opportunity_difference"]["value"] == pytest.approx(
        MetricFrame(metrics=true_positive_rate, y_true=y, y_pred=pred, sensitive_features=g).difference())
    assert gaps["equal_opportunity_difference"]["value"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("gap, ref", [("demographic_parity_difference", "dp"), ("equalized_odds_difference", "eo"),
                                      ("equal_opportunity_difference", "eop"), ("auc_gap", "auc_gap"),
                                      ("worst_group_auc", "worst_auc")])
def test_gap_intervals_equal_the_hand_bootstrap(both, gap, ref):
    report, hand, _ = both
    entry = report["gaps"][gap]
    low, high, n_valid = _interval(hand[ref])
    assert entry["n_valid"] == n_valid and n_valid > N_BOOT // 2
    assert (entry["low"], entry["high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))


def test_equalized_odds_interval_is_not_its_tpr_half(both):
    """The sample is drawn so that the FPR half matters: the TPR half alone gives another interval."""
    report, hand, _ = both
    eo, eop = report["gaps"]["equalized_odds_difference"], report["gaps"]["equal_opportunity_difference"]
    assert (eo["low"], eo["high"]) != (eop["low"], eop["high"])
    assert np.nanmean(hand["eo"] > hand["eop"]) > 0.3


def test_each_groups_replicates_are_its_hand_counted_rates():
    """The rates behind the gaps, resample by resample (FPR too: a gap is blind to FPR vs specificity, since
    max - min of 1 - x is that of x, but the replicates the report keeps must be what they are named)."""
    for g, (y, s) in GROUPS.items():
        y, s = np.asarray(y), np.asarray(s)
        idx = np.random.default_rng(0).integers(0, len(y), size=(40, len(y)))
        reps = _replicate_rates(y, s, s >= 0.5)(idx)
        hand = np.array([_rates(y[i], s[i]) for i in idx])
        for k, name in enumerate(("sensitivity", "fpr", "selection_rate", "auc")):
            np.testing.assert_allclose(reps[name], hand[:, k], atol=1e-12, err_msg=f"{g} {name}")
