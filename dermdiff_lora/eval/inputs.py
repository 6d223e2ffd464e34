"""The image sets ``evaluate`` compares, read the way training reads them.

Real and training images come from a dataset as the config indexes it (``data.dataset.index_dataset``:
presets, tone columns and value maps included); generated images from a ``generate`` folder
(``generate.json``), a ``rebalance`` folder (its ``synthetic`` rows), or rendered from an adapter. Each
image's cell is the tuple of its prompt words for the template's columns, e.g. ("malignant", "darker").
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from ..core.errors import DataError
from ..core.prompts import PromptBuilder
from ..data.dataset import index_dataset
from ..data.reviewed import keep_reviewed
from .report import EvalItem

GROUP_COLUMNS = ("patient_id", "lesion_id")  # who an image belongs to (memorisation excludes them)
TRUE_WORDS = {"1", "true", "yes", "y", "t"}


def is_synthetic(row: dict) -> bool:
    """True for rows a ``rebalance`` (or any tool writing a ``synthetic`` column) marked as generated."""
    return str(row.get("synthetic", "")).strip().lower() in TRUE_WORDS


def dataset_items(data_cfg, builder: PromptBuilder, columns: list[str], *, synthetic: bool = False,
                  group_columns: tuple[str, ...] = GROUP_COLUMNS,
                  include_unreviewed: bool | None = None, review: dict | None = None) -> list[EvalItem]:
    """One item per usable image of the dataset: real rows only, or (``synthetic``) generated rows only;
    with ``include_unreviewed`` not None, only rows a clinician review accepted where the metadata has
    ``review`` columns (``data.reviewed``); ``review`` (a dict) then receives what was kept."""
    index = index_dataset(data_cfg, builder)
    records = keep_reviewed([r for r in index.records if is_synthetic(r.row) == synthetic], include_unreviewed,
                            str(data_cfg.dir), review)
    items = []
    for record in records:
        group = next((str(record.row[c]) for c in group_columns if record.row.get(c) not in (None, "")), None)
        cell = tuple(builder.word(c, record.row[c]) for c in columns)
        items.append(EvalItem(record.path, cell, group=group, image_id=str(record.path.resolve()), key=record.key))
    return items


def generated_items(folder: str | os.PathLike, data_cfg, builder: PromptBuilder,
                    columns: list[str], *, include_unreviewed: bool = False,
                    review: dict | None = None) -> list[EvalItem]:
    """The images of a ``generate`` output folder, or the synthetic rows of a ``rebalance`` output folder
    (those a clinician review accepted, where it wrote ``review`` columns; ``include_unreviewed``: also
    those no reader saw; ``review`` receives what was kept)."""
    folder = Path(folder)
    settings = folder / "generate.json"
    if settings.is_file():
        try:
            records = json.loads(settings.read_text())["images"]
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{settings} is not a generate record ({exc}); run `dermdiff-lora generate` "
                            "again") from None
        missing = sorted({c for r in records for c in columns if c not in r.get("words", {})})
        if missing:
            raise DataError(f"{settings}: images were not drawn from the template grid (no words for "
                            f"{', '.join(missing)}); generate with the adapter's template (no --prompt)")
        return [EvalItem(folder / r["file"], tuple(r["words"][c] for c in columns), image_id=r["file"])
                for r in records]
    if (folder / "metadata.csv").is_file() or (folder / "metadata.jsonl").is_file():
        plain = replace(data_cfg, dir=str(folder), preset=None, metadata=None, images=[], dataset=None, tones=None,
                        split_file=None, max_samples=None, file_column="auto")  # an imagefolder of its own
        items = dataset_items(plain, builder, columns, synthetic=True, include_unreviewed=include_unreviewed,
                              review=review)
        if items:
            return items
        raise DataError(f"{folder}: no rows marked synthetic (a rebalance output has a synthetic column), or "
                        "none a clinician review accepted (--include-unreviewed also uses unreviewed ones)")
    raise DataError(f"{folder} is neither a `generate` output (generate.json) nor a `rebalance` output "
                    "(metadata with a synthetic column)")


def held_out(real: list[EvalItem], train: list[EvalItem]) -> list[EvalItem]:
    """The real items that are not training images (the same file), for an honest memorisation threshold."""
    seen = {it.image_id for it in train}
    return [it for it in real if it.image_id not in seen]


def tone_column(builder: PromptBuilder, wanted: str | None = None) -> str | None:
    """The template column that holds the skin tone: ``wanted``, else one named like ``*tone*``."""
    if wanted:
        if wanted not in builder.columns:
            raise DataError(f"tone column {wanted!r} is not in the prompt template {builder.template!r}")
        return wanted
    return next((c for c in builder.columns if "tone" in c.lower()), None)
