"""Fairness reports from any classifier's predictions CSV, validated with one clear error per problem.

Binary file: one row per test image with a label column (0/1, true/false or benign/malignant, any case),
a score column (probability of malignant, in [0, 1]) and a group column (skin-tone group). Multi-class
file: a label column (class name or index), one score column per class, and a group column. Rows are
named in errors as "row R (line L)": R counts data rows from 1, L is the line in the file (header = 1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import ConfigError, DataError
from .fairness import choose_threshold, fairness_report
from .multiclass import multiclass_report

_LABELS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1, "benign": 0, "malignant": 1}


def read_table(path: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    """The CSV as stripped strings; DataError if missing, unreadable, empty, or lacking a needed column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"predictions file {path} does not exist")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True,
                         encoding="utf-8-sig")  # -sig: a spreadsheet's byte-order mark is not a column name
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; expected a header ({', '.join(columns)}) and one row per "
                        "test image") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not a readable UTF-8 CSV file: {err}") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path} has no column {', '.join(map(repr, missing))}; columns present: "
                        f"{', '.join(df.columns)}. Rename the column or pass its name (label_col=, "
                        "score_col=, group_col=)")
    if df.empty:
        raise DataError(f"{path} has a header but no rows; expected one row per test image")
    return df.apply(lambda col: col.str.strip())


def _fail(path: Path, bad: np.ndarray, col: str, values: pd.Series, why: str, fix: str) -> None:
    """Raise one DataError naming the first bad row (and how many more), if any row is bad."""
    rows = np.flatnonzero(bad)
    if rows.size:
        i = int(rows[0])
        more = f" (and {rows.size - 1} more bad row{'s' if rows.size > 2 else ''})" if rows.size > 1 else ""
        raise DataError(f"{path}: row {i + 1} (line {i + 2}), column {col!r}: value {values.iloc[i]!r} "
                        f"{why}{more}; {fix}")


def _scores(path: Path, df: pd.DataFrame, col: str) -> np.ndarray:
    """A score column as floats in [0, 1]; DataError naming the first non-numeric or out-of-range row."""
    values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
    bad = ~((values >= 0) & (values <= 1))  # NaN (not a number) fails both comparisons
    if bad.any():
        first = int(np.argmax(bad))
        why = "is outside [0, 1]" if np.isfinite(values[first]) else "is not a number"
        _fail(path, bad, col, df[col], why, "scores must be probabilities in [0, 1] "
              "(apply a sigmoid or softmax to logits first)")
    return values


def _groups(path: Path, df: pd.DataFrame, col: str, expected: Sequence[str] | None) -> list[str]:
    """The group column; DataError for an empty cell or an expected group without rows."""
    _fail(path, (df[col] == "").to_numpy(), col, df[col], "is empty", "give every row its skin-tone group")
    present = sorted(set(df[col]))
    empty = [g for g in (expected or []) if str(g) not in present]
    if empty:
        raise DataError(f"{path}: group(s) {', '.join(map(repr, empty))} have no rows (groups present in "
                        f"column {col!r}: {', '.join(present)}); add their predictions or drop them from "
                        "the expected groups")
    return df[col].tolist()


def read_binary_predictions(
        path: str | os.PathLike, *, label_col: str = "label", score_col: str = "score",
        group_col: str = "group", expected_groups: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels (0/1), scores and groups of a binary predictions CSV, validated (see the module doc)."""
    path = Path(path)
    df = read_table(path, [label_col, score_col, group_col])
    labels = df[label_col].str.lower().map(_LABELS)
    _fail(path, labels.isna().to_numpy(), label_col, df[label_col], "is not a binary label",
          "use 0/1, true/false or benign/malignant (1 = true = malignant)")
    return (labels.to_numpy(dtype=int), _scores(path, df, score_col),
            _groups(path, df, group_col, expected_groups))


def fairness_from_csv(path: str | os.PathLike, *, label_col: str = "label", score_col: str = "score",
                      group_col: str = "group", threshold: float | str = 0.5,
                      val_path: str | os.PathLike | None = None,
                      expected_groups: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict[str, Any]:
    """The binary fairness report of a predictions CSV (test split) at ``threshold``.

    ``threshold="youden"`` chooses Youden's J on ``val_path`` (validation predictions with the same
    columns) and applies it to ``path``; choosing it on the test file itself would be optimistic.
    """
    if isinstance(threshold, str) and threshold == "youden":
        if val_path is None:
            raise ConfigError("threshold 'youden' is chosen on validation predictions: pass val_path= (a CSV "
                              "with the same columns for the validation split), or give a fixed threshold")
        val_labels, val_scores, _ = read_binary_predictions(val_path, label_col=label_col,
                                                            score_col=score_col, group_col=group_col)
        choice = {**choose_threshold(val_labels, val_scores, "youden"), "chosen_on": str(val_path)}
    else:
        choice = choose_threshold([], [], threshold)
    labels, scores, groups = read_binary_predictions(path, label_col=label_col, score_col=score_col,
                                                     group_col=group_col, expected_groups=expected_groups)
    report = fairness_report(labels, scores, groups, threshold=choice, n_boot=n_boot, seed=seed, level=level,
                             expected_groups=expected_groups)
    report["source"] = {"path": str(path), "label_col": label_col, "score_col": score_col,
                        "group_col": group_col}
    return report


def _class_labels(path: Path, df: pd.DataFrame, col: str, classes: list[str]) -> np.ndarray:
    """A multi-class label column as indices: class names (any case) or indices 0..K-1."""
    index = {c.lower(): i for i, c in enumerate(classes)}
    index.update({str(i): i for i in range(len(classes)) if str(i) not in index})
    labels = df[col].str.lower().map(index)
    _fail(path, labels.isna().to_numpy(), col, df[col], "is not a known class",
          f"use one of {', '.join(classes)} or an index 0..{len(classes) - 1}")
    return labels.to_numpy(dtype=int)


def multiclass_from_csv(path: str | os.PathLike, *, score_cols: Sequence[str] | None = None,
                        classes: Sequence[str] | None = None, label_col: str = "label",
                        group_col: str = "group", expected_groups: Sequence[str] | None = None,
                        n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """The multi-class fairness report of a predictions CSV with one score column per class.

    ``score_cols`` defaults to every column named ``score_<class>`` (in file order); ``classes`` defaults
    to those column names without the ``score_`` prefix.
    """
    path = Path(path)
    df = read_table(path, [label_col, group_col, *(score_cols or [])])
    cols = list(score_cols or [c for c in df.columns if c.startswith("score_")])
    if len(cols) < 2:
        raise DataError(f"{path}: found {len(cols)} score column(s) named score_<class>; columns present: "
                        f"{', '.join(df.columns)}. Name one score column per class score_<class>, or pass "
                        "score_cols=")
    names = [str(c) for c in classes] if classes is not None else [c.removeprefix("score_") for c in cols]
    if len(names) != len(cols):
        raise ConfigError(f"{len(names)} class names for {len(cols)} score columns {cols}; "
                          "give one class name per score column")
    labels = _class_labels(path, df, label_col, names)
    scores = np.column_stack([_scores(path, df, c) for c in cols])
    groups = _groups(path, df, group_col, expected_groups)
    report = multiclass_report(labels, scores, groups, classes=names, n_boot=n_boot, seed=seed, level=level,
                               expected_groups=expected_groups)
    report["source"] = {"path": str(path), "label_col": label_col, "score_cols": cols, "group_col": group_col}
    return report


def parse_threshold(value: str | float) -> str | float:
    """``"youden"`` or a probability in [0, 1] (a number or its text); ConfigError otherwise."""
    if isinstance(value, str) and value.strip().lower() == "youden":
        return "youden"
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"threshold {value!r} must be 'youden' (chosen on validation predictions) or a "
                          "probability in [0, 1] such as 0.5")
    return number


def report_from_csv(path: str | os.PathLike, *, label_col: str = "label", score_col: str = "score",
                    group_col: str = "group", threshold: str | float = 0.5,
                    val_path: str | os.PathLike | None = None, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict[str, Any]:
    """The binary report of a predictions CSV, or the multi-class one when it has no ``score_col`` but
    one ``score_<class>`` column per class (as ``downstream`` writes them)."""
    header = read_table(path, [label_col, group_col]).columns
    if score_col not in header and sum(c.startswith("score_") for c in header) >= 2:
        return multiclass_from_csv(path, label_col=label_col, group_col=group_col, n_boot=n_boot, seed=seed,
                                   level=level)
    return fairness_from_csv(path, label_col=label_col, score_col=score_col, group_col=group_col,
                             threshold=parse_threshold(threshold), val_path=val_path, n_boot=n_boot, seed=seed,
                             level=level)
