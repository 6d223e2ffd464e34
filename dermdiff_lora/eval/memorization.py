"""Memorisation: is a generated image (or its mirror image) a near copy of a training image?

Each generated image's nearest training image is the one with the highest cosine similarity of
L2-normalised features, taken over the image and its horizontal flip. A generated image is *above
threshold* when that similarity exceeds the ``PERCENTILE``-th percentile of the same similarity measured
for held-out real images (real images not trained on), whose candidate neighbours leave out training
images of the same patient (``group``: patient id, or lesion id where there is none) and known
duplicates. Pixel SSIM of the matched pair (grayscale, ``SSIM_SIZE`` px) is reported as a second measure.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from ..core.errors import ConfigError
from ..core.fsutil import atomic_save
from .features import FeatureExtractor, extract
from .fid import cell_name

PERCENTILE = 99.0
SSIM_SIZE = 64
TOP_K = 5


@dataclass
class Match:
    """Nearest training image ``train`` of query image ``query`` (indices); ``flipped``: matched via the
    query's mirror image. ``train`` is -1 and ``cosine`` NaN when every candidate was excluded."""

    query: int
    train: int
    cosine: float
    flipped: bool
    ssim: float | None = None

    def as_dict(self) -> dict:
        """JSON-ready dict (NaN cosine -> None)."""
        out = asdict(self)
        out["cosine"] = None if np.isnan(self.cosine) else float(self.cosine)
        return out


def l2_normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    f = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.where(norms > 0, norms, 1.0)


def mirrored(images: Sequence[Image.Image]) -> list[Image.Image]:
    """Each image flipped left to right."""
    return [ImageOps.mirror(image.convert("RGB")) for image in images]


def features_with_flip(module: FeatureExtractor, images: Sequence[Image.Image],
                       batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Features of the images and of their mirror images."""
    return extract(module, images, batch_size), extract(module, mirrored(images), batch_size)


def nearest(query: np.ndarray, query_flipped: np.ndarray, train: np.ndarray,
            exclude: np.ndarray | None = None, chunk: int = 1024) -> list[Match]:
    """Per query row, the training row of highest cosine similarity over the query and its flip
    (the unflipped one wins a tie).

    ``exclude`` (Q, T) bool marks pairs that may not match (same patient, known duplicates).
    """
    if len(train) == 0:
        raise ConfigError("memorisation needs at least one training image")
    t = l2_normalise(train)
    q, qf = l2_normalise(query), l2_normalise(query_flipped)
    matches: list[Match] = []
    for start in range(0, len(q), chunk):
        rows = slice(start, start + chunk)
        sims = np.stack([q[rows] @ t.T, qf[rows] @ t.T])  # (2, rows, T)
        if exclude is not None:
            sims[:, exclude[rows]] = -np.inf
        use_flip = sims[1].max(axis=1) > sims[0].max(axis=1)
        best = np.where(use_flip[:, None], sims[1], sims[0])
        idx = best.argmax(axis=1)
        for r, (j, flip) in enumerate(zip(idx, use_flip)):
            cosine = float(best[r, j])
            ok = np.isfinite(cosine)
            matches.append(Match(start + r, int(j) if ok else -1, cosine if ok else float("nan"),
                                 bool(flip) and ok))
    return matches


def exclusion_mask(heldout_groups: Sequence[Hashable | None], train_groups: Sequence[Hashable | None],
                   heldout_ids: Sequence[Hashable | None] | None = None,
                   train_ids: Sequence[Hashable | None] | None = None,
                   duplicates: Iterable[tuple[Hashable, Hashable] | Hashable] = ()) -> np.ndarray:
    """(H, T) bool: held-out i may not match training j.

    Excluded: same group (both not None); a pair (a, b) in ``duplicates`` (either order, by id); and any
    pair involving an id listed alone in ``duplicates``.
    """
    hg, tg = np.array(heldout_groups, dtype=object), np.array(train_groups, dtype=object)
    mask = (hg[:, None] == tg[None, :]) & (hg[:, None] != None) & (tg[None, :] != None)  # noqa: E711
    duplicates = list(duplicates)
    if not duplicates:
        return mask
    if heldout_ids is None or train_ids is None:
        raise ConfigError("duplicates are given by image id: pass heldout_ids and train_ids too")
    rows, cols = _positions(heldout_ids), _positions(train_ids)
    for d in duplicates:
        if isinstance(d, tuple):
            for a, b in ((d[0], d[1]), (d[1], d[0])):
                mask[np.ix_(rows.get(a, []), cols.get(b, []))] = True
        else:
            mask[rows.get(d, []), :] = True
            mask[:, cols.get(d, [])] = True
    return mask


def _positions(ids: Sequence[Hashable | None]) -> dict[Hashable, list[int]]:
    """id -> the indices where it occurs (None ids left out)."""
    out: dict[Hashable, list[int]] = {}
    for i, key in enumerate(ids):
        if key is not None:
            out.setdefault(key, []).append(i)
    return out


def heldout_threshold(heldout: np.ndarray, heldout_flipped: np.ndarray, train: np.ndarray,
                      exclude: np.ndarray | None = None, percentile: float = PERCENTILE) -> dict:
    """``percentile``-th percentile of held-out images' nearest-training cosine (rows with every training
    image excluded are skipped); ``threshold`` is None when no held-out image is left."""
    sims = [m.cosine for m in nearest(heldout, heldout_flipped, train, exclude) if not np.isnan(m.cosine)]
    threshold = float(np.percentile(sims, percentile)) if sims else None
    return {"threshold": threshold, "percentile": percentile, "n_heldout": len(heldout),
            "n_heldout_used": len(sims)}


def pixel_ssim(a: Image.Image, b: Image.Image, size: int = SSIM_SIZE) -> float:
    """SSIM of two images as grayscale at ``size`` x ``size`` (PIL bicubic), data range 1."""
    from skimage.metrics import structural_similarity

    def gray(image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("L").resize((size, size), Image.BICUBIC), dtype=np.float64) / 255.0

    return float(structural_similarity(gray(a), gray(b), data_range=1.0))


def add_ssim(matches: Sequence[Match], queries: Sequence[Image.Image], train: Sequence[Image.Image],
             size: int = SSIM_SIZE) -> None:
    """Fill ``ssim`` of each match, comparing the mirror image of the query where it matched flipped."""
    for m in matches:
        if m.train >= 0:
            query = ImageOps.mirror(queries[m.query].convert("RGB")) if m.flipped else queries[m.query]
            m.ssim = pixel_ssim(query, train[m.train], size)


def _summary(matches: Sequence[Match], threshold: float | None, top_k: int) -> dict:
    """Threshold, count and share above it, highest cosine and the ``top_k`` closest pairs of ``matches``."""
    cosines = np.array([m.cosine for m in matches], dtype=np.float64)
    above = int(np.sum(cosines > threshold)) if threshold is not None else None
    ranked = sorted((m for m in matches if not np.isnan(m.cosine)), key=lambda m: -m.cosine)
    return {"n_generated": len(matches), "threshold": threshold, "above_threshold": above,
            "share_above_threshold": above / len(matches) if above is not None and matches else None,
            "max_cosine": ranked[0].cosine if ranked else None,
            "top": [m.as_dict() for m in ranked[:top_k]]}


def summarise(matches: Sequence[Match], cells: Sequence[Hashable], threshold: float | None,
              top_k: int = TOP_K) -> dict:
    """``{"cells": {name: summary}, "overall": summary}``; a summary has the threshold, the count and share
    of generated images above it, the highest cosine and the ``top_k`` closest pairs."""
    if len(cells) != len(matches):
        raise ConfigError("need one cell key per generated image")
    names = [cell_name(c) for c in cells]
    by_cell = {name: _summary([m for m, k in zip(matches, names) if k == name], threshold, top_k)
               for name in sorted(set(names))}
    return {"cells": by_cell, "overall": _summary(matches, threshold, top_k)}


def save_pairs_png(pairs: Sequence[tuple[Image.Image, Image.Image, float | str]],
                   path: str | os.PathLike, tile: int = 128) -> None:
    """One row per pair: generated | training, with the similarity (or given text) under it; written
    atomically (temporary file in the same folder, then ``os.replace``)."""
    if not pairs:
        raise ConfigError("no pairs to draw")
    gap, label_h = 6, 16
    canvas = Image.new("RGB", (2 * tile + 3 * gap, len(pairs) * (tile + label_h + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (generated, training, label) in enumerate(pairs):
        y = gap + row * (tile + label_h + gap)
        for col, image in enumerate((generated, training)):
            canvas.paste(image.convert("RGB").resize((tile, tile), Image.BICUBIC), (gap + col * (tile + gap), y))
        text = f"similarity {label:.4f}" if isinstance(label, (float, int)) else str(label)
        draw.text((gap, y + tile + 2), text, fill="black")
    atomic_save(path, lambda tmp: canvas.save(tmp, format="PNG"))
