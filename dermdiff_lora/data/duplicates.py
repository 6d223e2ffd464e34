"""Duplicate images: exact pixel copies, mirrored copies and near copies, and the lists that record them.

Public dermatology sets repeat images under other ids (re-uploads, mirrored or re-encoded copies). A copy on
both sides of a split leaks: a classifier is tested on its training image, and a memorisation threshold
measured on held-out images rises towards 1. Found here, by the decoded pixels:

- ``exact``: identical RGB pixels (a 128-bit BLAKE2b hash of the pixels and the size);
- ``mirror``: identical pixels after flipping left-right, top-bottom, or both (a 180-degree turn);
- ``near``: a 64-bit DCT perceptual hash (pHash: grayscale 32x32 Lanczos, 2-D DCT-II, the 8x8 lowest
  frequencies against their median, as ``imagehash.phash``) within ``NEAR_CUTOFF`` bits (Hamming) of the
  other image's in any of its 8 orientations (as is, flipped, turned by a quarter, transposed), confirmed
  by the pixels: the 32x32 RGB thumbnails (Lanczos), in the closest orientation, differ by at most
  ``NEAR_PIXELS`` levels of 255 on average. Re-encoded, resized, slightly changed copies pass, and so do
  quarter-turned ones (dermoscopy has no up: a turned copy is a copy); pHash alone is blind to colour and
  matches distinct lesions of one shape. Crops are not found.
A preset's own list (ISIC 2020's ``ISIC_2020_Training_Duplicates.csv``) adds ``listed`` pairs.

``duplicates.csv`` (``id_a, id_b, kind, distance``): ids are the metadata's file values (tones.csv's
``file``); ``distance`` is the pHash Hamming distance in bits (0..64; empty for ``listed``). Pairs join into
groups (union-find): every image of a group is a copy of another, directly or through others.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import DataError
from ..core.fsutil import atomic_write

NEAR_CUTOFF = 8  # bits of 64: pHash distance at or below which two images may be near copies
NEAR_PIXELS = 2.5  # mean absolute difference of the 32x32 RGB thumbnails (of 255) that confirms them
THUMB = 32
KINDS = ("exact", "mirror", "near", "listed")
HEADER = ["id_a", "id_b", "kind", "distance"]
FILE_NAME = "duplicates.csv"
FLIPS = ("left-right", "top-bottom", "both")  # the mirrored versions whose pixels are compared
TURNS = ("transposed", "quarter turn left", "quarter turn right", "anti-transposed")  # near search only


@dataclass(frozen=True)
class Fingerprint:
    """Hashes of one image's pixels: ``pixels`` and ``flipped`` (one per ``FLIPS``) hex digests; ``phash``
    and ``phash_turned`` (one per ``FLIPS`` + ``TURNS``: the other 7 orientations) 64-bit perceptual hashes
    as ints; ``thumb`` its 32x32 RGB thumbnail (uint8)."""

    pixels: str
    flipped: tuple[str, str, str]
    phash: int
    phash_turned: tuple[int, ...]
    thumb: np.ndarray = field(compare=False, repr=False, default_factory=lambda: np.zeros((THUMB, THUMB, 3), np.uint8))


@dataclass(frozen=True)
class Pair:
    """Two images that are copies: ``kind`` one of ``KINDS``; ``distance`` pHash bits (None: listed)."""

    id_a: str
    id_b: str
    kind: str
    distance: int | None = 0


def _flips(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return arr[:, ::-1], arr[::-1, :], arr[::-1, ::-1]


def _orientations(arr: np.ndarray) -> tuple[np.ndarray, ...]:
    """The other 7 orientations of a (square) array: its ``FLIPS``, then its ``TURNS``."""
    t = np.swapaxes(arr, 0, 1)
    return (*_flips(arr), t, t[::-1, :], t[:, ::-1], t[::-1, ::-1])


def _digest(arr: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(arr.shape, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def phash_bits(gray32: np.ndarray, hash_size: int = 8) -> int:
    """The pHash of a 32x32 grayscale array: DCT-II over both axes, the ``hash_size`` x ``hash_size``
    lowest frequencies compared with their median, packed row by row (first bit highest) into an int."""
    from scipy.fft import dct

    low = dct(dct(np.asarray(gray32, dtype=np.float64), axis=0), axis=1)[:hash_size, :hash_size]
    bits = (low > np.median(low)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def fingerprint(image: Image.Image) -> Fingerprint:
    """Hashes of the image's RGB pixels (and flips) and its pHash (and its other orientations')."""
    image = image.convert("RGB")
    rgb = np.asarray(image)
    gray = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    thumb = np.asarray(image.resize((THUMB, THUMB), Image.Resampling.LANCZOS), dtype=np.uint8)
    return Fingerprint(_digest(rgb), tuple(_digest(a) for a in _flips(rgb)),  # type: ignore[arg-type]
                       phash_bits(gray), tuple(phash_bits(a) for a in _orientations(gray)), thumb)


def pixel_difference(a: Fingerprint, b: Fingerprint) -> float:
    """Mean absolute difference (levels of 255) of the two thumbnails, ``b`` in its closest orientation."""
    ta, tb = a.thumb.astype(np.int16), b.thumb.astype(np.int16)
    return float(min(np.abs(ta - t).mean() for t in (tb, *_orientations(tb))))


def hamming(a: int, b: int) -> int:
    """Bits in which two hashes differ."""
    return (a ^ b).bit_count()


def _near(query: Sequence[Fingerprint], ref: Sequence[Fingerprint], cutoff: int,
          upper: bool) -> Iterable[tuple[int, int, int]]:
    """(i, j, distance) of query i and reference j within ``cutoff`` bits (as is or flipped) whose thumbnails
    differ by at most ``NEAR_PIXELS``; ``upper``: the same set on both sides, only j > i."""
    if not query or not ref or cutoff < 0:
        return
    q = np.array([f.phash for f in query], dtype=np.uint64)
    r = np.array([[f.phash, *f.phash_turned] for f in ref], dtype=np.uint64)  # (R, 8)
    step = max(1, (1 << 21) // len(ref))
    for start in range(0, len(q), step):
        block, offset = q[start:start + step, None], start if upper else 0
        rest = r[offset:]
        dist = np.min(np.stack([np.bitwise_count(block ^ rest[None, :, t]) for t in range(r.shape[1])]), axis=0)
        if upper:  # only j > i: the block's own triangle and what lies before it are left out
            dist[np.arange(len(block))[:, None] >= np.arange(len(rest))[None, :]] = 255
        for i, j in zip(*np.nonzero(dist <= cutoff)):
            i, j = start + int(i), offset + int(j)
            if pixel_difference(query[i], ref[j]) <= NEAR_PIXELS:
                yield i, j, int(dist[i - start, j - offset])


def _pair(a: str, b: str, kind: str, fa: Fingerprint, fb: Fingerprint) -> Pair:
    distance = min(hamming(fa.phash, p) for p in (fb.phash, *fb.phash_turned))
    return Pair(a, b, kind, distance)


def find_duplicates(ids: Sequence[str], prints: Sequence[Fingerprint], near_cutoff: int = NEAR_CUTOFF) -> list[Pair]:
    """Copies among one set of images: exact copies joined to the first of their pixels, then mirrored and
    near pairs between images not yet joined (``near_cutoff`` < 0: no near search)."""
    if len(ids) != len(prints):
        raise ValueError("one fingerprint per id")
    first: dict[str, int] = {}
    pairs, groups = [], DisjointSet()
    for i, f in enumerate(prints):
        j = first.setdefault(f.pixels, i)
        if j != i:
            pairs.append(Pair(ids[j], ids[i], "exact", 0))
            groups.union(ids[j], ids[i])
    reps = sorted(set(first.values()))
    for i in reps:
        for digest in prints[i].flipped:
            j = first.get(digest)
            if j is not None and j < i and groups.union(ids[j], ids[i]):
                pairs.append(_pair(ids[j], ids[i], "mirror", prints[j], prints[i]))
    rep_prints = [prints[i] for i in reps]
    for a, b, distance in _near(rep_prints, rep_prints, near_cutoff, upper=True):
        ia, ib = reps[a], reps[b]
        if groups.find(ids[ia]) != groups.find(ids[ib]):
            pairs.append(Pair(ids[ia], ids[ib], "near", distance))
    return pairs


def find_between(query_ids: Sequence[str], query: Sequence[Fingerprint], ref_ids: Sequence[str],
                 ref: Sequence[Fingerprint], near_cutoff: int = NEAR_CUTOFF) -> list[Pair]:
    """Every (query id, reference id) pair of copies across two sets, the closest kind of each pair only
    (exact before mirror before near)."""
    by_pixels: dict[str, list[int]] = {}
    for j, f in enumerate(ref):
        by_pixels.setdefault(f.pixels, []).append(j)
    found: dict[tuple[int, int], Pair] = {}
    for i, f in enumerate(query):
        for j in by_pixels.get(f.pixels, []):
            found[(i, j)] = Pair(query_ids[i], ref_ids[j], "exact", 0)
        for digest in f.flipped:
            for j in by_pixels.get(digest, []):
                found.setdefault((i, j), _pair(query_ids[i], ref_ids[j], "mirror", f, ref[j]))
    for i, j, distance in _near(query, ref, near_cutoff, upper=False):
        found.setdefault((i, j), Pair(query_ids[i], ref_ids[j], "near", distance))
    return [found[k] for k in sorted(found)]


class DisjointSet:
    """Union-find over hashable items (path halving, union by size)."""

    def __init__(self, items: Iterable[Hashable] = ()) -> None:
        self.parent: dict[Hashable, Hashable] = {}
        self.size: dict[Hashable, int] = {}
        for item in items:
            self.find(item)

    def find(self, item: Hashable) -> Hashable:
        """The root of ``item``'s set (added as a set of its own when new)."""
        if item not in self.parent:
            self.parent[item], self.size[item] = item, 1
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: Hashable, b: Hashable) -> bool:
        """Join the sets of ``a`` and ``b``; False when they were one already."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True

    def groups(self) -> list[list[Hashable]]:
        """Sets of two or more items, each in insertion order."""
        out: dict[Hashable, list[Hashable]] = {}
        for item in self.parent:
            out.setdefault(self.find(item), []).append(item)
        return [g for g in out.values() if len(g) > 1]


def group_sets(pairs: Iterable[Pair | tuple[str, str]]) -> DisjointSet:
    """Union-find of the pairs' ids."""
    sets = DisjointSet()
    for p in pairs:
        a, b = (p.id_a, p.id_b) if isinstance(p, Pair) else p
        sets.union(str(a), str(b))
    return sets


def merge(found: Iterable[Pair], listed: Iterable[Pair]) -> list[Pair]:
    """``found`` then the ``listed`` pairs not found (either order)."""
    out = list(found)
    seen = {frozenset((p.id_a, p.id_b)) for p in out}
    for p in listed:
        if frozenset((p.id_a, p.id_b)) not in seen:
            seen.add(frozenset((p.id_a, p.id_b)))
            out.append(p)
    return out


def summary(pairs: Sequence[Pair], near_cutoff: int = NEAR_CUTOFF) -> dict:
    """Pairs per kind, groups and images in them, and the near-copy cut-offs (for the JSON records)."""
    groups = group_sets(pairs).groups()
    return {"pairs": len(pairs), "by_kind": dict(Counter(p.kind for p in pairs)), "groups": len(groups),
            "images_in_groups": sum(len(g) for g in groups), "near_cutoff_bits": near_cutoff,
            "near_pixels": NEAR_PIXELS}


def write_csv(path: str | os.PathLike, pairs: Iterable[Pair]) -> Path:
    """Write ``duplicates.csv`` (``HEADER``) atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for p in pairs:
        writer.writerow([p.id_a, p.id_b, p.kind, "" if p.distance is None else p.distance])
    return atomic_write(path, buf.getvalue())


def _read_rows(path: Path) -> list[dict[str, str]]:
    try:
        return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it as CSV ({exc})") from None


def read_csv(path: str | os.PathLike) -> list[Pair]:
    """The pairs of a ``duplicates.csv``; DataError naming the line of a bad row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"duplicates file {path} does not exist; write it with `dermdiff-lora audit`")
    rows = _read_rows(path)
    if rows and not set(HEADER) <= set(rows[0]):
        raise DataError(f"{path}: expected columns {', '.join(HEADER)}; found {', '.join(rows[0])}")
    pairs = []
    for line, row in enumerate(rows, start=2):
        a, b, kind, dist = (str(row.get(c) or "").strip() for c in HEADER)
        if not a or not b or kind not in KINDS or not (dist == "" or dist.isdigit()):
            raise DataError(f"{path} line {line}: {row!r} should be id_a,id_b,kind,distance with kind one of "
                            f"{', '.join(KINDS)} and distance a whole number of bits (or empty)")
        pairs.append(Pair(a, b, kind, int(dist) if dist else None))
    return pairs


def read_known_list(path: str | os.PathLike) -> list[Pair]:
    """A dataset's own duplicate list (ISIC 2020: ``image_name_1,image_name_2``) as ``listed`` pairs."""
    path = Path(path)
    rows = _read_rows(path)
    if rows and not {"image_name_1", "image_name_2"} <= set(rows[0]):
        raise DataError(f"{path}: expected columns image_name_1, image_name_2; found {', '.join(rows[0])}")
    return [Pair(r["image_name_1"].strip(), r["image_name_2"].strip(), "listed", None)
            for r in rows if r["image_name_1"] and r["image_name_2"]]


def known_list_path(data_cfg) -> Path | None:
    """The preset's own duplicate list in the download (``data.preset`` with such a layout), if present."""
    from . import presets

    if not getattr(data_cfg, "preset", None) or not (data_cfg.dir or data_cfg.metadata):
        return None
    root = Path(data_cfg.dir).expanduser() if data_cfg.dir else None
    given = (root / data_cfg.metadata if root else Path(data_cfg.metadata)) if data_cfg.metadata else None
    base = root or given.parent  # type: ignore[union-attr]
    layout = presets.detect_layout(presets.PRESET_TABLE[data_cfg.preset], base, given)
    path = base / layout.duplicates if layout.duplicates else None
    return path if path is not None and path.is_file() else None


def audit_folder(dataset_dir: str | os.PathLike) -> Path:
    """Where ``audit`` writes by default: ``<dataset>_audit/`` beside the dataset folder."""
    return Path(f"{Path(dataset_dir).expanduser().resolve()}_audit")


def locate(option: str | None, *, tones: str | None = None, dirs: Sequence[str | None] = ()) -> Path | None:
    """The duplicates file to read: ``option`` (a path; ``"none"``: none), else ``duplicates.csv`` beside
    ``tones`` (the audit's tones file), else in ``<dir>_audit/`` of the first of ``dirs`` that has one."""
    if option is not None:
        if option.strip().lower() == "none":
            return None
        if not Path(option).is_file():
            raise DataError(f"--duplicates {option}: no such file; write it with `dermdiff-lora audit` "
                            "(<dataset>_audit/duplicates.csv), or pass --duplicates none")
        return Path(option)
    candidates = [Path(tones).expanduser().parent / FILE_NAME] if tones else []
    candidates += [audit_folder(d) / FILE_NAME for d in dirs if d]
    return next((c for c in candidates if c.is_file()), None)


def load_all(option: str | None, data_cfg=None, *, dirs: Sequence[str | None] = ()) -> tuple[list[Pair], dict]:
    """The pairs of the located duplicates file and of the preset's own list, and where they came from."""
    tones = getattr(data_cfg, "tones", None) if data_cfg is not None else None
    path = locate(option, tones=tones, dirs=[*dirs, getattr(data_cfg, "dir", None)])
    pairs = read_csv(path) if path else []
    known = known_list_path(data_cfg) if data_cfg is not None else None
    if known is not None:
        pairs = merge(pairs, read_known_list(known))
    return pairs, {"file": str(path) if path else None, "preset_list": str(known) if known else None,
                   "pairs": len(pairs)}
