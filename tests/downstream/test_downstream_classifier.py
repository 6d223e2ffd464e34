"""Lesion classifiers: known answers on separable data, what the seed changes, clear errors, seed averaging."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from downstream_data import COLOURS
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from dermdiff_lora.core.errors import ConfigError, DataError, ModelError
from dermdiff_lora.downstream.classifier import ClassifierSpec, load_classifier, positive_index
from dermdiff_lora.downstream.probe import fit_probe, probe_proba
from dermdiff_lora.downstream.seeds import average_reports


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """40 images, label = colour (blue benign, red malignant), alternating."""
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(40):
        label = i % 2
        colour = COLOURS["malignant" if label else "benign"]
        pixels = np.clip(np.array(colour) + rng.normal(0, 25, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
        labels.append(label)
    return paths, np.array(labels)


def test_probe_on_perfectly_separable_features_reaches_auc_one():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    x = rng.normal(0, 1, (60, 5)) + 6.0 * y[:, None]
    model = fit_probe(x[:40], y[:40], 2)
    proba = probe_proba(model, x[40:], 2)
    assert proba.shape == (20, 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert roc_auc_score(y[40:], proba[:, 1]) == 1.0


def test_probe_multiclass_scores_are_n_by_k_and_a_class_absent_in_training_scores_zero():
    rng = np.random.default_rng(1)
    y = np.array([0, 1, 3])[np.arange(90) % 3]
    x = rng.normal(0, 1, (90, 4)) + 8.0 * np.eye(4)[y]
    model = fit_probe(x[:60], y[:60], 4)  # 4 classes, class 2 never seen
    proba = probe_proba(model, x[60:], 4)
    assert proba.shape == (30, 4) and np.all(proba[:, 2] == 0.0)
    assert balanced_accuracy_score(y[60:], proba.argmax(axis=1)) == 1.0


@pytest.mark.parametrize("kind", ["probe", "resnet"])
def test_classifier_on_separable_images_same_seed_same_scores_other_seed_other_scores(images, kind):
    paths, y = images
    spec = ClassifierSpec(kind=kind, extractor="tiny-dinov2", model_id="tiny-resnet" if kind == "resnet" else None,
                          epochs=3, lr=1e-2, batch_size=8)
    clf = load_classifier(spec, ["benign", "malignant"])
    assert clf.info["classifier"] == kind and clf.info["image_size"] and clf.info["random_weights"]
    a = clf.fit(paths[:30], y[:30], seed=0).predict_proba(paths[30:])
    assert a.shape == (10, 2) and roc_auc_score(y[30:], a[:, 1]) == 1.0
    assert np.array_equal(a, clf.fit(paths[:30], y[:30], seed=0).predict_proba(paths[30:]))
    assert not np.allclose(a, clf.fit(paths[:30], y[:30], seed=1).predict_proba(paths[30:]))


def test_timm_without_the_extra_is_a_clear_model_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError, installed or not
    with pytest.raises(ModelError, match=r'pip install "dermdiff-lora\[timm\]"'):
        load_classifier(ClassifierSpec(kind="timm"), ["benign", "malignant"])


def test_bad_settings_and_missing_model_folder_are_clear_errors(tmp_path, images):
    with pytest.raises(ConfigError, match="classifier 'svm' is unknown"):
        load_classifier(ClassifierSpec(kind="svm"), ["a", "b"])
    with pytest.raises(ConfigError, match="epochs"):
        load_classifier(ClassifierSpec(kind="resnet", model_id="tiny-resnet", epochs=0), ["a", "b"])
    with pytest.raises(ModelError, match="does not exist"):
        load_classifier(ClassifierSpec(kind="resnet", model_id=str(tmp_path / "nope")), ["a", "b"])
    with pytest.raises(DataError, match="two distinct classes"):
        load_classifier(ClassifierSpec(extractor="tiny-dinov2"), ["a"])
    clf = load_classifier(ClassifierSpec(kind="resnet", model_id="tiny-resnet"), ["a", "b"])
    with pytest.raises(DataError, match="at least two classes"):
        clf.fit(images[0][:4], [0, 0, 0, 0], seed=0)


def test_positive_class_is_malignant_or_named():
    assert positive_index(["benign", "malignant"]) == 1
    assert positive_index(["malignant", "benign"]) == 0
    assert positive_index(["0", "1"]) == 1
    assert positive_index(["nevus", "melanoma"], "melanoma") == 1
    with pytest.raises(ConfigError, match="--positive-class"):
        positive_index(["nevus", "melanoma"])


def _entry(value, low, high):
    return {"value": value, "low": low, "high": high, "n_valid": 10, "reason": None}


def test_average_reports_means_values_and_bounds_and_keeps_per_seed_figures():
    reports = [{"schema": "s", "threshold": {"method": "youden", "value": v, "youden_j": 0.5},
                "per_group": {"g": {"n": 5, "metrics": {"auc": _entry(a, a - 0.1, a + 0.1)}}},
                "gaps": {"worst_group_auc": {**_entry(a, a - 0.2, a), "group": g}}}
               for v, a, g in ((0.2, 0.6, "x"), (0.4, 0.8, "y"), (0.6, 1.0, "y"))]
    out = average_reports(reports, [0, 1, 2])
    auc = out["per_group"]["g"]["metrics"]["auc"]
    assert auc["value"] == pytest.approx(0.8) and auc["by_seed"] == [0.6, 0.8, 1.0] and auc["n_seeds"] == 3
    assert auc["sd_over_seeds"] == pytest.approx(0.2)
    assert "low" not in auc and "high" not in auc  # a mean of interval ends is not an interval
    assert out["per_group"]["g"]["n"] == 5  # equal in every seed: kept as is
    assert "value" not in out["threshold"] and out["threshold"]["value_by_seed"] == [0.2, 0.4, 0.6]  # no mean rule
    assert out["threshold"]["youden_j"] == 0.5 and out["seeds"] == [0, 1, 2]
    assert out["gaps"]["worst_group_auc"]["group"] == "y"  # worst in most seeds
    with pytest.raises(DataError):
        average_reports(reports, [0, 1])
