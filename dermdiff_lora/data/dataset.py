"""Training rows: any source (``sources``) → rows with a tone (``tones``) and a caption → tensors.

Images are read with PIL and turned into tensors with numpy/torch (no torchvision). Inputs are only ever
read. ``prepare`` is what training calls: it completes the prompt value maps (a preset's class words, then
the data's own values for template columns without a map) so grids, rebalancing and the card see every
class the data has.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import DataError
from ..core.progress import progress as progress_bar
from ..core.prompts import PromptBuilder, from_config, normalize_value
from . import presets, sources, tones
from .checked import CheckRecord, folder_of
from .tables import (
    FILE_COLUMNS,
    IMAGE_SUFFIXES,
    ImageRef,
    InTable,
    Table,
    draft_jpeg,
    find_image,
    find_metadata,
    open_image,
    pick_file_column,
    read_table,
)

__all__ = ["FILE_COLUMNS", "IMAGE_SUFFIXES", "find_image", "pick_file_column", "read_metadata", "index_dataset",
           "prepare", "Record", "DatasetIndex"]
log = logging.getLogger(__name__)


@dataclass
class Record:
    path: Path | None  # None for an image stored inside a dataset table
    caption: str
    row: dict
    key: str = ""  # the metadata's file value: joins the audit's tones, names skipped images
    image: ImageRef | None = None

    def open(self, size: int | None = None, cover: bool = True) -> Image.Image:
        """The image, loaded; a JPEG at reduced scale with ``size`` (``tables.draft_jpeg``)."""
        return open_image(self.image if self.image is not None else self.path, size, cover=cover)


@dataclass
class DatasetIndex:
    """The usable records of a source, with what was skipped or left out and why (``report``)."""

    folder: Path | None
    records: list[Record]
    skipped: dict[str, str] = field(default_factory=dict)
    origin: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)

    def groups(self, columns: list[str]) -> list[tuple[str, ...]]:
        return [tuple(normalize_value(r.row.get(c)) for c in columns) for r in self.records]


def read_metadata(folder: str | Path) -> tuple[list[dict], Path]:
    """Rows (strings) of ``metadata.jsonl``, ``metadata.csv`` or ``metadata.parquet`` in ``folder``."""
    path = find_metadata(Path(folder))
    return read_table(path), path


def prepare(cfg):
    """``(cfg, builder, index)`` for training: value maps completed and recorded in the returned config."""
    maps = {k: dict(v) for k, v in cfg.prompts.value_maps.items()}
    if cfg.data.preset:
        preset = presets.PRESET_TABLE[cfg.data.preset]
        if preset.class_words and preset.classes_column not in maps:
            maps[preset.classes_column] = dict(preset.class_words)
    builder = PromptBuilder(cfg.prompts.template or "", maps)
    local_main = os.environ.get("LOCAL_RANK", "0") == "0"  # one bar per machine under torchrun/accelerate
    index = index_dataset(cfg.data, builder, progress=cfg.logging.progress and local_main)
    for column in builder.columns:
        if column not in maps:
            maps[column] = {v: v for v in sorted({normalize_value(r.row.get(column)) for r in index.records})}
    cfg = dataclasses.replace(cfg, prompts=dataclasses.replace(cfg.prompts, value_maps=maps))
    return cfg, from_config(cfg.prompts), index


def index_dataset(data_cfg, builder: PromptBuilder, progress: bool = True) -> DatasetIndex:
    """Resolve every row to an image, a tone and a caption; bad images error or are skipped, rows without
    a tone or a needed value are left out and counted. ``progress``: a bar while the images are checked."""
    table = sources.load_table(data_cfg)
    source = table.origin.get("metadata") or table.origin.get("dataset") or "the metadata"
    needed = builder.columns if builder.template else [data_cfg.caption_column]
    need_tone = data_cfg.tone_column in needed or data_cfg.balance != "none"
    columns = list(dict.fromkeys(k for r in table.rows for k in r))
    missing = [c for c in needed if c not in columns and not (need_tone and c == data_cfg.tone_column)]
    if missing:
        what = "prompt template" if builder.template else "data.caption_column"
        raise DataError(f"{source}: column(s) {', '.join(missing)} needed by the {what} not found; "
                        f"available columns: {', '.join(columns)}")
    if need_tone:
        tones.resolve_tones(table, data_cfg, builder.value_maps.get(data_cfg.tone_column), source)
    if not builder.template:
        _refuse_empty_captions(table, data_cfg.caption_column, source)
    for column in needed:
        table.keep([bool(r.get(column)) for r in table.rows], f"no {column} value")
    index = _records(table, data_cfg, builder, progress)
    index.report = _report(table, index, data_cfg, builder)
    return index


def _refuse_empty_captions(table: Table, column: str, source) -> None:
    """Captions come from ``column``: a row without one is a data error, named (not silently dropped)."""
    empty = [k for k, r in zip(table.keys, table.rows) if column in r and not str(r[column]).strip()]
    if empty:
        raise DataError(f"{source}: {len(empty)} row(s) have an empty {column} caption, e.g. the row of "
                        f"{', '.join(map(repr, empty[:3]))}: write their captions, or remove those rows")


def _records(table: Table, data_cfg, builder: PromptBuilder, progress: bool) -> DatasetIndex:
    folder = Path(data_cfg.dir) if data_cfg.dir else None
    index = DatasetIndex(folder, [], dict(table.missing), table.origin)
    skip = data_cfg.on_bad_image == "skip"
    rows = zip(table.rows, table.images, table.keys, _problems(table.images, data_cfg))
    for row, ref, key, problem in progress_bar(rows, total=len(table.rows), desc="checking images", unit="img",
                                               disable=not progress, delay=2.0):
        path = ref if isinstance(ref, Path) else None
        if problem is None:
            caption = builder.build(row) if builder.template else str(row.get(data_cfg.caption_column) or "")
            index.records.append(Record(path, caption, row, key, ref))
            if data_cfg.max_samples and len(index.records) >= data_cfg.max_samples:
                break
            continue
        if not skip:
            raise DataError(f"{problem} (set data.on_bad_image=skip to skip bad images)")
        index.skipped[key] = problem
    if index.skipped:
        log.warning("skipped %d bad image(s): %s", len(index.skipped), ", ".join(list(index.skipped)[:5]))
    if table.left_out:
        log.warning("left out %s", "; ".join(f"{n} ({why})" for why, n in table.left_out.items()))
    if not index.records:
        raise DataError(f"{folder or index.origin.get('dataset')}: no usable images ({len(index.skipped)} skipped, "
                        f"{sum(table.left_out.values())} left out: {dict(table.left_out)})")
    return index


def _report(table: Table, index: DatasetIndex, data_cfg, builder: PromptBuilder) -> dict:
    """What training used, for the summary and the card: source, counts (tone words), tone sources, licence."""
    report = {"source": table.origin, "images": len(index.records), "left_out": dict(table.left_out),
              "skipped_images": len(index.skipped), "tone": table.tone}
    tone_col, diag_col = data_cfg.tone_column, data_cfg.diagnosis_column
    rows = [r.row for r in index.records]
    words = builder.value_maps.get(tone_col) or {}
    tone_of = {id(r): words.get(normalize_value(r.get(tone_col)), normalize_value(r.get(tone_col))) for r in rows}
    if rows and tone_col in rows[0] and diag_col in rows[0]:
        counts: dict = defaultdict(Counter)
        for r in rows:
            counts[tone_of[id(r)]][r[diag_col]] += 1
        report["tone_x_diagnosis"] = {t: dict(c) for t, c in counts.items()}
        report["diagnosis_column"] = diag_col
    if table.tone:  # counted over the rows used (rows left out for another reason are not in them)
        sources = Counter(r.get("tone_source", "") for r in rows)
        table.tone.update(given=sources["given"], estimated=sources["estimated"])
        table.tone["by_group"] = {t: dict(Counter(r.get("tone_source", "") for r in rows if tone_of[id(r)] == t))
                                  for t in dict.fromkeys(tone_of.values())}
    if data_cfg.preset:
        report["licence"] = presets.licence_summary(presets.PRESET_TABLE[data_cfg.preset], rows)
    return report


PARALLEL_CHECK = 4000  # images: from here on, their checks are spread over the CPUs


def _problems(refs: list, data_cfg) -> Iterator[str | None]:
    """Each image's problem (None: readable), in order. Images that passed before and have not changed since
    are not decoded again (``checked``); many images are checked by a pool of processes."""
    paths = [r for r in refs if isinstance(r, Path)]
    if data_cfg.max_samples or not paths:  # a sample: checked lazily, the loop stops early
        return (None if isinstance(r, InTable) else _check_image(r) for r in refs)
    record = CheckRecord(folder_of(paths))
    todo = list(dict.fromkeys(p for p in paths if not record.known_good(p)))
    cpus = min(8, os.cpu_count() or 1)
    found: dict[Path, str | None] = {}
    if len(todo) >= PARALLEL_CHECK and cpus >= 2:
        with ProcessPoolExecutor(cpus, mp_context=multiprocessing.get_context("fork")) as pool:
            found = dict(zip(todo, pool.map(_check_image, todo, chunksize=256)))
    return _checked(refs, set(todo), found, record)


def _checked(refs: list, todo: set, found: dict, record: CheckRecord) -> Iterator[str | None]:
    """``_problems``' answers, checking in turn what the pool did not; the record is saved with the last
    answer (a consumer such as ``zip`` asks no further)."""
    for i, ref in enumerate(refs):
        problem = None
        if not isinstance(ref, InTable) and ref in todo:
            problem = found[ref] if ref in found else _check_image(ref)
            if problem is None:
                record.add([ref])
        if i == len(refs) - 1:
            record.save()
        yield problem


def _check_image(path: Path) -> str | None:
    """The image's problem, or None. ``verify()`` checks the structure (PNG checksums) but not JPEG data, so
    the image is decoded too: a JPEG at 1/8 scale (libjpeg still reads every entropy-coded byte, so a
    truncated file fails; ~0.6 of a full decode's time on a 4000x3000 photo)."""
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            draft_jpeg(im, 1)
            im.load()
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
              rng: np.random.Generator | None = None, fit: str = "crop") -> np.ndarray:
    """Square ``resolution`` pixels, flipped or not: → float32 CHW array in [-1, 1].

    ``fit="crop"``: resize the short side to ``resolution``, crop the long side (centre, or at random with
    ``center_crop=False``). ``fit="pad"``: resize the long side to ``resolution`` and pad the short side,
    centred, with the median colour of the resized image's outermost pixels (skin, or a dermoscope's dark
    vignette, continues into the padding instead of a colour the data never shows).
    """
    image = to_rgb(image)
    w, h = image.size
    if fit == "pad":
        arr = _pad_square(image, resolution)
    else:
        scale = resolution / min(w, h)
        size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        if not center_crop:
            rng = rng or np.random.default_rng()
            left = int(rng.integers(0, size[0] - resolution + 1))
            top = int(rng.integers(0, size[1] - resolution + 1))
        arr = np.asarray(image.crop((left, top, left + resolution, top + resolution)))
    arr = arr.astype(np.float32) / 127.5 - 1.0
    if flip:
        arr = arr[:, ::-1]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _pad_square(image: Image.Image, resolution: int) -> np.ndarray:
    w, h = image.size
    scale = resolution / max(w, h)
    size = (max(1, min(resolution, round(w * scale))), max(1, min(resolution, round(h * scale))))
    arr = np.asarray(image.resize(size, Image.Resampling.BICUBIC))
    ring = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    out = np.empty((resolution, resolution, 3), dtype=np.uint8)
    out[:] = np.median(ring, axis=0).round().astype(np.uint8)
    top, left = (resolution - size[1]) // 2, (resolution - size[0]) // 2
    out[top:top + size[1], left:left + size[0]] = arr
    return out


def decode_size(data_cfg) -> tuple[int | None, bool]:
    """(``size``, ``cover``) of ``tables.draft_jpeg`` for the transform of ``data_cfg``: the short side
    (crop) or the long side (pad) must stay at least ``data.resolution``; None with ``data.decode=full``."""
    return (data_cfg.resolution if data_cfg.decode == "draft" else None), data_cfg.fit == "crop"


def load_pixels(record: Record, data_cfg, flip: bool, rng: np.random.Generator | None = None,
                center_crop: bool | None = None) -> np.ndarray:
    """The record's image decoded as ``data.decode`` says and transformed: float32 CHW in [-1, 1]."""
    size, cover = decode_size(data_cfg)
    crop = data_cfg.center_crop if center_crop is None else center_crop
    try:
        return transform(record.open(size, cover), data_cfg.resolution, crop, flip, rng, data_cfg.fit)
    except OSError as exc:
        raise DataError(f"image {record.path or record.key} is unreadable: {exc}") from None


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
        pixels = load_pixels(record, self.cfg, flip, rng)
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
