"""Cached VAE latents and text embeddings: encode once, train without the VAE (and frozen text encoder).

Per image (and per flip when ``data.random_flip``) the cache holds the VAE posterior's mean and std; the
loop draws ``(mean + std · eps) · scaling_factor`` with each sample's own ``eps``, so a run with the cache
computes the same losses as one without. Text embeddings are cached per distinct caption, plus the empty
prompt (caption dropout), only while the text encoder is frozen.

Files are safetensors under ``speed.cache_dir`` (default ``<cache>/latents``), named by a hash of what
they depend on: the model files, the image files (path, size, mtime) and the transform settings for
latents; the text-encoder and tokenizer files and the captions for embeddings. Any change gives a new
name: a stale cache is never read.
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

from ..core.errors import DataError
from ..core.fsutil import atomic_path
from . import dataset as data

log = logging.getLogger(__name__)
FORMAT = 1
CHUNK = 8  # images per encoder call (never 1 unless the dataset has 1: batch-1 kernels differ)
META_KEY = "dermdiff_lora_cache"


def cache_enabled(cfg) -> bool:
    """``speed.cache_latents``: on, off, or auto = on unless random crops (a cache would freeze one)."""
    mode = cfg.speed.cache_latents
    return mode == "on" or (mode == "auto" and cfg.data.center_crop)


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
            "resolution": data_cfg.resolution, "center_crop": data_cfg.center_crop,
            "random_flip": data_cfg.random_flip, "dtype": str(dtype)}


def text_description(model_folder: Path, index: data.DatasetIndex, dtype) -> dict:
    return {"format": FORMAT, "model": str(Path(model_folder).resolve()),
            "text_encoder": files_digest(Path(model_folder) / "text_encoder"),
            "tokenizer": files_digest(Path(model_folder) / "tokenizer"),
            "captions": [r.caption for r in index.records], "dtype": str(dtype)}


def cache_paths(cfg, model_folder: Path, index: data.DatasetIndex, dtype) -> dict[str, Path]:
    """The latent file and (with a frozen text encoder) the embedding file this run reads or writes."""
    root = cache_root(cfg)
    paths = {"latents": root / f"latents-{_digest(latents_description(model_folder, index, cfg.data, dtype))}"
                                ".safetensors"}
    if not cfg.lora.text_encoder:
        paths["text"] = root / f"text-{_digest(text_description(model_folder, index, dtype))}.safetensors"
    return paths


# -------------------------------------------------------------------------------------------- encoding
def _chunks(n: int) -> list[tuple[int, int]]:
    starts = list(range(0, n, CHUNK))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def _pixels(record: data.Record, data_cfg, flip: bool) -> np.ndarray:
    try:
        return data.transform(record.open(), data_cfg.resolution, True, flip)
    except OSError as exc:
        raise DataError(f"image {record.path or record.key} is unreadable: {exc}") from None


def encode_latents(vae, index: data.DatasetIndex, data_cfg, device, dtype, progress: bool = True) -> dict:
    """``{"mean", "std"}``: [images, flips (1 or 2), C, h, w] in ``dtype``, on the CPU."""
    import torch

    from ..core.progress import progress as progress_bar

    flips = (False, True) if data_cfg.random_flip else (False,)
    means, stds = [], []
    chunks = _chunks(len(index.records))
    for start, stop in progress_bar(chunks, desc="caching latents", disable=not progress, unit="chunk"):
        records = index.records[start:stop]
        per_flip = []
        for flip in flips:
            pixels = torch.from_numpy(np.stack([_pixels(r, data_cfg, flip) for r in records]))
            with torch.no_grad():
                dist = vae.encode(pixels.to(device, dtype)).latent_dist
            per_flip.append((dist.mean.cpu(), dist.std.cpu()))
        means.append(torch.stack([m for m, _ in per_flip], dim=1))
        stds.append(torch.stack([s for _, s in per_flip], dim=1))
    return {"mean": torch.cat(means).contiguous(), "std": torch.cat(stds).contiguous()}


def encode_texts(text_encoder, tokenizer, index: data.DatasetIndex, device, dtype) -> dict:
    """``{"embeddings"}`` per distinct caption, ``{"caption_index"}`` per image, ``{"empty"}`` prompt."""
    import torch

    captions = sorted({r.caption for r in index.records})
    texts = captions + [""]
    ids = torch.stack([data.tokenize(tokenizer, t) for t in texts])
    outs = []
    for start, stop in _chunks(len(texts)):
        with torch.no_grad():
            outs.append(text_encoder(ids[start:stop].to(device), return_dict=False)[0].to(dtype).cpu())
    hidden = torch.cat(outs)
    position = {c: i for i, c in enumerate(captions)}
    return {"embeddings": hidden[:-1].contiguous(), "empty": hidden[-1].contiguous(),
            "caption_index": torch.tensor([position[r.caption] for r in index.records], dtype=torch.int64)}


def write(path: Path, tensors: dict, description: dict) -> None:
    """Atomically: a temporary file in the same folder, then ``os.replace``."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(description)})


def read(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own types for truncated files
        raise DataError(f"latent cache {path} is unreadable ({exc}); delete it to rebuild it") from None


# ---------------------------------------------------------------------------------------------- training
class CachedDataset:
    """``data.ImageCaptionDataset`` with latents (and text embeddings) from the cache: same ``(index,
    sample_seed)`` keys, same flip decision per sample seed."""

    def __init__(self, index: data.DatasetIndex, data_cfg, tokenizer, latents: dict, text: dict | None):
        self.index, self.cfg, self.tokenizer = index, data_cfg, tokenizer
        self.mean, self.std = latents["mean"], latents["std"]
        self.text = text

    def __len__(self) -> int:
        return len(self.index.records)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        i, sample_seed = key
        rng = np.random.default_rng(sample_seed)
        flip = bool(self.cfg.random_flip and rng.random() < 0.5)
        variant = int(flip) if self.cfg.random_flip else 0
        item: dict[str, Any] = {"latent_mean": self.mean[i, variant], "latent_std": self.std[i, variant],
                                "index": i, "flip": flip, "seed": sample_seed}
        if self.text is not None:
            item["encoder_hidden_states"] = self.text["embeddings"][self.text["caption_index"][i]]
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


def load_or_build(run) -> tuple[dict, dict | None]:
    """The run's cached latents (and embeddings), encoded by the main process where missing."""
    cfg, acc, parts = run.cfg, run.accelerator, run.parts
    paths = cache_paths(cfg, parts.folder, run.index, run.weight_dtype)
    if acc.is_main_process:
        progress = cfg.logging.progress
        if not paths["latents"].is_file():
            log.info("encoding %d images into the latent cache %s", len(run.index.records), paths["latents"])
            tensors = encode_latents(parts.vae, run.index, cfg.data, acc.device, run.weight_dtype, progress)
            write(paths["latents"], tensors, _summary(cfg, run))
        if "text" in paths and not paths["text"].is_file():
            tensors = encode_texts(parts.text_encoder, parts.tokenizer, run.index, acc.device, run.weight_dtype)
            write(paths["text"], tensors, _summary(cfg, run))
    acc.wait_for_everyone()
    latents = read(paths["latents"])
    text = read(paths["text"]) if "text" in paths else None
    expected = len(run.index.records)
    if latents["mean"].shape[0] != expected:
        raise DataError(f"latent cache {paths['latents']} holds {latents['mean'].shape[0]} images, the "
                        f"dataset {expected}; delete it to rebuild it")
    return latents, text


def _summary(cfg, run) -> dict:
    return {"format": FORMAT, "model_base": cfg.model.base, "data_dir": str(run.index.folder),
            "images": len(run.index.records), "resolution": cfg.data.resolution,
            "random_flip": cfg.data.random_flip, "dtype": str(run.weight_dtype)}


def attach(run) -> None:
    """Train from the cache: swap in the cached dataset; move the VAE (and frozen text encoder) to the CPU."""
    latents, text = load_or_build(run)
    run.dataset = CachedDataset(run.index, run.cfg.data, run.parts.tokenizer, latents, text)
    run.offloaded = ["vae"] + (["text_encoder"] if text is not None else [])
    if text is not None:
        run.empty_embedding = text["empty"]
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
