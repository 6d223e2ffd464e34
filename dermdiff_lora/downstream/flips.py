"""Counterfactual flips: does the prediction change when only the skin tone of a test image changes?

For each test image and each other tone group, the image with its skin shifted into that group in CIELAB
(``tone.labshift``, lesion untouched) is scored by the same fitted classifier; a flip is a prediction that
changes at the chosen threshold (binary: ``score >= threshold`` on one side only; multi-class: the argmax
changes). The flip rate is reported per (source group, target group) cell with a percentile bootstrap
interval over the cell's source images (the same resamples for every seed; the rate of a resample is the
mean over seeds), seeded by ``(seed, "cf:" + cell)``.

``fairness --counterfactual CF.csv`` computes the same from CSV files: the predictions CSV of the original
test images (``file``, ``group``, ``score``) and one of the shifted ones (``file`` = the source image's id,
``target_group``, ``score``; multi-class: ``score_<class>`` columns in both).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError, DataError
from .bootstrap import bootstrap_replicates
from .fairness import choose_threshold, group_rng, metric_entry
from .predictions import _scores, parse_threshold, read_binary_predictions, read_table
from .tables import cell

CF_COLUMNS = ("file", "group", "target_group")


@dataclass
class CounterfactualSet:
    """The shifted test images: for row i, test image ``index[i]`` moved into group ``targets[i]``."""

    index: list[int] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    unreached: dict[str, int] = field(default_factory=dict)


def counterfactual_set(test: Sequence, groups: Sequence[str], shifter) -> CounterfactualSet:
    """Every test image shifted into every other group (``shifter``: ``arms.LabShifter``)."""
    out = CounterfactualSet()
    for i, sample in enumerate(test):
        for target in groups:
            if target == sample.group:
                continue
            path = shifter.path(sample, target)
            if path is None:
                key = f"{sample.group}|{target}"
                out.unreached[key] = out.unreached.get(key, 0) + 1
                continue
            out.index.append(i)
            out.targets.append(target)
            out.paths.append(path)
    return out


def predicted(proba_or_scores: np.ndarray, threshold: float | None) -> np.ndarray:
    """Predicted labels: ``score >= threshold`` (binary scores) or the argmax of (N, K) probabilities."""
    values = np.asarray(proba_or_scores, dtype=float)
    return values >= threshold if threshold is not None else values.argmax(axis=1)


def flip_report(flips_by_seed: Sequence[np.ndarray], sources: Sequence[str], targets: Sequence[str], *,
                group_order: Sequence[str], unreached: dict[str, int] | None = None, n_boot: int = 1000,
                seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Flip rate per (source, target) cell and overall; each row of ``flips_by_seed`` is one seed."""
    flips = np.asarray(flips_by_seed, dtype=float).reshape(len(flips_by_seed), -1)
    sources, targets = np.asarray(sources, dtype=str), np.asarray(targets, dtype=str)
    cells = {}
    for source in group_order:
        for target in group_order:
            if source == target:
                continue
            rows = np.flatnonzero((sources == source) & (targets == target))
            key = f"{source}|{target}"
            entry = _rate(flips[:, rows], n_boot, group_rng(seed, "cf:" + key), level)
            cells[key] = {"source": source, "target": target, "n": int(rows.size),
                          "n_unreached": int((unreached or {}).get(key, 0)), **entry}
    overall = _rate(flips, n_boot, group_rng(seed, "cf:overall"), level)
    return {"cells": cells, "overall": {"n": int(flips.shape[1]), **overall},
            "n_seeds": int(flips.shape[0]),
            "definition": "share of (test image, other tone group) pairs whose prediction changes when only "
                          "the skin is shifted into that group in CIELAB (lesion pixels unchanged)",
            "bootstrap": {"n_boot": n_boot, "seed": seed, "level": level,
                          "method": "percentile, source images resampled within each cell"}}


def _rate(flips: np.ndarray, n_boot: int, rng: np.random.Generator, level: float) -> dict[str, Any]:
    if flips.shape[1] == 0:
        return metric_entry(None, None, level, "no shifted image in this cell")
    reps = bootstrap_replicates(lambda idx: {"rate": flips[:, idx].mean(axis=2).mean(axis=0)},
                                flips.shape[1], n_boot=n_boot, rng=rng).get("rate")
    return metric_entry(float(flips.mean(axis=1).mean()), reps, level)


def flip_table(report: dict[str, Any], title: str = "") -> list[str]:
    """Lines: one per (source -> target) cell with n and the flip rate with its interval."""
    lines = [title] if title else []
    for c in report["cells"].values():
        extra = f" ({c['n_unreached']} not shiftable)" if c["n_unreached"] else ""
        lines.append(f"  {c['source'] + ' -> ' + c['target']:<24}{c['n']:>6}  {cell(c)}{extra}")
    lines.append(f"  {'all pairs':<24}{report['overall']['n']:>6}  {cell(report['overall'])}")
    return lines


def flips_from_csv(path: str | os.PathLike, counterfactual: str | os.PathLike, *, threshold: str | float = 0.5,
                   val_path: str | os.PathLike | None = None, id_col: str = "file", group_col: str = "group",
                   score_col: str = "score", label_col: str = "label", target_col: str = "target_group",
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """The flip report of a classifier's predictions on test images and on their shifted copies."""
    original = read_table(path, [id_col, group_col])
    shifted = read_table(counterfactual, [id_col, target_col])
    score_cols = [score_col] if score_col in original.columns else [
        c for c in original.columns if c.startswith("score_")]
    if not score_cols or any(c not in shifted.columns for c in score_cols):
        raise DataError(f"{counterfactual} and {path} need the same score column(s) ({score_col} or "
                        f"score_<class>); {counterfactual} has {', '.join(shifted.columns)}")
    th = None
    if score_cols == [score_col]:
        th = parse_threshold(threshold)
        if th == "youden":
            if val_path is None:
                raise ConfigError("--threshold youden needs --val (validation predictions)")
            labels, scores, _ = read_binary_predictions(val_path, label_col=label_col, score_col=score_col,
                                                        group_col=group_col)
            th = choose_threshold(labels, scores, "youden")["value"]
    rows = {v: i for i, v in enumerate(original[id_col])}
    missing = [v for v in shifted[id_col] if v not in rows]
    if missing:
        raise DataError(f"{counterfactual}: {len(missing)} row(s) name a {id_col} that {path} lacks (first: "
                        f"{missing[0]!r}); give the predictions of the same test images")
    index = np.array([rows[v] for v in shifted[id_col]], dtype=int)

    def values(where, df):
        out = np.column_stack([_scores(Path(where), df, c) for c in score_cols])
        return out[:, 0] if th is not None else out

    flips = predicted(values(path, original), th)[index] != predicted(values(counterfactual, shifted), th)
    sources = original[group_col].to_numpy()[index]
    order = list(dict.fromkeys([*original[group_col], *shifted[target_col]]))
    report = flip_report([flips], sources, shifted[target_col].tolist(), group_order=order, n_boot=n_boot,
                         seed=seed, level=level)
    return {**report, "threshold": th, "source": {"predictions": str(path), "counterfactual": str(counterfactual)}}
