"""Shift an image's skin tone into another ITA group in CIELAB, keeping the lesion's pixels bit for bit.

The transform (used by ``downstream``'s ``real+lab`` arm and its counterfactual flips):

1. the lesion is the ITA code's own mask (``skintone.lesion_mask``); the skin's ITA and median L*, b* are
   measured as ``estimate_ita`` measures them (``"border"`` strategy);
2. every pixel outside the lesion gets the same L* offset ΔL (a* and b* kept; CIELAB D65 via skimage, out
   of gamut colours clipped to sRGB); the lesion's pixels are copied unchanged;
3. ΔL is the smallest that moves the skin median's ITA, arctan((L* - 50) / b*), to the near edge of the
   target group's ITA interval plus a margin (``MARGINS``, first 0.25°): ΔL = 50 + b*·tan(edge ± margin) - L*.
   The shifted image is measured again; where rounding, clipping or the re-found masks leave it outside
   the group, the next margin is tried. Since ITA grows with L* at fixed b*, no smaller |ΔL| in the same
   direction reaches the group (up to the margin).

The same image and target give the same output (nothing random). Images whose tone cannot be measured
(grayscale, no skin) or that no margin brings into the group raise ``ShiftError``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.color import lab2rgb, rgb2lab

from ..core.errors import ConfigError, DataError
from .skintone import SCHEMES, ToneScheme, estimate_ita, get_scheme, lesion_mask, load_rgb, skin_median_lb

MARGINS = (0.25, 0.5, 1.0, 2.0, 4.0)  # degrees inside the target interval, tried in turn
_CHUNK = 1 << 20  # pixels converted at a time (bounds memory on 24-megapixel photos)


class ShiftError(DataError):
    """The image's tone cannot be measured or shifted into the target group."""


@dataclass(frozen=True)
class Prepared:
    """An image ready to shift: full-size RGB, its lesion mask, the measured ITA/category and skin L*, b*."""

    rgb: np.ndarray
    lesion: np.ndarray
    ita: float
    category: str
    lightness: float
    b: float


@dataclass(frozen=True)
class Shifted:
    """A shifted image and what was done: ΔL*, the margin used, the ITA before and after."""

    rgb: np.ndarray
    target: str
    delta_l: float
    margin: float
    ita_before: float
    ita_after: float
    category_after: str


def scheme_for(groups: Sequence[str]) -> ToneScheme:
    """The ITA scheme whose categories name every group (paper, then del_bino); ConfigError otherwise."""
    for scheme in SCHEMES.values():
        if set(groups) <= set(scheme.names):
            return scheme
    known = "; ".join(f"{k}: {', '.join(s.names)}" for k, s in SCHEMES.items())
    raise ConfigError(f"tone groups {sorted(groups)} are not the categories of an ITA scheme ({known}); the "
                      "CIELAB shift needs groups named as ITA categories (map the tone column's values to them)")


def interval(scheme: ToneScheme, name: str) -> tuple[float, float]:
    """The ITA interval [low, high) of category ``name`` (±inf at the ends)."""
    i = scheme.names.index(name)
    edges = (-math.inf, *scheme.boundaries, math.inf)
    return edges[i], edges[i + 1]


def prepare(image: Image.Image | str | os.PathLike | np.ndarray, scheme: str | ToneScheme = "paper",
            *, name: str = "image") -> Prepared:
    """Read the image at full size, find its lesion, measure its skin; ShiftError if unmeasurable."""
    tone_scheme = get_scheme(scheme)
    try:
        rgb = load_rgb(image, None, name=name)
        est = estimate_ita(rgb, "border", tone_scheme)
        lb = skin_median_lb(rgb)
    except DataError as exc:
        raise ShiftError(f"{name}: {exc}") from exc
    if est.ita is None or lb is None:
        raise ShiftError(f"{name}: skin tone not measurable ({est.undetermined_reason}); it cannot be shifted")
    return Prepared(rgb, lesion_mask(rgb), float(est.ita), str(est.category), lb[0], lb[1])


def apply_shift(rgb: np.ndarray, lesion: np.ndarray, delta_l: float) -> np.ndarray:
    """``rgb`` with L* + ``delta_l`` outside ``lesion`` (clipped to sRGB); lesion pixels copied as they are."""
    out = rgb.copy()
    idx = np.flatnonzero(~lesion.ravel())
    flat = out.reshape(-1, 3)
    for start in range(0, idx.size, _CHUNK):
        part = idx[start:start + _CHUNK]
        lab = rgb2lab(flat[part][None])
        lab[..., 0] = np.clip(lab[..., 0] + delta_l, 0.0, 100.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skimage warns about out-of-gamut values it clips
            flat[part] = (np.clip(lab2rgb(lab)[0], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out


def planned_delta(prep: Prepared, low: float, high: float, margin: float) -> float:
    """ΔL* that puts the skin median's ITA ``margin`` degrees inside [low, high) from the near edge."""
    if prep.ita < low:
        angle = low + margin
    elif prep.ita >= high:
        angle = high - margin
    else:
        return 0.0
    return 50.0 + prep.b * math.tan(math.radians(angle)) - prep.lightness


def shift_to(prep: Prepared, target: str, scheme: str | ToneScheme = "paper", *, name: str = "image") -> Shifted:
    """The image shifted into ITA group ``target`` by the smallest ΔL* that gets there (see the module doc)."""
    tone_scheme = get_scheme(scheme)
    if target not in tone_scheme.names:
        raise ConfigError(f"target tone {target!r} is not a category of scheme {tone_scheme.name!r} "
                          f"({', '.join(tone_scheme.names)})")
    low, high = interval(tone_scheme, target)
    if prep.category == target:
        return Shifted(prep.rgb, target, 0.0, 0.0, prep.ita, prep.ita, target)
    seen = []
    for margin in MARGINS:
        delta = planned_delta(prep, low, high, margin)
        out = apply_shift(prep.rgb, prep.lesion, delta)
        est = estimate_ita(out, "border", tone_scheme)
        if est.category == target:
            return Shifted(out, target, float(delta), margin, prep.ita, float(est.ita), target)
        seen.append(f"{margin}°: {est.category} (ITA {est.ita if est.ita is None else round(est.ita, 1)})")
    raise ShiftError(f"{name}: no L* shift brings its skin (ITA {prep.ita:.1f}) into {target!r}; measured "
                     f"after the shift, by margin: {'; '.join(seen)}")
