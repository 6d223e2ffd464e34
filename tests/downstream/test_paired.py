"""The paired bootstrap of arm - real differences: point values against sklearn/fairlearn, pairing (a small
consistent gain is detected where the arms' own intervals overlap), verdict directions and the summary."""

import numpy as np
import pytest
from fairlearn.metrics import equalized_odds_difference
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from dermdiff_lora.downstream.fairness import fairness_report
from dermdiff_lora.downstream.paired import paired_comparison, verdict

GROUPS = ("lighter", "brown", "darker")


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    groups = np.array(GROUPS)[rng.integers(0, 3, n)]
    return y, groups, rng


def _reference(y, groups, scores, th):
    pred = (scores >= th).astype(int)
    worst = min(balanced_accuracy_score(y[groups == g], pred[groups == g]) for g in GROUPS)
    return {"auc": roc_auc_score(y, scores), "balanced_accuracy": balanced_accuracy_score(y, pred),
            "worst_group_balanced_accuracy": worst,
            "equalized_odds_difference": equalized_odds_difference(y, pred, sensitive_features=groups)}


def test_point_differences_match_sklearn_and_fairlearn_averaged_over_seeds():
    y, groups, rng = _data()
    runs = {arm: [(np.clip(y * 0.3 + rng.random(y.size) * 0.7, 0, 1), th) for th in (0.4, 0.55)]
            for arm in ("real_only", "real_lab")}
    result = paired_comparison(y, groups, GROUPS, runs, n_boot=200, seed=1)
    for metric, entry in result["differences"]["real_lab"].items():
        expected = np.mean([_reference(y, groups, s, th)[metric] for s, th in runs["real_lab"]]) - np.mean(
            [_reference(y, groups, s, th)[metric] for s, th in runs["real_only"]])
        assert entry["value"] == pytest.approx(expected, abs=1e-12), metric
        assert entry["low"] <= entry["high"]


def test_identical_arms_are_not_distinguishable():
    y, groups, rng = _data()
    same = [(rng.random(y.size), 0.5)]
    result = paired_comparison(y, groups, GROUPS, {"real_only": same, "real_resample": same}, n_boot=100)
    for entry in result["differences"]["real_resample"].values():
        assert (entry["value"], entry["low"], entry["high"]) == (0.0, 0.0, 0.0)
        assert entry["verdict"] == "not distinguishable"
    assert result["summary"] == ["no arm is distinguishable from real only (every paired interval includes 0)"]


def test_pairing_detects_a_small_consistent_gain_that_unpaired_intervals_miss():
    y, groups, rng = _data(n=400, seed=3)
    base = np.where(rng.random(y.size) < 0.7, y, 1 - y).astype(float)  # 70 % right at threshold 0.5
    wrong = np.flatnonzero(base != y)
    better = base.copy()
    better[wrong[:20]] = y[wrong[:20]]  # the same model, 20 of its ~120 mistakes fixed
    result = paired_comparison(y, groups, GROUPS, {"real_only": [(base, 0.5)], "real_synthetic": [(better, 0.5)]},
                               n_boot=500, seed=0, arm_names={"real_synthetic": "real + synthetic"})
    gain = result["differences"]["real_synthetic"]["balanced_accuracy"]
    assert gain["low"] > 0 and gain["verdict"] == "better"
    assert result["summary"][0].startswith("real + synthetic: better than real only on") and "bal. acc." in \
        result["summary"][0]
    a, b = (fairness_report(y, s, groups, threshold=0.5, n_boot=500)["overall"]["metrics"]["balanced_accuracy"]
            for s in (base, better))
    assert b["low"] < a["high"]  # each arm's own interval overlaps the other's: only pairing separates them


def test_verdict_directions():
    assert verdict({"low": 0.01, "high": 0.2}, lower_is_better=False) == "better"
    assert verdict({"low": 0.01, "high": 0.2}, lower_is_better=True) == "worse"
    assert verdict({"low": -0.3, "high": -0.1}, lower_is_better=True) == "better"
    assert verdict({"low": -0.1, "high": 0.0}, lower_is_better=False) == "not distinguishable"
    assert verdict({"low": None, "high": None}, lower_is_better=False) == "not distinguishable"
