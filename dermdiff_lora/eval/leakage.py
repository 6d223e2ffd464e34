"""Held-out images that are copies of training images (leakage), kept out of the memorisation threshold.

A held-out image that is a copy of a training image (the same photo filed under another id, mirrored or
re-encoded) matches it with cosine ~1, and a few such copies push the 99th-percentile threshold to 1.0, so
nothing generated is ever flagged. Copies are found two ways: the pairs of a duplicates list (``audit``'s
``duplicates.csv`` and a preset's own list; matched by the metadata's file value or the image id, through
groups of copies) and the finder of ``data.duplicates`` run on the held-out and training images themselves
(exact, mirrored, near copies). Each leaked held-out image is left out of the threshold and reported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..data import duplicates as dup
from .memorization import l2_normalise

ORDER = {"exact": 0, "mirror": 1, "near": 2, "listed": 3}


@dataclass(frozen=True)
class Leak:
    """Held-out item ``heldout`` is a copy of training item ``train`` (indices), found as ``kind``."""

    heldout: int
    train: int
    kind: str
    distance: int | None


def _names(item) -> list[str]:
    return [str(n) for n in (getattr(item, "key", None), item.image_id) if n is not None]


def listed_leaks(real: Sequence, train: Sequence, pairs: Iterable[tuple[str, str]]) -> list[Leak]:
    """Held-out items in one group of copies (union-find over ``pairs``) with a training item."""
    groups = dup.group_sets(pairs)
    if not groups.parent:
        return []
    train_of_root: dict = {}
    for j, item in enumerate(train):
        for name in _names(item):
            if name in groups.parent:
                train_of_root.setdefault(groups.find(name), j)
    leaks = []
    for i, item in enumerate(real):
        roots = [groups.find(n) for n in _names(item) if n in groups.parent]
        found = [train_of_root[r] for r in roots if r in train_of_root]
        if found:
            leaks.append(Leak(i, min(found), "listed", None))
    return leaks


def found_leaks(real_images: Sequence[Image.Image], train_images: Sequence[Image.Image],
                near_cutoff: int = dup.NEAR_CUTOFF) -> list[Leak]:
    """Held-out images the finder pairs with a training image (the closest kind, then distance, per image)."""
    real_prints = [dup.fingerprint(im) for im in real_images]
    train_prints = [dup.fingerprint(im) for im in train_images]
    pairs = dup.find_between([str(i) for i in range(len(real_prints))], real_prints,
                             [str(j) for j in range(len(train_prints))], train_prints, near_cutoff)
    return [Leak(int(p.id_a), int(p.id_b), p.kind, p.distance) for p in pairs]


def best_per_image(leaks: Iterable[Leak]) -> dict[int, Leak]:
    """One leak per held-out image: exact before mirror before near before listed, then the closest."""
    best: dict[int, Leak] = {}
    for leak in sorted(leaks, key=lambda x: (ORDER[x.kind], x.distance or 0, x.train)):
        best.setdefault(leak.heldout, leak)
    return best


def report(leaks: dict[int, Leak], real: Sequence, train: Sequence, features: tuple[np.ndarray, np.ndarray],
           train_features: np.ndarray, threshold: float | None) -> dict:
    """``count``, ``by_kind`` and one entry per leaked held-out image: ids, kind, pHash distance, its cosine
    to that training image (over the image and its mirror) and whether that is above the threshold."""
    q, qf = (l2_normalise(f) for f in features)
    t = l2_normalise(train_features)
    images = []
    for i, leak in sorted(leaks.items()):
        cosine = float(max(q[i] @ t[leak.train], qf[i] @ t[leak.train]))
        images.append({"heldout": real[i].key or real[i].image_id, "train": train[leak.train].key or train[leak.train].image_id,
                       "kind": leak.kind, "distance": leak.distance, "cosine": cosine,
                       "above_threshold": None if threshold is None else cosine > threshold})
    return {"count": len(images), "by_kind": dict(Counter(x["kind"] for x in images)),
            "left_out_of_threshold": len(images), "images": images}


def warning(leakage: dict) -> str | None:
    """The one-line warning for a result with leaked held-out images (None without)."""
    if not leakage or not leakage.get("count"):
        return None
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(leakage["by_kind"].items()))
    return (f"{leakage['count']} held-out image(s) are copies of training images ({kinds}): left out of the "
            "memorisation threshold and listed in eval.json under memorisation.leakage; the held-out set "
            "leaks (split with `dermdiff-lora split --duplicates`)")
