"""``data.dataset``: a Hub dataset ``user/name[@revision]`` or a local parquet / imagefolder dataset, loaded
with ``datasets.load_dataset`` (its cache, its offline mode: ``HF_HUB_OFFLINE=1`` reads the cache only).

Rows become strings (class labels by name); images stay inside the dataset and are opened on demand.
``origin["cache_key"]`` is the dataset's resolved commit sha (Hub) or ``datasets``' fingerprint of the
local files, so a latent cache never outlives the data it was made from.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

from PIL import Image

from ..core.errors import DataError
from ..core.hubio import split_ref
from .tables import FILE_COLUMNS, InTable, Table, cell, draft_jpeg

log = logging.getLogger(__name__)


class _Opener:
    """Opens image ``i`` of a dataset's image column (stored undecoded: bytes or a path). Picklable."""

    def __init__(self, ds, column: str):
        self.ds, self.column = ds.select_columns([column]), column

    def __call__(self, index: int, size: int | None = None, cover: bool = True) -> Image.Image:
        item = self.ds[index][self.column] or {}
        data, path = item.get("bytes"), item.get("path")
        with Image.open(io.BytesIO(data) if data else path) as im:
            draft_jpeg(im, size, cover=cover)
            im.load()
            return im


def _load(ref: str, split: str):
    import datasets

    local = Path(ref).expanduser()
    path, revision = (str(local), None) if local.exists() else split_ref(ref)
    try:
        return datasets.load_dataset(path, split=split, revision=revision), revision
    except Exception as exc:  # noqa: BLE001 - datasets/hub errors of many types: one line each
        raise DataError(_explain(exc, ref, split)) from None


def _explain(exc: Exception, ref: str, split: str) -> str:
    from huggingface_hub import constants

    text = " ".join(str(exc).split())[:300]
    name = type(exc).__name__
    if "split" in text.lower() and ("unknown" in text.lower() or "not found" in text.lower()):
        return f"data.dataset {ref}: split {split!r} not found ({text}); set data.split"
    if constants.HF_HUB_OFFLINE and name in ("ConnectionError", "FileNotFoundError", "OfflineModeIsEnabled"):
        return (f"data.dataset {ref} is not in the datasets cache and HF_HUB_OFFLINE=1 is set: load it once "
                "with network access, or unset HF_HUB_OFFLINE")
    if name == "DatasetNotFoundError":
        return (f"data.dataset {ref} not found on {constants.ENDPOINT} (or it is private or gated: log in "
                f"with `hf auth login`): {text}")
    return f"data.dataset {ref}: cannot load it ({name}: {text})"


def _check_revision(ref: str, revision: str | None, cache_key: str, local: bool) -> None:
    """Offline, ``datasets`` reads the newest cached version whatever the revision: refuse another commit."""
    from huggingface_hub import constants

    if local or not revision or not constants.HF_HUB_OFFLINE:
        return
    if re.fullmatch(r"[0-9a-f]{40}", revision) and revision != cache_key:
        raise DataError(f"data.dataset {ref}: HF_HUB_OFFLINE=1 and the datasets cache holds commit {cache_key}, "
                        f"not {revision}: load {ref} once with network access, or unset HF_HUB_OFFLINE")
    if revision != cache_key:
        log.warning("offline: %s read from the cached commit %s (revision %s cannot be checked offline)",
                    ref, cache_key, revision)


def _image_column(ds, wanted: str, ref: str) -> str:
    import datasets

    images = [n for n, f in ds.features.items() if isinstance(f, datasets.Image)]
    if wanted != "auto":
        if wanted not in ds.features:
            raise DataError(f"data.dataset {ref}: data.image_column {wanted!r} not found; columns: "
                            f"{', '.join(ds.features)}")
        return wanted
    if not images:
        raise DataError(f"data.dataset {ref} has no image column (columns: {', '.join(ds.features)}); "
                        "set data.image_column")
    return images[0]


def _rows(ds, image_col: str) -> list[dict[str, str]]:
    import datasets

    others = [n for n in ds.features if n != image_col]
    raw = ds.select_columns(others).to_list() if others else [{} for _ in range(len(ds))]
    names = {n: f for n, f in ds.features.items() if isinstance(f, datasets.ClassLabel)}
    return [{k: names[k].int2str(v) if k in names and v is not None and v >= 0 else cell(v) for k, v in r.items()}
            for r in raw]


def _keys(rows: list[dict[str, str]], ds, image_col: str, file_column: str) -> tuple[list[str], str]:
    """Row keys (to join the audit's tones): the file column, else the image's stored path, else the row."""
    columns = list(rows[0]) if rows else []
    wanted = [file_column] if file_column != "auto" else list(FILE_COLUMNS)
    col = next((c for c in wanted if c in columns), None)
    if col:
        return [r[col] for r in rows], col
    stored = ds.data.column(image_col).combine_chunks().field("path").to_pylist()
    paths = [Path(p or "").name for p in stored]
    if all(paths) and len(set(paths)) == len(paths):
        for r, p in zip(rows, paths):
            r["file_name"] = p
        return paths, "file_name"
    keys = [f"row-{i:06d}" for i in range(len(rows))]
    for r, k in zip(rows, keys):
        r["file_name"] = k
    return keys, "file_name"


def load_hub_table(data_cfg) -> Table:
    """The rows of ``data.dataset`` (split ``data.split``) with their in-table images."""
    import datasets

    ref = data_cfg.dataset
    ds, revision = _load(ref, data_cfg.split)
    if len(ds) == 0:
        raise DataError(f"data.dataset {ref} split {data_cfg.split!r} has no rows: the dataset is empty")
    image_col = _image_column(ds, data_cfg.image_column, ref)
    ds = ds.cast_column(image_col, datasets.Image(decode=False))
    rows = _rows(ds, image_col)
    keys, file_col = _keys(rows, ds, image_col, data_cfg.file_column)
    cache_files = ds.cache_files
    cache_key = Path(cache_files[0]["filename"]).parent.name if cache_files else ds._fingerprint
    local = Path(ref).expanduser().exists()
    _check_revision(ref, revision, cache_key, local)
    origin = {"kind": "datasets", "dataset": Path(ref).name if local else split_ref(ref)[0],
              "revision": revision, "split": data_cfg.split, "cache_key": cache_key,
              **({} if local else {"sha": cache_key})}
    opener = _Opener(ds, image_col)
    log.info("data.dataset %s: %d rows (split %s, %s)", ref, len(rows), data_cfg.split, cache_key)
    return Table(rows, [InTable(opener, i) for i in range(len(rows))], keys, file_col, origin=origin)
