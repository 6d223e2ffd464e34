"""The images ``downstream`` trains and tests on, read the way training reads them, and the split file.

Real images come from a dataset folder indexed with the run's data settings (``data.dataset.index_dataset``:
file column, bad-image policy, value maps); each image gets its label word (the diagnosis column through
its value map, e.g. "malignant") and its tone group word (e.g. "darker"), and its split from the split
file. Synthetic images are the ``synthetic`` rows of a ``rebalance`` output folder; they go to train only,
and where a clinician review wrote its ``review`` columns, only the accepted ones (``data.reviewed``).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, DataError
from ..core.prompts import PromptBuilder, from_config, normalize_value
from ..data import duplicates as dup
from ..data.dataset import index_dataset, pick_file_column, read_metadata
from ..data.reviewed import keep_reviewed
from ..data.splits import Splits, make_splits, read_split_file, write_split_file
from ..eval.inputs import is_synthetic

log = logging.getLogger(__name__)
ID_COLUMNS = ("patient_id", "lesion_id")  # "auto": the first one the metadata has


@dataclass(frozen=True)
class Sample:
    """One image: its path, the file key of its metadata row, label word, tone group word and split."""

    path: Path
    file: str
    label: str
    group: str
    split: str = "train"
    synthetic: bool = False


def _builder(value_maps, label_col: str, tone_col: str) -> PromptBuilder:
    """A prompt builder over just the label and tone columns, with the run's value maps."""
    if label_col == tone_col:
        raise ConfigError(f"the label column and the tone column are both {label_col!r}; the classifier "
                          "predicts the diagnosis and the report groups by tone: name two columns")
    return PromptBuilder(f"{{{label_col}}} | {{{tone_col}}}", dict(value_maps))


def dataset_settings(data_cfg, folder: str | os.PathLike):
    """``data_cfg`` reading all of ``folder``: the run's file column, bad-image policy and such, without
    what only narrowed its training set (``max_samples``, and a ``split_file`` where the config has one)."""
    narrowed = {"max_samples": None}
    if getattr(data_cfg, "split_file", None):
        narrowed["split_file"] = None
    return replace(data_cfg, dir=str(folder), **narrowed)


def read_samples(data_cfg, value_maps, label_col: str, tone_col: str, *,
                 synthetic: bool = False, include_unreviewed: bool | None = None,
                 review: dict | None = None) -> list[Sample]:
    """Real rows (or, ``synthetic``, only generated rows) of ``data_cfg.dir`` as samples (split unset);
    with ``include_unreviewed`` not None, only the rows a clinician review accepted where it wrote its
    columns (``data.reviewed.filter_reviewed``); ``review`` (a dict) then receives what was kept."""
    builder = _builder(value_maps, label_col, tone_col)
    index = index_dataset(data_cfg, builder)
    if not index.records:
        return []
    file_col = pick_file_column(list(index.records[0].row), data_cfg.file_column, index.folder)
    records = keep_reviewed([r for r in index.records if is_synthetic(r.row) == synthetic], include_unreviewed,
                            str(data_cfg.dir), review)
    return [Sample(r.path, str(r.row[file_col]), builder.word(label_col, r.row[label_col]),
                   builder.word(tone_col, r.row[tone_col]), synthetic=synthetic) for r in records]


def assign_splits(samples: Sequence[Sample], splits: Splits, where: str | os.PathLike) -> list[Sample]:
    """The samples with their split from the split file; DataError for an image the split file lacks."""
    out, missing = [], []
    for s in samples:
        split = splits.assignment.get(s.file) or splits.assignment.get(s.path.name)
        if split is None:
            missing.append(s.file)
        else:
            out.append(replace(s, split=split))
    if missing:
        raise DataError(f"{len(missing)} image(s) of the dataset are not in split file {where} (first: "
                        f"{', '.join(missing[:3])}); the split was made from another dataset: write it again "
                        "with `dermdiff-lora split DATASET --out split.csv`")
    unused = len(splits.assignment) - len(out)
    if unused > 0:
        log.warning("%d file(s) of split file %s are not usable images of the dataset", unused, where)
    return out


def read_synthetic(data_cfg, value_maps, label_col: str, tone_col: str, folder: str | os.PathLike,
                   classes: Sequence[str], *, include_unreviewed: bool = False,
                   review: dict | None = None) -> list[Sample]:
    """The synthetic rows of a rebalance output folder (train split) — those a clinician review accepted
    where one was written back (``include_unreviewed``: also those no reader saw); DataError if none, or
    unknown labels."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"synthetic folder {folder} does not exist; pass a `rebalance` output folder")
    found = read_samples(dataset_settings(data_cfg, folder), value_maps, label_col, tone_col, synthetic=True,
                         include_unreviewed=include_unreviewed, review=review)
    if not found:
        raise DataError(f"{folder}: no rows marked synthetic=true, or none a clinician review accepted; pass "
                        "a `rebalance` output folder (its metadata has a synthetic column), or "
                        "--include-unreviewed")
    for s in found:
        if s.label not in classes:
            raise DataError(f"{folder}: synthetic image {s.file} has {label_col} {s.label!r}, which no real "
                            f"image has (classes: {', '.join(classes)}); rebalance the same dataset")
    return [replace(s, split="train") for s in found]


def training_rows(cfg, id_col: str) -> list[dict[str, Any]]:
    """The adapter's training images as ``{"file", id_col}`` rows, read as its saved config reads them: with
    a split file of its own (``data.split_file``), the rows of the part it trained on (``data.split_part``),
    whichever part that was."""
    folder = cfg.data.dir
    if not folder or not Path(folder).is_dir():
        raise DataError(f"the adapter's saved config names training folder {folder!r}, which does not exist "
                        "here, so its patients cannot be checked against the split file; put that folder "
                        "back where the adapter was trained from (the check refuses to guess)")
    index = index_dataset(cfg.data, from_config(cfg.prompts))
    file_col = pick_file_column(list(index.records[0].row), cfg.data.file_column, index.folder)
    return [{"file": str(r.row[file_col]), id_col: r.row.get(id_col)} for r in index.records]


def pick_id_column(columns: Sequence[str], wanted: str, source: Path) -> str:
    """``wanted``, or for "auto" the first of ``ID_COLUMNS`` present; DataError naming the columns."""
    options = ID_COLUMNS if wanted == "auto" else (wanted,)
    for name in options:
        if name in columns:
            return name
    raise DataError(f"{source} has no {' or '.join(options)} column (columns: {', '.join(columns)}); pass "
                    "--id-column with the column that names the patient (or lesion)")


def split_dataset(dataset: str | os.PathLike, out: str | os.PathLike, *, id_column: str = "auto",
                  diagnosis_column: str = "benign_malignant", tone_column: str = "skin_tone",
                  file_column: str = "auto", fractions: Sequence[float] = (0.7, 0.15, 0.15),
                  seed: int = 0, duplicates: str | None = None) -> dict[str, Any]:
    """Write a patient-level split of a dataset folder's metadata, stratified by diagnosis x tone, every
    group of copies of one image on one side.

    Files are keyed by the metadata's file column (as ``downstream`` reads them). ``duplicates``: a
    ``duplicates.csv`` (``"none"``: none; default: ``<dataset>_audit/duplicates.csv`` when the audit wrote
    one). Returns the sidecar.
    """
    rows, source = read_metadata(dataset)
    columns = list(rows[0])
    file_col = pick_file_column(columns, file_column, source)
    id_col = pick_id_column(columns, id_column, source)
    strata = [diagnosis_column, tone_column]
    absent = [c for c in strata if c not in columns]
    if absent:
        raise DataError(f"{source} has no column {', '.join(map(repr, absent))} to stratify by (columns: "
                        f"{', '.join(columns)}); pass --diagnosis-column / --tone-column")
    keyed = [{**r, **{c: normalize_value(r.get(c)) for c in strata}} for r in rows]
    found = dup.locate(duplicates, dirs=[str(dataset)])
    pairs = [(p.id_a, p.id_b) for p in dup.read_csv(found)] if found else []
    splits = make_splits(keyed, id_col=id_col, strata_cols=strata, file_col=file_col,
                         fractions=fractions, seed=seed, duplicates=pairs)
    splits.meta["duplicates"]["file"] = str(found) if found else None
    path = write_split_file(out, splits)
    meta = read_split_file(path).meta
    return {**meta, "path": str(path), "dataset": str(dataset)}


def counts(samples: Sequence[Sample]) -> dict[str, dict[str, int]]:
    """Images per split (and synthetic) x "label|group", for the JSON."""
    out: dict[str, Counter] = {}
    for s in samples:
        key = "synthetic" if s.synthetic else s.split
        out.setdefault(key, Counter())[f"{s.label}|{s.group}"] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}
