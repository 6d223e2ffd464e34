"""Linear probe: logistic regression on frozen image features (DINOv2 by default), class-weighted.

Features are computed once per image (and once per mirrored training image) and kept, so several seeds
and both arms of a comparison cost one pass of the feature network. Seed effect: the seed draws, per
training image, whether its features are those of the image or of its left-right mirror image (p = 1/2),
a seeded flip augmentation; the lbfgs solver itself is deterministic.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ..eval.features import FeatureExtractor, extract
from .classifier_spec import ClassifierSpec, check_labels, full_proba, load_batch

CHUNK = 256  # images decoded at a time
SEED_EFFECT = "seeded horizontal flip of each training image (p=0.5) before feature extraction"


def fit_probe(features: np.ndarray, labels: Sequence[int], n_classes: int, *, seed: int = 0,
              c: float = 1.0) -> Pipeline:
    """Standardise + logistic regression (class_weight="balanced", lbfgs) fitted on ``features``."""
    y = check_labels(labels, n_classes, len(features))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=5000,
                                                               random_state=seed))
    return model.fit(np.asarray(features, dtype=float), y)


def probe_proba(model: Pipeline, features: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, K) class probabilities, columns in class-index order (0 for classes absent in training)."""
    return full_proba(model.predict_proba(np.asarray(features, dtype=float)), model.classes_, n_classes)


class FittedProbe:
    """One fitted probe: scores images by their (cached) features."""

    def __init__(self, probe: LinearProbe, model: Pipeline) -> None:
        self.probe, self.model = probe, model

    def predict_proba(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """(N, K) class probabilities of the images."""
        return probe_proba(self.model, self.probe.features(paths), self.probe.n_classes)


class LinearProbe:
    """A linear probe on one feature extractor; ``fit`` may be called again (new seed, new training set)."""

    def __init__(self, module: FeatureExtractor, spec: ClassifierSpec, n_classes: int) -> None:
        self.module, self.spec, self.n_classes = module, spec, n_classes
        self._cache: dict[tuple[str, bool], np.ndarray] = {}
        info = module.info
        self.info: dict[str, Any] = {
            "classifier": "probe", "model": f"logistic regression on {info.name} features",
            "model_id": info.model_id, "extractor": info.as_dict(), "image_size": info.image_size,
            "random_weights": info.random_weights, "seed_effect": SEED_EFFECT,
            "settings": {"C": spec.c, "class_weight": "balanced", "solver": "lbfgs", "standardise": True}}

    def features(self, paths: Sequence[str | os.PathLike], flips: Sequence[bool] | None = None) -> np.ndarray:
        """(N, D) features of the images (mirrored where ``flips``), computed once per image and kept."""
        keys = [(os.fspath(p), bool(flips[i]) if flips is not None else False) for i, p in enumerate(paths)]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        size = self.module.info.image_size
        for start in range(0, len(todo), CHUNK):
            part = todo[start:start + CHUNK]
            images = load_batch([p for p, _ in part], size, [f for _, f in part])
            for key, row in zip(part, extract(self.module, images, self.spec.batch_size)):
                self._cache[key] = row
        if not keys:
            return np.zeros((0, self.module.info.dim))
        return np.stack([self._cache[k] for k in keys])

    def fit(self, paths: Sequence[str | os.PathLike], labels: Sequence[int], seed: int) -> FittedProbe:
        """Fit on the images with the seed's flips; returns the fitted probe."""
        check_labels(labels, self.n_classes, len(paths))
        flips = np.random.default_rng(seed).random(len(paths)) < 0.5
        model = fit_probe(self.features(paths, flips), labels, self.n_classes, seed=seed, c=self.spec.c)
        return FittedProbe(self, model)
