"""``memorisation.csv``: every generated image's nearest training image, one row each (not only the top
pairs of ``eval.json``), for a person (or ``dermdiff-lora review``) to look at side by side."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

from ..core.fsutil import atomic_write
from .report import EvalItem

MEMORISATION_FILE = "memorisation.csv"
COLUMNS = ("generated_file", "train_file", "cosine", "flipped", "ssim")


def _name(item: EvalItem) -> str:
    image = item.image
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else str(item.image_id or "")


def write_memorisation_csv(path: str | os.PathLike, matches: Sequence, generated: Sequence[EvalItem],
                           train: Sequence[EvalItem]) -> Path:
    """One row per generated image (as ``generated`` lists them): its file, the nearest training image's
    file (empty when every candidate was excluded), the cosine similarity, whether it matched mirrored,
    and the pixel SSIM of the pair; written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for m in sorted(matches, key=lambda m: m.query):
        found = m.train >= 0
        writer.writerow([_name(generated[m.query]), _name(train[m.train]) if found else "",
                         f"{m.cosine:.6f}" if found else "", str(bool(m.flipped)).lower(),
                         "" if m.ssim is None else f"{m.ssim:.4f}"])
    return atomic_write(path, buf.getvalue())
