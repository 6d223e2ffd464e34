"""The images a review shows, in the order it shows them.

QC mode: the synthetic images of a ``rebalance`` folder (its ``synthetic`` rows) or of a ``generate``
folder (``generate.json``), cell by cell (diagnosis × tone), each with its prompt, seed, measured ITA and,
where ``evaluate`` wrote ``memorisation.csv``, its nearest training image and their similarity.
Study mode: those synthetic images and real images (the folder's own real rows, or ``--real DATASET``,
optionally one part of a split file), shuffled with a seed drawn from the reader's name, then a share of
them shown a second time (for intra-reader agreement). Every image is named by its sha256.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import ConfigError, DataError
from ..core.prompts import DEFAULT_VALUE_MAPS, normalize_value
from ..data.dataset import read_metadata
from ..data.splits import read_split_file
from ..data.tables import find_image, pick_file_column

MEMORISATION_FILE = "memorisation.csv"  # written by `evaluate` (eval.matches_csv); read here as a file
TRUE_WORDS = {"1", "true", "yes", "y", "t"}
DEFAULT_GROUPS = ("benign_malignant", "skin_tone")


@dataclass
class Item:
    """One image of the review: its file, sha256, whether it is synthetic, its cell (diagnosis, tone
    words), what QC shows beside it (``info``) and the nearest training image, if known."""

    path: Path
    sha256: str
    synthetic: bool
    cell: tuple[str, ...]
    info: dict = field(default_factory=dict)
    nearest: Path | None = None
    repeat: bool = False  # study mode: the second showing of an image


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _word(column: str, value: object) -> str:
    key = normalize_value(value)
    return DEFAULT_VALUE_MAPS.get(column, {}).get(key, key)


def groups_of(folder: Path) -> tuple[str, ...]:
    run = folder / "rebalance_run.json"
    try:
        return tuple(json.loads(run.read_text(encoding="utf-8"))["groups"]) if run.is_file() else DEFAULT_GROUPS
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_GROUPS


def _nearest_table(folder: Path, memorisation: str | os.PathLike | None) -> dict[str, tuple[Path, float]]:
    """generated file name -> (nearest training file, cosine), from ``memorisation.csv`` when present."""
    path = Path(memorisation) if memorisation else folder / MEMORISATION_FILE
    if not path.is_file():
        if memorisation:
            raise DataError(f"{path} does not exist; run `dermdiff-lora evaluate --generated {folder}` first")
        return {}
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("train_file") and row.get("cosine"):
                out[Path(row["generated_file"]).name] = (Path(row["train_file"]), float(row["cosine"]))
    return out


def _folder_rows(folder: Path, synthetic: bool) -> list[tuple[Path, dict]]:
    """(image path, row) of the folder's metadata rows that are (or are not) synthetic."""
    rows, source = read_metadata(folder)
    file_col = pick_file_column(list(rows[0]), "auto", source)
    out = []
    for i, row in enumerate(rows):
        if (str(row.get("synthetic", "")).strip().lower() in TRUE_WORDS) != synthetic:
            continue
        path = find_image(folder, row[file_col])
        if path is None:
            raise DataError(f"{source} row {i + 2}: image {row[file_col]!r} is not in {folder}")
        out.append((path, row))
    return out


def synthetic_items(folder: str | os.PathLike, memorisation: str | os.PathLike | None = None) -> list[Item]:
    """The synthetic images of a rebalance or generate folder, sorted by cell then file name."""
    folder = Path(folder)
    nearest = _nearest_table(folder, memorisation)
    items = []
    if (folder / "generate.json").is_file():
        for rec in json.loads((folder / "generate.json").read_text(encoding="utf-8"))["images"]:
            path = folder / rec["file"]
            words = rec.get("words") or {}
            info = {"prompt": rec.get("prompt"), "seed": rec.get("seed"), "file": path.name}
            items.append(Item(path, sha256_file(path), True, tuple(words.values()), info))
    else:
        groups = groups_of(folder)
        for path, row in _folder_rows(folder, synthetic=True):
            info = {"prompt": row.get("prompt"), "seed": row.get("seed"), "ita": row.get("ita_estimated"),
                    "file": path.name}
            items.append(Item(path, sha256_file(path), True, tuple(_word(c, row.get(c)) for c in groups), info))
    if not items:
        raise DataError(f"{folder} holds no synthetic images (a rebalance folder's synthetic rows, or a "
                        "generate folder's generate.json)")
    for item in items:
        if item.path.name in nearest:
            item.nearest, cosine = nearest[item.path.name]
            item.info["nearest"], item.info["cosine"] = item.nearest.name, round(cosine, 4)
    return sorted(items, key=lambda it: (it.cell, it.path.name))


def real_items(folder: str | os.PathLike, groups: tuple[str, ...] = DEFAULT_GROUPS, split: str | None = None,
               part: str = "test") -> list[Item]:
    """The real images of a dataset folder (its non-synthetic rows), optionally one part of a split file."""
    folder = Path(folder)
    found = _folder_rows(folder, synthetic=False)
    if split:
        assignment = read_split_file(split).assignment
        found = [(p, r) for p, r in found if assignment.get(p.name, assignment.get(p.stem)) == part]
    if not found:
        raise DataError(f"{folder}: no real images" + (f" in part {part!r} of {split}" if split else ""))
    return [Item(p, sha256_file(p), False, tuple(_word(c, r.get(c)) for c in groups)) for p, r in found]


def study_order(synthetic: list[Item], real: list[Item], reader: str, seed: int = 0,
                repeat_share: float = 0.1) -> list[Item]:
    """Real and synthetic shuffled with a seed from (``seed``, ``reader``), then ``repeat_share`` of them
    again (reshuffled) at the end, for intra-reader agreement."""
    if not 0 <= repeat_share <= 1:
        raise ConfigError(f"repeat share {repeat_share} must be in [0, 1]")
    rng = random.Random(int(hashlib.sha256(f"{seed}:{reader}".encode()).hexdigest()[:16], 16))
    order = [*synthetic, *real]
    rng.shuffle(order)
    repeats = [Item(**{**it.__dict__, "repeat": True}) for it in rng.sample(order, round(repeat_share * len(order)))]
    return order + repeats


def cells_of(items: list[Item]) -> list[tuple[str, ...]]:
    """The distinct cells, in order of first appearance."""
    return list(dict.fromkeys(it.cell for it in items))
