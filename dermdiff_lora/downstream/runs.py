"""One training run of the comparison: fit on a training set, choose the threshold on val, report on test.

Every arm and seed is reported on the same test images with the same bootstrap seed, so differences
between arms come from the training sets and seeds, never from different resamples.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import DataError
from .classifier import Classifier, positive_index, positive_scores
from .fairness import choose_threshold, fairness_report
from .multiclass import multiclass_report
from .samples import Sample


@dataclass(frozen=True)
class Task:
    """The classes (column order of the scores), the positive class of a binary task, the report groups."""

    classes: list[str]
    positive: str | None
    groups: list[str]
    threshold: str | float = "youden"
    n_boot: int = 1000
    boot_seed: int = 0
    level: float = 0.95

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    def indices(self, samples: Sequence[Sample]) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[s.label] for s in samples], dtype=int)

    def binary_labels(self, samples: Sequence[Sample]) -> np.ndarray:
        return np.array([int(s.label == self.positive) for s in samples], dtype=int)


def make_task(real: Sequence[Sample], class_order: Sequence[str], group_order: Sequence[str],
              positive: str | None, **settings: Any) -> Task:
    """Classes present in the real images (in ``class_order``, then sorted), the positive class of a
    binary task, and the tone groups of the test split (in ``group_order``, then sorted)."""
    present = {s.label for s in real}
    classes = [c for c in class_order if c in present] + sorted(present - set(class_order))
    if len(classes) < 2:
        raise DataError(f"the real images have only the label(s) {classes}: a classifier needs two classes; "
                        "check --label-column")
    pos = classes[positive_index(classes, positive)] if len(classes) == 2 else None
    tested = {s.group for s in real if s.split == "test"}
    groups = [g for g in group_order if g in tested] + sorted(tested - set(group_order))
    return Task(classes, pos, groups, **settings)


def split_of(samples: Sequence[Sample], split: str) -> list[Sample]:
    """The samples of one split (synthetic samples count as train)."""
    return [s for s in samples if s.split == split]


def run_arm(clf: Classifier, train: Sequence[Sample], val: Sequence[Sample], test: Sequence[Sample],
            task: Task, seed: int, extra: Sequence = ()) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """Fit on ``train`` with ``seed``; the test report (threshold chosen on ``val``), the predictions
    CSV texts ``{"val": ..., "test": ...}`` and the raw outputs ``{"test": scores (binary) or
    probabilities, "threshold": the threshold or None (multi-class), "extra": probabilities of the images
    at the paths ``extra``}``."""
    fitted = clf.fit([s.path for s in train], task.indices(train), seed)
    proba = {"val": fitted.predict_proba([s.path for s in val]),
             "test": fitted.predict_proba([s.path for s in test])}
    raw = {"test": proba["test"], "threshold": None,
           "extra": fitted.predict_proba(list(extra)) if len(extra) else np.zeros((0, len(task.classes)))}
    groups = [s.group for s in test]
    boot = {"n_boot": task.n_boot, "seed": task.boot_seed, "level": task.level, "expected_groups": task.groups}
    if task.binary:
        col = task.classes.index(task.positive)
        scores = {k: positive_scores(p, col) for k, p in proba.items()}
        choice = choose_threshold(task.binary_labels(val), scores["val"], task.threshold)
        if choice["method"] == "youden":
            choice["chosen_on"] = f"validation split ({len(val)} images)"
        report = fairness_report(task.binary_labels(test), scores["test"], groups, threshold=choice, **boot)
        raw.update(test=scores["test"], threshold=float(report["threshold"]["value"]))
    else:
        report = multiclass_report(task.indices(test), proba["test"], groups, classes=task.classes, **boot)
    report["seed"] = int(seed)
    report["n_train"] = len(train)
    texts = {k: predictions_csv(task, samples, proba[k])
             for k, samples in (("val", val), ("test", test))}
    return report, texts, raw


def predictions_csv(task: Task, samples: Sequence[Sample], proba: np.ndarray) -> str:
    """CSV text that ``dermdiff-lora fairness`` reads: file, class, label (0/1 or class), group, score(s)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if task.binary:
        col = task.classes.index(task.positive)
        writer.writerow(["file", "class", "label", "group", "score"])
        for s, p in zip(samples, proba):
            writer.writerow([s.file, s.label, int(s.label == task.positive), s.group, repr(float(p[col]))])
    else:
        writer.writerow(["file", "label", "group", *(f"score_{c}" for c in task.classes)])
        for s, p in zip(samples, proba):
            writer.writerow([s.file, s.label, s.group, *(repr(float(v)) for v in p)])
    return buf.getvalue()
