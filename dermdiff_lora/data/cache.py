"""Cached VAE latents and text embeddings: encode once, train without the VAE (and frozen text encoder).

Per image (and per flip when ``data.random_flip``) the cache holds the VAE posterior's mean and std; the
loop draws ``(mean + std · eps) · scaling_factor`` with each sample's own ``eps``, so a run with the cache
computes the same losses as one without. Text embeddings are cached per distinct caption, plus the empty
prompt (caption dropout), only while the text encoder is frozen.

Each cache is a folder under ``speed.cache_dir`` (default ``<cache>/latents``) named by a hash of what it
depends on: the model files, the image files (path, size, mtime), the transform settings and the JPEG
decode mode for latents; the text-encoder and tokenizer files and the captions for embeddings. Any change
gives a new name: a stale cache is never read. Every process encodes its own share of the rows into its
own safetensors shard (``shards``), decoding images in DataLoader workers; all then read every row
with positional reads (``shards.Rows``), so no process waits for another while it encodes and none
holds the cache in its memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..core.progress import progress as progress_bar
from . import dataset as data
from . import shards
from .loading import loader_workers

log = logging.getLogger(__name__)
FORMAT = 2  # 2: row shards read row by row (1: one file loaded whole)
CHUNK = 8  # images per encoder call (never 1 unless the dataset has 1: batch-1 kernels differ)
META_KEY = "dermdiff_lora_cache"


def cache_enabled(cfg) -> bool:
    """``speed.cache_latents``: on, off, or auto = on unless random crops (a cache would freeze one)."""
    mode = cfg.speed.cache_latents
    return mode == "on" or (mode == "auto" and (cfg.data.center_crop or cfg.data.fit == "pad"))


def cache_root(cfg) -> Path:
    from ..core.models import cache_dir

    return Path(cfg.speed.cache_dir).expanduser() if cfg.speed.cache_dir else cache_dir() / "latents"


# ------------------------------------------------------------------------------------------------- keys
def files_digest(folder: Path) -> list:
    """``[relative path, size, mtime_ns, sha256 of small files]`` for every file under ``folder``."""
    out = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        st = path.stat()
        small = hashlib.sha256(path.read_bytes()).hexdigest() if st.st_size < 1 << 20 else None
        out.append([str(path.relative_to(folder)), st.st_size, st.st_mtime_ns, small])
    return out


def _digest(description: dict) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]


def latents_description(model_folder: Path, index: data.DatasetIndex, data_cfg, dtype) -> dict:
    images = []
    for r in index.records:
        if r.path is None:  # inside a dataset table: its revision sha (or local fingerprint) and row key
            images.append([index.origin.get("cache_key"), r.key])
            continue
        st = r.path.stat()
        images.append([str(r.path.resolve()), st.st_size, st.st_mtime_ns])
    return {"format": FORMAT, "model": str(Path(model_folder).resolve()),
            "vae": files_digest(Path(model_folder) / "vae"), "images": images,
            "resolution": data_cfg.resolution, "center_crop": data_cfg.center_crop, "fit": data_cfg.fit,
            "decode": data_cfg.decode, "random_flip": data_cfg.random_flip, "dtype": str(dtype)}


def text_description(model_folder: Path, index: data.DatasetIndex, dtype) -> dict:
    return {"format": FORMAT, "model": str(Path(model_folder).resolve()),
            "text_encoder": files_digest(Path(model_folder) / "text_encoder"),
            "tokenizer": files_digest(Path(model_folder) / "tokenizer"),
            "captions": [r.caption for r in index.records], "dtype": str(dtype)}


def cache_paths(cfg, model_folder: Path, index: data.DatasetIndex, dtype) -> dict[str, Path]:
    """The latent folder and (with a frozen text encoder) the embedding folder this run reads or writes."""
    root = cache_root(cfg)
    paths = {"latents": root / f"latents-{_digest(latents_description(model_folder, index, cfg.data, dtype))}"}
    if not cfg.lora.text_encoder:
        paths["text"] = root / f"text-{_digest(text_description(model_folder, index, dtype))}"
    return paths


# -------------------------------------------------------------------------------------------- encoding
def _chunks(n: int) -> list[tuple[int, int]]:
    starts = list(range(0, n, CHUNK))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


class _Pixels:
    """Unflipped, centre-cropped (or padded) pixels of each record: what the cache encodes, decoded in
    DataLoader workers."""

    def __init__(self, index: data.DatasetIndex, data_cfg):
        self.records, self.cfg = index.records, data_cfg

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        import torch

        return torch.from_numpy(data.load_pixels(self.records[i], self.cfg, False, center_crop=True))


def _stack(items: list):
    import torch

    return torch.stack(items)


def encode_latents(vae, index: data.DatasetIndex, data_cfg, chunks: list[tuple[int, int]], device, dtype,
                   workers: int = 0) -> Iterator[tuple[int, dict]]:
    """``(first row, {"mean", "std"})`` per chunk: [rows, flips (1 or 2), C, h, w] in ``dtype``, on the CPU.
    Each image is decoded once; its mirror image is the decoded one flipped."""
    import torch

    flips = (False, True) if data_cfg.random_flip else (False,)
    loader = torch.utils.data.DataLoader(_Pixels(index, data_cfg), batch_sampler=[list(range(s, e)) for s, e in chunks],
                                         num_workers=workers, collate_fn=_stack)
    for (start, _), pixels in zip(chunks, loader):
        per_flip = []
        for flip in flips:
            with torch.no_grad():
                dist = vae.encode((pixels.flip(-1) if flip else pixels).to(device, dtype)).latent_dist
            per_flip.append((dist.mean.cpu(), dist.std.cpu()))
        yield start, {"mean": torch.stack([m for m, _ in per_flip], dim=1).contiguous(),
                      "std": torch.stack([s for _, s in per_flip], dim=1).contiguous()}


def caption_rows(index: data.DatasetIndex) -> tuple[list[str], list[int]]:
    """(the texts the embedding cache holds: the distinct captions, then the empty prompt; each record's row)."""
    captions = sorted({r.caption for r in index.records})
    position = {c: i for i, c in enumerate(captions)}
    return captions + [""], [position[r.caption] for r in index.records]


def encode_texts(text_encoder, tokenizer, texts: list[str], chunks: list[tuple[int, int]], device,
                 dtype) -> Iterator[tuple[int, dict]]:
    """``(first row, {"embeddings"})`` per chunk of ``texts``."""
    import torch

    for start, stop in chunks:
        ids = torch.stack([data.tokenize(tokenizer, t) for t in texts[start:stop]])
        with torch.no_grad():
            hidden = text_encoder(ids.to(device), return_dict=False)[0].to(dtype).cpu()
        yield start, {"embeddings": hidden.contiguous()}


def build_share(folder: Path, n: int, encode, *, processes: int = 1, process_index: int = 0,
                metadata: dict | None = None, progress: bool = False, what: str = "rows") -> bool:
    """Encode and write this process's share of rows ``[0, n)`` into ``folder`` unless they are there;
    ``encode(chunks)`` yields ``(first row, tensors)`` per chunk. True when this process encoded any."""
    mine = shards.split_chunks(_chunks(n), processes, process_index)
    if not mine or shards.cover(folder, n) is not None:
        return False
    start, stop = mine[0][0], mine[-1][1]
    path = folder / shards.shard_name(start, stop)
    if path.is_file():
        return False
    log.info("encoding %s %d-%d of %d into %s", what, start, stop, n, folder)
    bar = progress_bar(total=stop - start, desc=f"caching {what}", unit="img", disable=not progress)
    with bar:
        def chunks():
            for first, tensors in encode(mine):
                yield first, tensors
                bar.update(len(next(iter(tensors.values()))))

        shards.write_shard(path, start, stop, chunks(), {META_KEY: json.dumps(metadata or {})})
    return True


# ---------------------------------------------------------------------------------------------- training
class CachedDataset:
    """``data.ImageCaptionDataset`` with latents (and text embeddings) from the cache: same ``(index,
    sample_seed)`` keys, same flip decision per sample seed. Rows are read from the files per item."""

    def __init__(self, index: data.DatasetIndex, data_cfg, tokenizer, latents: shards.Rows,
                 text: shards.Rows | None):
        self.index, self.cfg, self.tokenizer = index, data_cfg, tokenizer
        self.latents, self.text = latents, text
        self.caption_row = caption_rows(index)[1] if text is not None else None

    def __len__(self) -> int:
        return len(self.index.records)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        i, sample_seed = key
        rng = np.random.default_rng(sample_seed)
        flip = bool(self.cfg.random_flip and rng.random() < 0.5)
        variant = int(flip) if self.cfg.random_flip else 0
        item: dict[str, Any] = {"latent_mean": self.latents.get("mean", i, variant),
                                "latent_std": self.latents.get("std", i, variant),
                                "index": i, "flip": flip, "seed": sample_seed}
        if self.text is not None and self.caption_row is not None:
            item["encoder_hidden_states"] = self.text.get("embeddings", self.caption_row[i])
        else:
            item["input_ids"] = data.tokenize(self.tokenizer, self.index.records[i].caption)
        return item

    @staticmethod
    def collate(items: list[dict]) -> dict:
        import torch

        out = {k: torch.stack([x[k] for x in items]) for k in items[0] if isinstance(items[0][k], torch.Tensor)}
        out.update(index=torch.tensor([x["index"] for x in items]),
                   flip=torch.tensor([x["flip"] for x in items]),
                   seed=torch.tensor([x["seed"] for x in items], dtype=torch.int64))
        return out


def load_or_build(run) -> tuple[shards.Rows, shards.Rows | None]:
    """The run's cached latents (and embeddings): every process encodes its share of what is missing,
    then all open every row (read per item, never loaded whole)."""
    cfg, acc, parts = run.cfg, run.accelerator, run.parts
    paths = cache_paths(cfg, parts.folder, run.index, run.weight_dtype)
    share = {"processes": getattr(acc, "num_processes", 1), "process_index": getattr(acc, "process_index", 0),
             "metadata": _summary(cfg, run)}
    n = len(run.index.records)
    workers = loader_workers(cfg.data, share["processes"])
    texts, _ = caption_rows(run.index)
    # Building must not draw from the training's random stream (its DataLoader seeds its workers from it):
    # a run that builds the cache trains exactly like one that finds it (the kill soak checks this).
    with _rng_untouched(acc.device):
        build_share(paths["latents"], n, lambda chunks: encode_latents(
            parts.vae, run.index, cfg.data, chunks, acc.device, run.weight_dtype, workers),
            progress=cfg.logging.progress and getattr(acc, "is_local_main_process", True), what="latents",
            **share)
        if "text" in paths:
            build_share(paths["text"], len(texts), lambda chunks: encode_texts(
                parts.text_encoder, parts.tokenizer, texts, chunks, acc.device, run.weight_dtype),
                what="captions", **share)
    acc.wait_for_everyone()
    latents = shards.Rows(paths["latents"], n)
    text = shards.Rows(paths["text"], len(texts)) if "text" in paths else None
    return latents, text


def _rng_untouched(device):
    """Torch's random state (CPU, and the accelerator's) as it was before the block."""
    import torch

    return torch.random.fork_rng(devices=[device] if getattr(device, "type", "cpu") == "cuda" else [])


def _summary(cfg, run) -> dict:
    return {"format": FORMAT, "model_base": cfg.model.base, "data_dir": str(run.index.folder),
            "images": len(run.index.records), "resolution": cfg.data.resolution, "fit": cfg.data.fit,
            "decode": cfg.data.decode, "random_flip": cfg.data.random_flip, "dtype": str(run.weight_dtype)}


def attach(run) -> None:
    """Train from the cache: swap in the cached dataset; move the VAE (and frozen text encoder) to the CPU."""
    latents, text = load_or_build(run)
    run.dataset = CachedDataset(run.index, run.cfg.data, run.parts.tokenizer, latents, text)
    run.offloaded = ["vae"] + (["text_encoder"] if text is not None else [])
    if text is not None:
        run.empty_embedding = text.get("embeddings", len(text) - 1)
    _move(run, "cpu")


def _move(run, device) -> None:
    import torch

    for name in run.offloaded:
        getattr(run.parts, name).to(device)
    if str(device) == "cpu" and torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def frozen_on_device(run) -> Iterator[None]:
    """The offloaded VAE / text encoder on the accelerator for the duration (validation grids)."""
    if not run.offloaded or run.accelerator.device.type == "cpu":
        yield
        return
    _move(run, run.accelerator.device)
    try:
        yield
    finally:
        _move(run, "cpu")
