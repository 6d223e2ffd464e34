"""Known-answer tests of the binary fairness report, the Youden threshold and the bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from dermdiff_lora.core.errors import ConfigError, DataError
from dermdiff_lora.downstream.bootstrap import bootstrap_replicates, percentile_interval, resampled_auc
from dermdiff_lora.downstream.fairness import choose_threshold, fairness_report

# Hand-written predictions; at threshold 0.5 (malignant if score >= 0.5) the confusion counts are:
GROUPS = {
    "A": ([1, 1, 1, 0, 0, 0, 0], [0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4]),  # tp 2 fn 1 fp 1 tn 3
    "B": ([1, 1, 0, 0, 0], [0.8, 0.45, 0.55, 0.3, 0.2]),              # tp 1 fn 1 fp 1 tn 2
    "C": ([1, 0, 0, 1, 1], [0.51, 0.49, 0.95, 0.05, 0.5]),             # tp 2 fn 1 fp 1 tn 1 (0.5 counts)
}
COUNTS = {"A": (2, 1, 1, 3), "B": (1, 1, 1, 2), "C": (2, 1, 1, 1)}  # (tp, fn, fp, tn)
AUC = {"A": 9 / 12, "B": 5 / 6, "C": 2 / 6}  # pairs (malignant > benign) counted by hand


def _data():
    labels = [y for g in GROUPS for y in GROUPS[g][0]]
    scores = [s for g in GROUPS for s in GROUPS[g][1]]
    groups = [g for g in GROUPS for _ in GROUPS[g][0]]
    return labels, scores, groups


@pytest.fixture(scope="module")
def report():
    labels, scores, groups = _data()
    return fairness_report(labels, scores, groups, threshold=0.5, n_boot=200, seed=3)


def test_per_group_metrics_equal_hand_counts_and_sklearn(report):
    for g, (tp, fn, fp, tn) in COUNTS.items():
        m = report["per_group"][g]["metrics"]
        sens, spec = tp / (tp + fn), tn / (tn + fp)
        assert m["sensitivity"]["value"] == pytest.approx(sens)
        assert m["specificity"]["value"] == pytest.approx(spec)
        assert m["balanced_accuracy"]["value"] == pytest.approx((sens + spec) / 2)
        y, s = GROUPS[g]
        assert m["balanced_accuracy"]["value"] == pytest.approx(
            balanced_accuracy_score(y, np.array(s) >= 0.5))
        assert m["auc"]["value"] == pytest.approx(roc_auc_score(y, s))
        assert m["auc"]["value"] == pytest.approx(AUC[g])
        assert report["per_group"][g]["n"] == tp + fn + fp + tn
        assert report["per_group"][g]["n_positive"] == tp + fn
    overall = report["overall"]["metrics"]
    assert overall["sensitivity"]["value"] == pytest.approx(5 / 8)
    assert overall["specificity"]["value"] == pytest.approx(6 / 9)


def test_fairlearn_gaps_equal_max_minus_min_of_hand_rates(report):
    tpr = {g: tp / (tp + fn) for g, (tp, fn, fp, tn) in COUNTS.items()}
    fpr = {g: fp / (fp + tn) for g, (tp, fn, fp, tn) in COUNTS.items()}
    sel = {g: (tp + fp) / sum(c) for g, c in COUNTS.items() for tp, fn, fp, tn in [c]}
    spread = lambda d: max(d.values()) - min(d.values())  # noqa: E731
    gaps = report["gaps"]
    assert gaps["equal_opportunity_difference"]["value"] == pytest.approx(spread(tpr))
    assert gaps["equalized_odds_difference"]["value"] == pytest.approx(max(spread(tpr), spread(fpr)))
    assert gaps["demographic_parity_difference"]["value"] == pytest.approx(spread(sel))
    assert gaps["worst_group_auc"]["value"] == pytest.approx(1 / 3)
    assert gaps["worst_group_auc"]["group"] == "C"
    assert gaps["auc_gap"]["value"] == pytest.approx(5 / 6 - 1 / 3)


def test_report_is_plain_json_and_records_settings(report):
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    assert report["threshold"]["method"] == "fixed" and report["threshold"]["value"] == 0.5
    assert report["bootstrap"] == {**report["bootstrap"], "n_boot": 200, "seed": 3, "level": 0.95}
    assert report["groups"] == ["A", "B", "C"]


def test_one_class_group_gives_none_with_reason_and_is_left_out_of_gaps():
    labels, scores, groups = _data()
    labels, scores, groups = labels + [0, 0, 0], scores + [0.2, 0.7, 0.1], groups + ["D"] * 3
    rep = fairness_report(labels, scores, groups, threshold=0.5, n_boot=50)
    d = rep["per_group"]["D"]["metrics"]
    assert d["auc"]["value"] is None and "one class" in d["auc"]["reason"]
    assert d["sensitivity"]["value"] is None and d["sensitivity"]["reason"] == "no malignant samples"
    assert d["specificity"]["value"] == pytest.approx(2 / 3)
    assert rep["gaps"]["groups_used"] == ["A", "B", "C"] and "D" in rep["gaps"]["excluded"]
    assert rep["gaps"]["equal_opportunity_difference"]["value"] == pytest.approx(2 / 3 - 1 / 2)
    assert rep["gaps"]["demographic_parity_difference"]["value"] == pytest.approx(3 / 5 - 1 / 3)  # C 3/5, D 1/3


def _brute_force_youden(y, s):
    best, best_j = None, -np.inf
    for c in sorted(set(s), reverse=True):  # highest threshold wins ties
        pred = s >= c
        j = (pred & (y == 1)).sum() / (y == 1).sum() - (pred & (y == 0)).sum() / (y == 0).sum()
        if j > best_j + 1e-12:
            best, best_j = c, j
    return best, best_j


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(4, 60))
def test_youden_threshold_equals_brute_force(seed, n):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = np.round(np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.3, n), 0, 1), 2)  # with ties
    choice = choose_threshold(y, s, "youden")
    value, j = _brute_force_youden(y, s)
    assert choice["method"] == "youden"
    assert choice["value"] == pytest.approx(value)
    assert choice["youden_j"] == pytest.approx(j)


def test_threshold_fixed_and_errors():
    assert choose_threshold([0, 1], [0.1, 0.9], 0.3) == {"method": "fixed", "value": 0.3}
    with pytest.raises(ConfigError, match="outside"):
        choose_threshold([0, 1], [0.1, 0.9], 1.5)
    with pytest.raises(ConfigError, match="unknown"):
        choose_threshold([0, 1], [0.1, 0.9], "otsu")
    with pytest.raises(DataError, match="both classes"):
        choose_threshold([1, 1], [0.1, 0.9])
    with pytest.raises(ConfigError, match="validation"):
        fairness_report([0, 1], [0.1, 0.9], ["a", "a"], threshold="youden")


def test_report_uses_chosen_threshold_from_validation():
    labels, scores, groups = _data()
    choice = choose_threshold([0, 0, 1, 1], [0.1, 0.3, 0.35, 0.8])
    rep = fairness_report(labels, scores, groups, threshold=choice, n_boot=0)
    assert rep["threshold"]["method"] == "youden" and rep["threshold"]["value"] == 0.35
    pred = np.array(scores) >= 0.35
    assert rep["overall"]["n_predicted_positive"] == int(pred.sum())
    assert rep["overall"]["metrics"]["auc"]["low"] is None  # n_boot=0: no intervals


def test_bad_inputs_raise_one_clear_error():
    with pytest.raises(DataError, match="sample 1 has score 1.2"):
        fairness_report([0, 1], [0.1, 1.2], ["a", "a"])
    with pytest.raises(DataError, match="sample 0 has label 2"):
        fairness_report([2, 1], [0.1, 0.2], ["a", "a"])
    with pytest.raises(DataError, match="sample 1 has no group"):
        fairness_report([0, 1], [0.1, 0.2], ["a", None])
    with pytest.raises(DataError, match="'z' have no samples"):
        fairness_report([0, 1], [0.1, 0.2], ["a", "a"], expected_groups=["a", "z"])
    with pytest.raises(ConfigError, match="n_boot"):
        fairness_report([0, 1], [0.1, 0.2], ["a", "a"], n_boot=-1)


def _synthetic(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    return y, s, np.where(rng.random(n) < 0.5, "light", "dark")


def test_intervals_contain_point_estimate_and_shrink_with_n():
    width = {}
    for n in (100, 2000):
        rep = fairness_report(*_synthetic(n, seed=n), n_boot=300, seed=0)
        for block in [rep["overall"], *rep["per_group"].values()]:
            for name, m in block["metrics"].items():
                assert m["low"] <= m["value"] <= m["high"], (n, name, m)
                assert m["n_valid"] == 300
        width[n] = {k: m["high"] - m["low"] for k, m in rep["per_group"]["dark"]["metrics"].items()}
    for name in width[100]:
        assert width[2000][name] < width[100][name] / 2, name


def test_bootstrap_is_reproducible_and_seeded():
    data = _synthetic(300, seed=1)
    a = fairness_report(*data, n_boot=100, seed=7)
    assert a == fairness_report(*data, n_boot=100, seed=7)
    b = fairness_report(*data, n_boot=100, seed=8)
    auc_a, auc_b = a["per_group"]["dark"]["metrics"]["auc"], b["per_group"]["dark"]["metrics"]["auc"]
    assert auc_a["low"] != auc_b["low"] and auc_a["value"] == auc_b["value"]


def test_resampled_auc_equals_sklearn_with_ties_and_skips_one_class_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (20, 30)).astype(bool)
    y[0] = False
    s = np.round(rng.random((20, 30)), 1)
    auc = resampled_auc(y, s)
    assert np.isnan(auc[0])
    for i in range(1, 20):
        assert auc[i] == pytest.approx(roc_auc_score(y[i], s[i]))


def test_bootstrap_helper_chunks_and_percentiles():
    rng = np.random.default_rng(0)
    reps = bootstrap_replicates(lambda idx: {"mean": idx.mean(axis=1)}, 10, n_boot=25, rng=rng)
    assert reps["mean"].shape == (25,)
    assert percentile_interval(np.array([np.nan, np.nan])) == {"low": None, "high": None, "n_valid": 0}
    iv = percentile_interval(np.array([0.0, 1.0, np.nan]), level=0.5)
    assert iv == {"low": 0.25, "high": 0.75, "n_valid": 2}
