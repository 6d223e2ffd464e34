"""Metadata tables: read a .csv / .tab / .jsonl / .parquet file into rows of strings, find images in folders.

A ``Table`` is what every source (imagefolder, metadata + image folders, preset, ``datasets`` dataset)
becomes: one row of strings per image, where its image is, a key per row (the metadata's file value, used
to join the audit's tones), and what was left out and why. Input files are only ever read.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..core.errors import DataError
from ..core.prompts import normalize_value

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
FILE_COLUMNS = ("file_name", "image_name", "image", "file", "filename")
METADATA_SUFFIXES = (".csv", ".tab", ".tsv", ".jsonl", ".parquet")  # .tab: Dataverse's tab-separated ingest


@dataclass(frozen=True)
class InTable:
    """An image stored inside a dataset table (bytes or a path), opened by ``opener(index, size, cover)``
    (``size``/``cover``: as ``draft_jpeg``'s)."""

    opener: Callable[[int, int | None, bool], Image.Image]
    index: int


ImageRef = Path | InTable


def open_image(ref: ImageRef, size: int | None = None, *, cover: bool = True) -> Image.Image:
    """The image (loaded) of a file path or an in-table reference; with ``size``, a JPEG decoded at reduced
    scale (``draft_jpeg``)."""
    if isinstance(ref, InTable):
        return ref.opener(ref.index, size, cover)
    with Image.open(ref) as im:
        draft_jpeg(im, size, cover=cover)
        im.load()
        return im


def draft_jpeg(image: Image.Image, size: int | None, *, cover: bool = True) -> Image.Image:
    """Before ``load()``: have libjpeg decode at the smallest scale (1/2, 1/4 or 1/8: DCT scaling, several
    times faster on large photos) whose short side (``cover``, for a crop) or long side (for a fit inside a
    square) is still at least ``size`` pixels. Does nothing without ``size``, on other formats, on an image
    already loaded, or when no reduction keeps that size."""
    if size is None or image.format != "JPEG":  # after load() draft itself does nothing (no tiles left)
        return image
    side = min(image.size) if cover else max(image.size)
    if side >= 2 * size:
        scale = size / side
        image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
    return image


@dataclass
class Table:
    """Rows of one source with their images; ``left_out`` counts rows not used, by reason."""

    rows: list[dict[str, str]]
    images: list[ImageRef]
    keys: list[str]
    file_column: str
    origin: dict = field(default_factory=dict)  # what was read (kind, files, preset, revision); no secrets
    left_out: Counter = field(default_factory=Counter)
    missing: dict[str, str] = field(default_factory=dict)  # key -> problem, for on_bad_image=skip
    tone: dict | None = None  # where the tone of each row came from (data.tones.resolve_tones)
    licence: dict | None = None

    def keep(self, mask: list[bool], reason: str | None) -> None:
        """Drop the rows whose mask is False, counting them under ``reason`` (None: not counted)."""
        dropped = mask.count(False)
        if dropped:
            if reason:
                self.left_out[reason] += dropped
            self.rows = [r for r, k in zip(self.rows, mask) if k]
            self.images = [r for r, k in zip(self.images, mask) if k]
            self.keys = [r for r, k in zip(self.keys, mask) if k]


def cell(value: object) -> str:
    """A table cell as the string a CSV reader would give: text as it is, missing/NaN ``""``, 2.0 ``"2"``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    return normalize_value(value)


def read_table(path: Path) -> list[dict[str, str]]:
    """Rows of a .csv (or tab-separated .tab/.tsv), .jsonl or .parquet file; every value a string (``""`` when
    missing)."""
    if path.suffix not in METADATA_SUFFIXES:
        raise DataError(f"metadata file {path} must end in {', '.join(METADATA_SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"metadata file {path} does not exist (check data.dir / data.metadata)")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        elif path.suffix == ".jsonl":
            rows = [json.loads(line) for line in _text(path).splitlines() if line.strip()]
        else:
            text = _text(path)
            rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(text)))
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - csv, json, arrow and decoding errors: one line
        raise DataError(f"{path}: cannot parse ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not rows:
        raise DataError(f"{path} has no rows: the dataset is empty")
    if not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: every line must be a JSON object (one row per image)")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return [{str(k): cell(row.get(k)) for k in columns} for row in rows]


def _text(path: Path) -> str:
    """The file as UTF-8 (a byte-order mark is dropped); other bytes are refused naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: bytes that are not UTF-8 ({data[exc.start:exc.start + 4]!r}); save "
                        "the file as UTF-8 (e.g. from a spreadsheet: CSV UTF-8)") from None


def sniff_delimiter(text: str) -> str:
    """``,``, ``;`` or tab: whichever splits the header line most (spreadsheets in many locales write ``;``)."""
    header = text.split("\n", 1)[0]
    return max((",", ";", "\t"), key=header.count) if header else ","


def check_keys(keys: list[str], source: Path | str, column: str) -> None:
    """File names must be unique and relative inside the dataset (no absolute path, no ``..``): a name
    from a stranger's metadata never reaches outside the folders read or written."""
    for i, key in enumerate(keys):
        parts = Path(key).parts
        if Path(key).is_absolute() or ".." in parts or key.startswith("~"):
            raise DataError(f"{source}, row {i + 1}: {column} {key!r} is not a relative path inside the dataset "
                            "(absolute paths and '..' are refused); give file names relative to the image folder")
    seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in seen:
            raise DataError(f"{source}, rows {seen[key] + 1} and {i + 1}: both name {column} {key!r}; each image "
                            "must be listed once (remove or rename the duplicate rows)")
        seen[key] = i


def find_metadata(folder: Path) -> Path:
    """``metadata.jsonl``, else ``metadata.csv``, else ``metadata.parquet`` in an imagefolder."""
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist (set data.dir to an imagefolder)")
    for name in ("metadata.jsonl", "metadata.csv", "metadata.parquet"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder} has no metadata.jsonl or metadata.csv (one row per image, with a "
                    "file_name or image_name column)")


def pick_file_column(columns: list[str], configured: str, source: Path | str) -> str:
    """``configured``, or with ``"auto"`` the first of FILE_COLUMNS present; DataError lists the columns."""
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


def find_image(folder: Path, name: str, suffix: str = "") -> Path | None:
    """``name`` (+ ``suffix``) in ``folder``; a bare stem (ISIC's image_name) tries the image suffixes."""
    if not name:
        return None
    path = folder / f"{name}{suffix}"
    if path.is_file():
        return path
    if not Path(name).suffix:
        for ext in IMAGE_SUFFIXES:
            for candidate in (folder / f"{name}{ext}", folder / f"{name}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def find_in_folders(folders: list[Path], name: str, suffix: str = "") -> Path | None:
    """The first folder's match of ``find_image``."""
    for folder in folders:
        if (found := find_image(folder, name, suffix)) is not None:
            return found
    return None


class FolderIndex:
    """``find_in_folders`` for many names: each folder listed once (one ``scandir`` instead of a ``stat``
    per name and suffix), names in subfolders and odd cases answered by ``find_image`` itself."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self.listing = [{e.name for e in os.scandir(f) if e.is_file()} if f.is_dir() else set() for f in folders]

    def find(self, name: str, suffix: str = "") -> Path | None:
        if not name:
            return None
        if "/" in name or os.sep in name:
            return find_in_folders(self.folders, name, suffix)
        candidates = [f"{name}{suffix}"]
        if not Path(name).suffix:
            candidates += [f"{name}{ext}" for ext in IMAGE_SUFFIXES] + [f"{name}{ext.upper()}" for ext in IMAGE_SUFFIXES]
        for folder, names in zip(self.folders, self.listing):
            for candidate in candidates:
                if candidate in names:
                    return folder / candidate
        return None


def file_stem(key: str) -> str:
    """A key without an image suffix (``a.jpg`` and ``a`` name the same image)."""
    path = Path(key)
    return key[: -len(path.suffix)] if path.suffix.lower() in IMAGE_SUFFIXES else key
