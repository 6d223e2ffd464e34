"""Every arm over every seed on one split: fit, report, paired differences from ``real``, counterfactual flips.

Each seed trains every arm (``arms``) with the same classifier settings; the test images, the bootstrap
seed and the shifted test images are the same for every arm and seed. Outputs go to ``out/predictions``
(``<arm>_seed<S>_{val,test,counterfactual}.csv``) and ``out/lab_images`` (the shifted copies).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.fsutil import atomic_write
from .arms import KEYS, LAB_FOLDER, LabShifter, arm_training_sets, cell_counts
from .classifier import Classifier
from .flips import CounterfactualSet, counterfactual_set, flip_report, predicted
from .paired import paired_comparison
from .runs import Task, run_arm
from .samples import Sample

log = logging.getLogger(__name__)


def counterfactual_csv(task: Task, test: Sequence[Sample], cf: CounterfactualSet, proba: np.ndarray) -> str:
    """CSV text ``fairness --counterfactual`` reads: file (the source image), group, target_group, label,
    score (binary) or score_<class> columns."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    binary = task.binary
    col = task.classes.index(task.positive) if binary else None
    writer.writerow([*("file", "group", "target_group", "label"),
                     *(["score"] if binary else [f"score_{c}" for c in task.classes])])
    for i, target, p in zip(cf.index, cf.targets, proba):
        s = test[i]
        label = int(s.label == task.positive) if binary else s.label
        writer.writerow([s.file, s.group, target, label,
                         *([repr(float(p[col]))] if binary else [repr(float(v)) for v in p])])
    return buf.getvalue()


def _flips(task: Task, raw: dict, cf: CounterfactualSet) -> np.ndarray:
    """Per counterfactual row: does the prediction differ from the source image's?"""
    threshold = raw["threshold"]
    extra = raw["extra"]
    shifted = extra[:, task.classes.index(task.positive)] if task.binary else extra
    original = predicted(raw["test"], threshold)[np.asarray(cf.index, dtype=int)]
    return original != predicted(shifted, threshold)


def run_study(clf: Classifier, arms: Sequence[str], data: dict[str, list[Sample]], task: Task,
              seeds: Sequence[int], out: Path, *, counterfactual: bool = True) -> dict[str, Any]:
    """Train and report every arm for every seed; ``data`` holds train, val, test and synthetic samples."""
    train, val, test, synthetic = (data[k] for k in ("train", "val", "test", "synthetic"))
    added = cell_counts(synthetic)
    shifter = LabShifter(out / LAB_FOLDER, task.groups) if ("real_lab" in arms or counterfactual) else None
    cf = counterfactual_set(test, task.groups, shifter) if counterfactual else CounterfactualSet()
    per_seed: dict[str, list] = {arm: [] for arm in arms}
    raws: dict[str, list] = {arm: [] for arm in arms}
    shortfall: dict[str, dict] = {arm: {} for arm in arms}
    for seed in seeds:
        for arm, (arm_train, short) in arm_training_sets(arms, train, synthetic, added, seed, shifter).items():
            log.info("downstream: %s, seed %d, %d training images", arm, seed, len(arm_train))
            report, texts, raw = run_arm(clf, arm_train, val, test, task, seed, extra=cf.paths)
            per_seed[arm].append(report)
            raws[arm].append(raw)
            shortfall[arm] = short or shortfall[arm]
            for split, text in texts.items():
                atomic_write(out / "predictions" / f"{arm}_seed{seed}_{split}.csv", text)
            if counterfactual:
                atomic_write(out / "predictions" / f"{arm}_seed{seed}_counterfactual.csv",
                             counterfactual_csv(task, test, cf, raw["extra"]))
    boot = {"n_boot": task.n_boot, "seed": task.boot_seed, "level": task.level}
    labels = task.binary_labels(test) if task.binary else task.indices(test)
    paired = paired_comparison(labels, [s.group for s in test], task.groups,
                               {arm: [(r["test"], r["threshold"]) for r in raws[arm]] for arm in arms},
                               n_classes=len(task.classes), arm_names=KEYS, **boot)
    flips = {arm: flip_report([_flips(task, r, cf) for r in raws[arm]], [test[i].group for i in cf.index],
                              cf.targets, group_order=task.groups, unreached=cf.unreached, **boot)
             for arm in arms} if counterfactual else {}
    shifts = shifter.log if shifter else []
    return {"per_seed": per_seed, "paired": paired, "counterfactual": flips,
            "added_per_cell": {f"{lb}|{g}": n for (lb, g), n in sorted(added.items())},
            "shortfall": {arm: s for arm, s in shortfall.items() if s},
            "lab_shifts": {"n": sum("delta_l" in r for r in shifts),
                           "failed": [r for r in shifts if "error" in r][:20],
                           "n_failed": sum("error" in r for r in shifts),
                           "mean_abs_delta_l": float(np.mean([abs(r["delta_l"]) for r in shifts if "delta_l" in r]))
                           if any("delta_l" in r for r in shifts) else None,
                           "folder": LAB_FOLDER}}
