"""Train a lesion classifier and score images: the one entry point over the probe and fine-tuned models.

``load_classifier(spec, classes)`` gives an object with ``info`` (a JSON-serialisable record: classifier,
model, model id, image size, whether its weights are random, what the seed changes, settings) and
``fit(paths, labels, seed)``, which trains afresh and returns a fitted model whose
``predict_proba(paths)`` is an (N, K) matrix with columns in the order of ``classes``. Labels are class
indices. ``positive_scores`` takes the positive (malignant) column of a binary task.

Kinds (``ClassifierSpec.kind``): ``probe`` (default; logistic regression on DINOv2 features, ``probe``
module), ``resnet`` (a transformers image classifier fine-tuned, ``finetune`` module) and ``timm`` (the
paper's ResNeXt-101 and other timm models; an optional extra, imported only when asked for).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..core.errors import ConfigError, DataError
from .classifier_spec import CLASSIFIERS, ClassifierSpec

__all__ = ["CLASSIFIERS", "ClassifierSpec", "load_classifier", "positive_index", "positive_scores"]
POSITIVE_NAMES = ("malignant", "1", "true", "yes")


class Fitted(Protocol):
    def predict_proba(self, paths: Sequence) -> np.ndarray: ...


class Classifier(Protocol):
    info: dict

    def fit(self, paths: Sequence, labels: Sequence[int], seed: int) -> Fitted: ...


def load_classifier(spec: ClassifierSpec, classes: Sequence[str]) -> Classifier:
    """A classifier for ``classes`` (>= 2 names) built as ``spec`` says; ModelError if it cannot load."""
    spec = spec.check()
    classes = [str(c) for c in classes]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DataError(f"classes {classes!r}: a classifier needs at least two distinct classes")
    if spec.kind == "probe":
        if spec.image_size is not None:
            raise ConfigError("image_size is set by the probe's feature extractor; leave it unset for "
                              "--classifier probe")
        from ..eval.features import load_extractor
        from .probe import LinearProbe

        module, _ = load_extractor(spec.extractor, spec.model_id, device=spec.device)
        clf: Classifier = LinearProbe(module, spec, len(classes))
    else:
        from .finetune import FinetunedClassifier

        clf = FinetunedClassifier(spec, len(classes))
    clf.info["classes"] = classes
    return clf


def positive_index(classes: Sequence[str], positive: str | None = None) -> int:
    """The column of the positive class of a binary task: ``positive``, else "malignant" (or 1/true/yes)."""
    classes = [str(c) for c in classes]
    if len(classes) != 2:
        raise ConfigError(f"a binary report needs exactly two classes, not {len(classes)} ({classes})")
    if positive is not None:
        if positive not in classes:
            raise ConfigError(f"positive class {positive!r} is not one of the classes {classes}")
        return classes.index(positive)
    for name in POSITIVE_NAMES:
        hits = [i for i, c in enumerate(classes) if c.lower() == name]
        if hits:
            return hits[0]
    raise ConfigError(f"which of {classes} is the positive (malignant) class? pass --positive-class")


def positive_scores(proba: np.ndarray, index: int) -> np.ndarray:
    """The positive class's column of an (N, 2) probability matrix, clipped to [0, 1]."""
    return np.clip(np.asarray(proba, dtype=float)[:, index], 0.0, 1.0)
