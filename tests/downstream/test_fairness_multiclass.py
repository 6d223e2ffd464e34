"""Known answers of the multi-class per-group report (one-vs-rest AUC, balanced accuracy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from dermdiff_lora.core.errors import DataError
from dermdiff_lora.downstream.multiclass import multiclass_report

CLASSES = ["mel", "nv", "bcc"]


def _data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    g = rng.choice(["I-II", "V-VI"], n)
    y[(g == "V-VI") & (y == 2)] = 1  # no bcc in the dark group
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), y] += 1.0
    s = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, s, g


def test_per_group_auc_and_balanced_accuracy_equal_sklearn():
    y, s, g = _data()
    rep = multiclass_report([CLASSES[i] for i in y], s, g, classes=CLASSES, n_boot=100, seed=0)
    for group in ("I-II", "V-VI"):
        m = g == group
        block = rep["per_group"][group]
        assert block["metrics"]["balanced_accuracy"]["value"] == pytest.approx(
            balanced_accuracy_score(y[m], s[m].argmax(axis=1)))
        for c, name in enumerate(CLASSES):
            entry = block["metrics"]["auc_ovr"][name]
            if (y[m] == c).any():
                assert entry["value"] == pytest.approx(roc_auc_score(y[m] == c, s[m, c]))
                assert entry["low"] <= entry["value"] <= entry["high"]
    bcc = rep["per_group"]["V-VI"]["metrics"]["auc_ovr"]["bcc"]
    assert bcc["value"] is None and bcc["reason"] == "no bcc samples"
    assert rep["per_group"]["V-VI"]["class_counts"]["bcc"] == 0
    assert rep["gaps"]["auc_ovr"]["bcc"]["gap"]["value"] is None
    json.dumps(rep, allow_nan=False)


def test_balanced_accuracy_by_hand():
    # group a: true [0,0,1,2], predicted [0,1,1,0] -> recalls 1/2, 1, 0 -> 1/2
    # group b: true [1,1], predicted [1,0] -> recall of class 1 only: 1/2
    scores = np.eye(3)[[0, 1, 1, 0, 1, 0]] * 0.8 + 0.05
    rep = multiclass_report([0, 0, 1, 2, 1, 1], scores, ["a"] * 4 + ["b"] * 2, classes=CLASSES, n_boot=0)
    assert rep["per_group"]["a"]["metrics"]["balanced_accuracy"]["value"] == pytest.approx(0.5)
    assert rep["per_group"]["b"]["metrics"]["balanced_accuracy"]["value"] == pytest.approx(0.5)
    assert rep["gaps"]["balanced_accuracy_gap"]["value"] == pytest.approx(0.0)


def test_multiclass_input_errors():
    with pytest.raises(DataError, match="sample 1 has label 'scc'"):
        multiclass_report(["mel", "scc"], np.full((2, 3), 0.3), ["a", "a"], classes=CLASSES)
    with pytest.raises(DataError, match="expected \\(2, 3\\)"):
        multiclass_report([0, 1], np.full((2, 2), 0.5), ["a", "a"], classes=CLASSES)
    with pytest.raises(DataError, match="sample 0, class column 2 has score 1.5"):
        multiclass_report([0, 1], [[0.1, 0.2, 1.5], [0.3, 0.3, 0.4]], ["a", "a"], classes=CLASSES)
