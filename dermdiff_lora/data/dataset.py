"""Dataset loading: an imagefolder with metadata.csv / metadata.jsonl → captioned, transformed tensors.

Images are read with PIL and turned into tensors with numpy/torch (no torchvision). The input folder is
only ever read.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import DataError
from ..core.prompts import PromptBuilder, normalize_value

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
FILE_COLUMNS = ("file_name", "image_name", "image", "file", "filename")


@dataclass
class Record:
    path: Path
    caption: str
    row: dict


@dataclass
class DatasetIndex:
    """The usable records of a folder, with what was skipped and why."""

    folder: Path
    records: list[Record]
    skipped: dict[str, str] = field(default_factory=dict)

    def groups(self, columns: list[str]) -> list[tuple[str, ...]]:
        return [tuple(normalize_value(r.row.get(c)) for c in columns) for r in self.records]


def read_metadata(folder: str | Path) -> tuple[list[dict], Path]:
    """Rows of ``metadata.jsonl`` or ``metadata.csv`` in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist (set data.dir to an imagefolder)")
    for name in ("metadata.jsonl", "metadata.csv"):
        path = folder / name
        if path.is_file():
            break
    else:
        raise DataError(f"{folder} has no metadata.jsonl or metadata.csv (one row per image, with a "
                        "file_name or image_name column)")
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse: {exc}") from None
    if not rows:
        raise DataError(f"{path} has no rows: the dataset is empty")
    return rows, path


def pick_file_column(columns: list[str], configured: str, source: Path) -> str:
    if configured != "auto":
        if configured not in columns:
            raise DataError(f"{source}: data.file_column {configured!r} not found; "
                            f"available columns: {', '.join(columns)}")
        return configured
    for name in FILE_COLUMNS:
        if name in columns:
            return name
    raise DataError(f"{source}: no image file column ({' / '.join(FILE_COLUMNS)}); available columns: "
                    f"{', '.join(columns)}. Set data.file_column")


def find_image(folder: Path, name: str) -> Path | None:
    """``name`` as given, or a file stem (ISIC's image_name) with a known image suffix."""
    path = folder / name
    if path.is_file():
        return path
    if not Path(name).suffix:
        for suffix in IMAGE_SUFFIXES:
            for candidate in (folder / f"{name}{suffix}", folder / f"{name}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def index_dataset(data_cfg, builder: PromptBuilder) -> DatasetIndex:
    """Resolve every metadata row to an image file and a caption; bad images error or are skipped."""
    folder = Path(data_cfg.dir) if data_cfg.dir else None
    if folder is None:
        raise DataError("data.dir is not set: point it at an imagefolder with metadata.csv/jsonl")
    rows, source = read_metadata(folder)
    columns = list(rows[0])
    file_col = pick_file_column(columns, data_cfg.file_column, source)
    caption_cols = builder.columns if builder.template else [data_cfg.caption_column]
    missing = [c for c in caption_cols if c not in columns]
    if missing:
        what = "prompt template" if builder.template else "data.caption_column"
        raise DataError(f"{source}: column(s) {', '.join(missing)} needed by the {what} not found; "
                        f"available columns: {', '.join(columns)}")
    index = DatasetIndex(folder, [])
    skip = data_cfg.on_bad_image == "skip"
    for row in rows:
        name = str(row.get(file_col) or "")
        path = find_image(folder, name)
        problem = None if path else f"image {folder / name} not found"
        if path and (problem := _check_image(path)) is None:
            caption = builder.build(row) if builder.template else str(row.get(data_cfg.caption_column) or "")
            index.records.append(Record(path, caption, row))
            if data_cfg.max_samples and len(index.records) >= data_cfg.max_samples:
                break
            continue
        if not skip:
            raise DataError(f"{problem} (set data.on_bad_image=skip to skip bad images)")
        index.skipped[name] = problem
    if index.skipped:
        log.warning("skipped %d bad image(s): %s", len(index.skipped), ", ".join(list(index.skipped)[:5]))
    if not index.records:
        raise DataError(f"{folder}: no usable images ({len(index.skipped)} skipped)")
    return index


def _check_image(path: Path) -> str | None:
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as exc:  # PIL raises many types for corrupt files
        return f"image {path} is unreadable ({type(exc).__name__}: {exc})"
    return None


# ------------------------------------------------------------------------------------------- transforms
def to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any PIL mode: grayscale, palette, RGBA (on white) and 16-bit images included."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def transform(image: Image.Image, resolution: int, center_crop: bool, flip: bool,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """Resize the short side, crop (center or random), flip: → float32 CHW array in [-1, 1]."""
    image = to_rgb(image)
    w, h = image.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    if not center_crop:
        rng = rng or np.random.default_rng()
        left = int(rng.integers(0, size[0] - resolution + 1))
        top = int(rng.integers(0, size[1] - resolution + 1))
    image = image.crop((left, top, left + resolution, top + resolution))
    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    if flip:
        arr = arr[:, ::-1]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


class ImageCaptionDataset:
    """Map-style dataset; the key is ``(index, sample_seed)`` so crops and flips are reproducible."""

    def __init__(self, index: DatasetIndex, data_cfg, tokenizer):
        self.index, self.cfg, self.tokenizer = index, data_cfg, tokenizer

    def __len__(self) -> int:
        return len(self.index.records)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        import torch

        i, sample_seed = key
        record = self.index.records[i]
        rng = np.random.default_rng(sample_seed)
        flip = bool(self.cfg.random_flip and rng.random() < 0.5)
        try:
            with Image.open(record.path) as im:
                im.load()
                pixels = transform(im, self.cfg.resolution, self.cfg.center_crop, flip, rng)
        except OSError as exc:
            raise DataError(f"image {record.path} is unreadable: {exc}") from None
        return {"pixel_values": torch.from_numpy(pixels), "input_ids": tokenize(self.tokenizer, record.caption),
                "index": i, "flip": flip, "seed": sample_seed}


def tokenize(tokenizer, text: str):
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return ids[0]


def collate(items: list[dict]) -> dict:
    import torch

    return {"pixel_values": torch.stack([x["pixel_values"] for x in items]),
            "input_ids": torch.stack([x["input_ids"] for x in items]),
            "index": torch.tensor([x["index"] for x in items]),
            "flip": torch.tensor([x["flip"] for x in items]),
            "seed": torch.tensor([x["seed"] for x in items], dtype=torch.int64)}


def group_mix(index: DatasetIndex, columns: list[str]) -> Counter:
    return Counter(index.groups(columns))
