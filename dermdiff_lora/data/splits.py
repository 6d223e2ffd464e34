"""Patient-level train/val/test splits, stratified by diagnosis x tone, stored as CSV + JSON sidecar.

No patient (or lesion) id appears in two splits. Patients are placed greedily, largest first (ties in a
seeded shuffle), each into the split where it most reduces the chi-square-like distance between the
assigned and the target image counts of every stratum and of the split as a whole. A row without an id is
its own group, with group id ``file:<file>``; the result counts and lists such rows.

Split file ``NAME.csv``: header ``file,split,group_id``, one row per image. Sidecar ``NAME.json``: schema,
seed, fractions, id/file/strata columns, counts per split x stratum, and the CSV's sha256, so a split file
edited by hand (or half-written) is refused on reading.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError, DataError
from ..core.fsutil import atomic_write

SPLITS = ("train", "val", "test")
SCHEMA = "dermdiff-lora/splits/v1"
HEADER = ["file", "split", "group_id"]
NO_ID_PREFIX = "file:"
MISSING = "<missing>"


@dataclass(frozen=True)
class Splits:
    """A split: ``assignment`` file -> split, ``group_ids`` file -> patient id, and ``meta`` (sidecar)."""

    assignment: dict[str, str]
    group_ids: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def files_without_id(self) -> list[str]:
        """Files that had no patient id and so form a group of their own."""
        return sorted(f for f, g in self.group_ids.items() if g == NO_ID_PREFIX + f)


def _is_missing(value: Any) -> bool:
    """None, NaN, or an empty/blank string."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _check_fractions(fractions: Sequence[float]) -> dict[str, float]:
    """Fractions for train/val/test as a dict; ConfigError unless three numbers >= 0 summing to 1."""
    fr = [float(f) for f in fractions]
    if len(fr) != len(SPLITS) or any(not 0.0 <= f <= 1.0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(f"fractions {tuple(fractions)!r} must be three numbers in [0, 1] (train, val, "
                          "test) summing to 1, e.g. (0.7, 0.15, 0.15)")
    return dict(zip(SPLITS, fr))


def _parse_rows(rows: Iterable[Mapping[str, Any]], id_col: str, strata_cols: Sequence[str],
                file_col: str) -> tuple[list[str], list[str], list[str]]:
    """Files, group ids and stratum labels of the rows; DataError naming a bad row or a mistyped column."""
    rows = list(rows)
    if not rows:
        raise DataError("no rows to split; give one row (dict) per image")
    for col in [id_col, *strata_cols]:
        if not any(col in r for r in rows):
            raise DataError(f"no row has the column {col!r}; columns of the first row: {', '.join(rows[0])}")
    files, groups, strata, seen = [], [], [], {}
    for i, row in enumerate(rows):
        file = row.get(file_col)
        if _is_missing(file):
            raise DataError(f"row {i} has no {file_col!r} value; every row needs its image file name")
        file = str(file)
        if file in seen:
            raise DataError(f"rows {seen[file]} and {i} both have {file_col} {file!r}; file names must be "
                            "unique")
        seen[file] = i
        pid = row.get(id_col)
        files.append(file)
        groups.append(NO_ID_PREFIX + file if _is_missing(pid) else str(pid).strip())
        strata.append("|".join(MISSING if _is_missing(row.get(c)) else str(row.get(c)) for c in strata_cols)
                      or "all")
    return files, groups, strata


def _assign(counts: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Split index per group from its (G, K) stratum counts: greedy, largest groups first."""
    sizes = counts.sum(axis=1)
    shuffle = rng.permutation(len(sizes))
    target = fractions[:, None] * counts.sum(axis=0)[None, :]  # (S, K)
    total_target = fractions * sizes.sum()
    assigned, total = np.zeros_like(target), np.zeros_like(total_target)
    out = np.empty(len(sizes), dtype=int)
    weight, total_weight = 1.0 / np.maximum(target, 1e-9), 1.0 / np.maximum(total_target, 1e-9)
    for g in np.lexsort((shuffle, -sizes)):
        c, m = counts[g], sizes[g]
        cost = ((c * (2 * (assigned - target) + c)) * weight).sum(axis=1)
        cost += m * (2 * (total - total_target) + m) * total_weight
        s = int(np.argmin(cost))
        out[g], assigned[s], total[s] = s, assigned[s] + c, total[s] + m
    return out


def _counts(assignment: Mapping[str, str], strata: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """Images per split x stratum (strata sorted), every split present."""
    out: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for file, split in assignment.items():
        out[split][strata[file]] = out[split].get(strata[file], 0) + 1
    return {s: dict(sorted(c.items())) for s, c in out.items()}


def _join_duplicates(files: Sequence[str], group_idx: np.ndarray,
                     duplicates: Iterable[tuple[str, str]]) -> tuple[np.ndarray, dict[str, int]]:
    """Per patient group, the unit it is split with: groups holding copies of one image are joined (union-find
    over the pairs of file names; pairs naming a file not in the rows are counted, not used). With no join,
    unit i is group i. Also returns how many patient groups were merged into how many units."""
    position = {f: i for i, f in enumerate(files)}
    parent = list(range(int(group_idx.max()) + 1))

    def root(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    pairs = used = 0
    for a, b in duplicates:
        pairs += 1
        if str(a) in position and str(b) in position:
            used += 1
            ra, rb = root(int(group_idx[position[str(a)]])), root(int(group_idx[position[str(b)]]))
            parent[max(ra, rb)] = min(ra, rb)
    units = np.unique([root(g) for g in range(len(parent))], return_inverse=True)[1]
    sizes = np.bincount(units)
    return units, {"pairs": pairs, "pairs_in_data": used, "patient_groups_merged": int(sizes[sizes > 1].sum()),
                   "merged_into": int((sizes > 1).sum()), "units": len(sizes)}


def make_splits(rows: Iterable[Mapping[str, Any]], *, id_col: str, strata_cols: Sequence[str] = (),
                file_col: str = "file", fractions: Sequence[float] = (0.7, 0.15, 0.15),
                seed: int = 0, duplicates: Iterable[tuple[str, str]] | None = None) -> Splits:
    """Patient-level train/val/test split of ``rows`` (one dict per image), stratified by ``strata_cols``.

    ``duplicates``: pairs of file names that are copies of one image (``data.duplicates``); the patients of
    a pair are split as one group, so every copy lands on one side. The same rows, duplicates and seed always
    give the same split. ``meta`` records the settings, the counts per split x stratum, how many rows had no
    id (each such row is its own group) and, with ``duplicates``, how many patient groups they joined.
    """
    frac = _check_fractions(fractions)
    files, groups, strata = _parse_rows(rows, id_col, list(strata_cols), file_col)
    group_names, group_idx = np.unique(np.array(groups, dtype=object), return_inverse=True)
    stratum_names, stratum_idx = np.unique(np.array(strata, dtype=object), return_inverse=True)
    unit_of_group, joined = _join_duplicates(files, group_idx, duplicates or ())
    counts = np.zeros((joined["units"], len(stratum_names)))
    np.add.at(counts, (unit_of_group[group_idx], stratum_idx), 1)
    split_of_group = _assign(counts, np.array(list(frac.values())), np.random.default_rng(seed))[unit_of_group]
    assignment = {f: SPLITS[split_of_group[g]] for f, g in zip(files, group_idx)}
    no_id = sum(g.startswith(NO_ID_PREFIX) for g in group_names)
    meta = {"schema": SCHEMA, "seed": int(seed), "fractions": frac, "id_col": id_col, "file_col": file_col,
            "strata_cols": list(strata_cols), "n_files": len(files), "n_groups": len(group_names),
            "n_without_id": int(no_id),
            "note": (f"{no_id} rows had no {id_col!r}; each is its own group (group id file:<file>)"
                     if no_id else f"every row has a {id_col!r}"),
            "groups_per_split": {s: int((split_of_group == i).sum()) for i, s in enumerate(SPLITS)},
            "files_per_split": {s: sum(v == s for v in assignment.values()) for s in SPLITS},
            "counts": _counts(assignment, dict(zip(files, strata)))}
    if duplicates is not None:
        meta["duplicates"] = joined
    return Splits(assignment, dict(zip(files, groups)), meta)


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a split CSV: ``NAME.csv`` -> ``NAME.json``."""
    return Path(path).with_suffix(".json")


def write_split_file(path: str | os.PathLike, splits: Splits) -> Path:
    """Write ``splits`` to ``path`` (CSV ``file,split,group_id``) and its JSON sidecar, each atomically."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise ConfigError(f"split file {path} must end in .csv (its sidecar is {path.stem}.json)")
    order = {s: i for i, s in enumerate(SPLITS)}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for file in sorted(splits.assignment, key=lambda f: (order[splits.assignment[f]], f)):
        writer.writerow([file, splits.assignment[file], splits.group_ids[file]])
    text = buf.getvalue()
    meta = {**splits.meta, "csv": path.name, "csv_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    atomic_write(path, text)
    atomic_write(sidecar_path(path), json.dumps(meta, indent=2) + "\n")
    return path


def _read_meta(path: Path, text: str) -> dict[str, Any]:
    """The sidecar of ``path``, checked against the CSV text; DataError if absent, unreadable or stale."""
    side = sidecar_path(path)
    if not side.is_file():
        raise DataError(f"split file {path} has no sidecar {side.name}; write split files with "
                        "write_split_file (dermdiff-lora split) rather than by hand")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{side} is not valid JSON ({err}); re-create the split with "
                        "write_split_file") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        raise DataError(f"{side} is not a dermdiff-lora split sidecar (schema {SCHEMA!r} expected)")
    if meta.get("csv_sha256") != hashlib.sha256(text.encode("utf-8")).hexdigest():
        raise DataError(f"{path} does not match the checksum in {side.name}: it was edited or only half "
                        "written after the split was made; re-create it with write_split_file (same seed "
                        "gives the same split) instead of editing it")
    return meta


def read_split_file(path: str | os.PathLike) -> Splits:
    """Read and validate a split file and its sidecar; DataError naming the bad line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"split file {path} is not UTF-8 text ({err})") from None
    meta = _read_meta(path, text)
    reader = csv.reader(io.StringIO(text))
    head = next(reader, None)
    if head != HEADER:
        raise DataError(f"{path} line 1: header {head!r} should be {','.join(HEADER)}")
    assignment: dict[str, str] = {}
    group_ids: dict[str, str] = {}
    split_of_group: dict[str, tuple[str, int]] = {}
    for line, row in enumerate(reader, start=2):
        if len(row) != 3 or not all(v.strip() for v in row) or row[1] not in SPLITS:
            raise DataError(f"{path} line {line}: {row!r} should be file,split,group_id with split one of "
                            f"{', '.join(SPLITS)} and no empty value")
        file, split, gid = row
        if file in assignment:
            raise DataError(f"{path} line {line}: file {file!r} is listed twice")
        first = split_of_group.setdefault(gid, (split, line))
        if first[0] != split:
            raise DataError(f"{path} line {line}: patient {gid!r} is in {split} here but in {first[0]} on "
                            f"line {first[1]}; a patient must stay in one split")
        assignment[file], group_ids[file] = split, gid
    return Splits(assignment, group_ids, meta)


def _file_index(splits: Splits) -> dict[str, str]:
    """Lookup from file name -- and from bare base name where that is unique -- to the split's file key."""
    index = {f: f for f in splits.assignment}
    by_name: dict[str, list[str]] = {}
    for f in splits.assignment:
        by_name.setdefault(Path(f).name, []).append(f)
    for name, found in by_name.items():
        if len(found) == 1:
            index.setdefault(name, found[0])
    return index


def _train_keys(item: Any, kind: str, file_col: str, id_col: str | None) -> tuple[str | None, str | None]:
    """The (file, patient id) a training item names: a string per ``kind``, or a row's columns."""
    if isinstance(item, Mapping):
        file = None if _is_missing(item.get(file_col)) else str(item[file_col])
        pid = None if id_col is None or _is_missing(item.get(id_col)) else str(item[id_col]).strip()
        return file, pid
    return (str(item), None) if kind == "file" else (None, str(item).strip())


def _copies_in_split(duplicates: Iterable[tuple[str, str]], index: Mapping[str, str]):
    """(union-find over the pairs, root -> the split's files in that group of copies)."""
    from .duplicates import group_sets

    groups = group_sets(duplicates)
    members: dict[Any, list[str]] = {}
    for name in groups.parent:
        if name in index:
            members.setdefault(groups.find(name), []).append(index[name])
    return groups, members


def check_no_leak(train: Iterable[Any], split_file: str | os.PathLike | Splits, *, kind: str = "file",
                  id_col: str | None = None, file_col: str = "file",
                  protected: Sequence[str] = ("val", "test"), max_names: int = 10,
                  duplicates: Iterable[tuple[str, str]] | None = None) -> dict[str, int]:
    """Refuse (DataError) an adapter-training set holding any image or patient of a protected split, or
    (``duplicates``: pairs of file names that are copies of one image) a copy of a protected image.

    ``train`` items are file names/paths (``kind="file"``; matched exactly, else by base name when that
    is unique in the split file), patient ids (``kind="id"``), or row dicts with ``file_col`` and
    ``id_col``. The error names up to ``max_names`` leaked patients, then a count. Returns
    ``{"n_checked", "n_matched"}`` (with ``duplicates`` also ``n_duplicate_pairs`` and
    ``n_with_copies_in_split``): a check that matched nothing may mean the names do not correspond.
    """
    if kind not in ("file", "id"):
        raise ConfigError(f"kind {kind!r} must be 'file' (training items are image files) or 'id' (patients)")
    splits = split_file if isinstance(split_file, Splits) else read_split_file(split_file)
    where = splits.meta.get("csv", "(in memory)") if isinstance(split_file, Splits) else split_file
    index = _file_index(splits)
    split_of_group = {g: splits.assignment[f] for f, g in splits.group_ids.items()}
    pairs = None if duplicates is None else list(duplicates)
    groups, members = _copies_in_split(pairs or [], index)
    leaks: dict[str, list[str]] = {}
    n_checked = n_matched = n_copies = 0
    for item in train:
        n_checked += 1
        file, pid = _train_keys(item, kind, file_col, id_col)
        key = index.get(file) if file is not None else None
        if key is None and file is not None:
            key = index.get(Path(file).name)
        gids = {splits.group_ids[key]} if key is not None else set()
        gids |= {pid} if pid is not None and pid in split_of_group else set()
        n_matched += bool(gids)
        for gid in gids:
            if split_of_group[gid] in protected:
                leaks.setdefault(gid, []).append(file or pid)
        names = [n for n in (file, key, Path(file).name if file else None) if n is not None and n in groups.parent]
        copies = {c for n in names for c in members.get(groups.find(n), []) if c != key}
        n_copies += bool(copies)
        for other in sorted(copies):
            if splits.assignment[other] in protected:
                leaks.setdefault(splits.group_ids[other], []).append(f"{file} (a copy of {other})")
    if leaks:
        raise DataError(_leak_message(leaks, split_of_group, where, protected, max_names))
    result = {"n_checked": n_checked, "n_matched": n_matched}
    if pairs is not None:
        result.update(n_duplicate_pairs=len(pairs), n_with_copies_in_split=n_copies)
    return result


def crossing_copies(splits: Splits, duplicates: Iterable[tuple[str, str]]) -> int:
    """Groups of copies (``duplicates``) whose images the split puts in more than one part."""
    _, members = _copies_in_split(duplicates, _file_index(splits))
    return sum(len({splits.assignment[f] for f in files}) > 1 for files in members.values())


def _leak_message(leaks: Mapping[str, list[str]], split_of_group: Mapping[str, str], where: Any,
                  protected: Sequence[str], max_names: int) -> str:
    """'N training images belong to M val/test patients of FILE: P (test; a.jpg, ...), ... and K more.'"""
    names = sorted(leaks)
    shown = []
    for gid in names[:max_names]:
        items = leaks[gid]
        listed = ", ".join(items[:3]) + (f", +{len(items) - 3}" if len(items) > 3 else "")
        shown.append(f"{gid} ({split_of_group[gid]}; {listed})")
    more = f" and {len(names) - max_names} more" if len(names) > max_names else ""
    n_items = sum(len(v) for v in leaks.values())
    return (f"{n_items} adapter-training item(s) belong to (or copy images of) {len(names)} "
            f"{'/'.join(protected)} patient(s) of "
            f"split file {where}: {'; '.join(shown)}{more}. Refusing: an adapter trained on held-out "
            "patients leaks them into the synthetic images. Train the adapter on the train split only.")
