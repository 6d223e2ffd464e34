"""Skin tone from a photo: the Individual Typology Angle (ITA) of the healthy skin, and its category.

ITA = arctan((L* - 50) / b*) · 180/π, from the median L* and b* (CIELAB, D65, via skimage's rgb2lab) of
the skin pixels that remain once the lesion and hair are masked out. All the work happens on a copy whose
longest side is at most ``WORKING_SIDE`` (256) px, so a 6000×4000 ISIC photo costs about what a small one
does; a JPEG is decoded straight at reduced scale.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage
from skimage.color import rgb2lab
from skimage.filters import gaussian, threshold_otsu
from skimage.morphology import black_tophat, disk

from ..core.errors import ConfigError, DataError
from ..data.tables import draft_jpeg

WORKING_SIDE = 256
STRATEGIES = ("border", "whole", "center_excluded")
GRID = 8  # the image is cut into GRID × GRID patches for the per-patch ITAs
HAIR_CONTRAST = 6.0  # L* units a thin structure must be darker than its surroundings to count as hair
LESION_CONTRAST = 8.0  # L* units between the two Otsu classes for the darker one to count as a lesion
MIN_SKIN_FRACTION = 0.05  # below this share of skin pixels the ITA is undetermined


class GrayscaleError(DataError):
    """The image has no colour, so it has no ITA."""


_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


@dataclass(frozen=True)
class ToneScheme:
    """Tone categories over half-open ITA intervals: names[i] covers [boundaries[i-1], boundaries[i])."""

    name: str
    boundaries: tuple[float, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.boundaries) + 1 or list(self.boundaries) != sorted(
            set(self.boundaries)
        ):
            raise ConfigError(
                f"tone scheme {self.name!r}: boundaries {self.boundaries} must be strictly "
                f"increasing and there must be one more name than boundaries ({self.names})"
            )


SCHEMES = {
    # Del Bino et al.: dark (-inf,-30) brown [-30,10) tan [10,28) intermediate [28,41) light [41,55)
    # very light [55,inf)
    "del_bino": ToneScheme(
        "del_bino",
        (-30.0, 10.0, 28.0, 41.0, 55.0),
        ("dark", "brown", "tan", "intermediate", "light", "very light"),
    ),
    # DermDiff's 3 groups: darker (-inf,-30) brown [-30,28) lighter [28,inf)
    "paper": ToneScheme("paper", (-30.0, 28.0), ("darker", "brown", "lighter")),
}


def get_scheme(scheme: str | ToneScheme | tuple[Sequence[float], Sequence[str]]) -> ToneScheme:
    """``"paper"``, ``"del_bino"``, a ToneScheme, or ``(boundaries, names)`` for user thresholds."""
    if isinstance(scheme, ToneScheme):
        return scheme
    if isinstance(scheme, str):
        if scheme not in SCHEMES:
            raise ConfigError(
                f"unknown tone scheme {scheme!r}; use one of {sorted(SCHEMES)} or (boundaries, names)"
            )
        return SCHEMES[scheme]
    boundaries, names = scheme
    return ToneScheme("custom", tuple(float(b) for b in boundaries), tuple(str(n) for n in names))


def categorize(ita: float, scheme: str | ToneScheme | tuple = "paper") -> str:
    """The category of ``ita`` in ``scheme``; a value on a boundary belongs to the interval above it."""
    s = get_scheme(scheme)
    return s.names[bisect.bisect_right(s.boundaries, ita)]


def ita_degrees(lightness: float, b: float) -> float | None:
    """ITA in degrees from L* and b*, or None where b* <= 0 (not a skin colour)."""
    return math.degrees(math.atan((lightness - 50.0) / b)) if b > 0 else None


@dataclass(frozen=True)
class ToneEstimate:
    """One image's skin tone. ``ita`` is None when it cannot be measured; ``undetermined_reason`` says why.

    ``spread`` is the standard deviation of the per-patch ITAs used (degrees; 0 for one patch, NaN when
    undetermined); ``skin_fraction`` and ``lesion_fraction`` are shares of the image area.
    """

    ita: float | None
    category: str | None
    scheme: str
    spread: float
    method: str
    skin_fraction: float
    lesion_fraction: float
    undetermined_reason: str | None = None


def load_rgb(
    image: Image.Image | str | os.PathLike | np.ndarray,
    max_side: int | None = WORKING_SIDE,
    *,
    name: str = "image",
) -> np.ndarray:
    """The image as an RGB uint8 array, shrunk to ``max_side`` (None: full size). Refuses grayscale."""
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    elif not isinstance(image, Image.Image):
        try:
            with Image.open(image) as opened:
                draft_jpeg(opened, max_side, cover=False)  # a JPEG decoded at 1/2, 1/4 or 1/8 scale
                opened.load()
                return load_rgb(opened, max_side, name=str(image))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(
                f"cannot read image {image}: {exc}; check that the file exists and is a complete image"
            ) from exc
    if image.mode in _GRAY_MODES:
        raise GrayscaleError(f"{name} is grayscale (mode {image.mode}); ITA needs a colour (RGB) image")
    image = image.convert("RGB")
    if max_side is not None and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    rgb = np.asarray(image)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        raise GrayscaleError(f"{name} has R == G == B everywhere (grayscale); ITA needs a colour image")
    return rgb


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 2)):
        raise GrayscaleError(f"array of shape {array.shape} is grayscale; ITA needs a colour (H, W, 3) image")
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise DataError(f"array of shape {array.shape} is not an (H, W, 3) or (H, W, 4) image")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.min() >= 0 and array.max() <= 1:
            array = np.round(array * 255.0)
        else:
            raise DataError(f"array of dtype {array.dtype} must be uint8 or floats in [0, 1]")
        array = array.astype(np.uint8)
    return Image.fromarray(array[..., :3], "RGB")


def _drop_small(mask: np.ndarray, max_size: int) -> np.ndarray:
    """``mask`` without its 4-connected components of ``max_size`` pixels or fewer."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes > max_size
    keep[0] = False
    return keep[labels]


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation by a disk of ``radius`` px, via the Euclidean distance transform."""
    return ndimage.distance_transform_edt(~mask) <= radius if mask.any() else mask.copy()


def _open(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary opening by a disk of ``radius`` px (the image edge does not erode)."""
    eroded = ndimage.distance_transform_edt(mask) > radius if not mask.all() else mask
    return _dilate(eroded, radius)


def masks(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lesion, hair, skin) boolean masks of a CIELAB image.

    Hair: morphological black-hat of L* (disk of 1.2 % of the longest side) above ``HAIR_CONTRAST``,
    dilated by 1 px. Lesion: the darker Otsu class of L* smoothed around the hair (normalised convolution)
    when the two class means differ by at least ``LESION_CONTRAST``; opened by a disk of 2.5 % of the
    longest side (drops hair clumps), specks under 0.2 % of the area removed, holes filled. Skin: the rest,
    less a margin of 1.5 % of the longest side around the lesion (its soft edge) and specular highlights
    (L* >= 98). A lesion filling the whole frame in one colour cannot be told from skin of that colour.
    """
    lightness = lab[..., 0]
    side = max(lightness.shape)
    hair = black_tophat(lightness, disk(max(2, round(side * 0.012)))) > HAIR_CONTRAST
    hair = _dilate(_drop_small(hair, 2), 1)
    weight = gaussian((~hair).astype(np.float64), sigma=1.0)  # smooth L* with hair left out
    smooth = np.where(
        weight > 0.1, gaussian(lightness * ~hair, sigma=1.0) / np.maximum(weight, 0.1), lightness
    )
    lesion = np.zeros_like(hair)
    values = smooth[~hair]
    if values.size and np.ptp(values) >= LESION_CONTRAST:
        threshold = threshold_otsu(values)
        if values[values >= threshold].mean() - values[values < threshold].mean() >= LESION_CONTRAST:
            lesion = _open(smooth < threshold, max(1, round(side * 0.025)))
            lesion = ndimage.binary_fill_holes(_drop_small(lesion, int(0.002 * lightness.size)))
    margin = _dilate(lesion, max(1, round(side * 0.015)))
    skin = ~margin & ~hair & (lightness < 98.0)
    return lesion, hair, skin


def lesion_mask(image: Image.Image | str | os.PathLike | np.ndarray) -> np.ndarray:
    """The lesion as a boolean mask at the image's own size (found on the working-size copy)."""
    lesion, _, _ = masks(rgb2lab(load_rgb(image)))
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            size = opened.size
    else:
        size = (image.shape[1], image.shape[0]) if isinstance(image, np.ndarray) else image.size
    small = Image.fromarray(lesion.astype(np.uint8) * 255, "L")
    return np.asarray(small.resize(size, Image.Resampling.NEAREST)) > 127


def _cells(shape: tuple[int, ...]) -> list[tuple[slice, slice, bool, bool]]:
    """The GRID × GRID patches as (rows, cols, on_border, in_centre); the centre is the middle half."""
    rows = np.linspace(0, shape[0], GRID + 1).round().astype(int)
    cols = np.linspace(0, shape[1], GRID + 1).round().astype(int)
    centre = range(GRID // 4, GRID - GRID // 4)
    return [
        (
            slice(rows[i], rows[i + 1]),
            slice(cols[j], cols[j + 1]),
            i in (0, GRID - 1) or j in (0, GRID - 1),
            i in centre and j in centre,
        )
        for i in range(GRID)
        for j in range(GRID)
    ]


def _median_lb(lab: np.ndarray, keep: np.ndarray) -> tuple[float, float]:
    return float(np.median(lab[..., 0][keep])), float(np.median(lab[..., 2][keep]))


def _select(lab: np.ndarray, skin: np.ndarray, strategy: str) -> tuple[np.ndarray, list[float]]:
    """The skin pixels a strategy measures (none for "border" without a usable patch), and the ITAs of
    the usable patches (at least 25 % skin and 4 pixels) it looks at."""
    chosen, patch_itas, usable = np.zeros_like(skin), [], []
    for rows, cols, on_border, in_centre in _cells(skin.shape):
        if (strategy == "border" and not on_border) or (strategy == "center_excluded" and in_centre):
            continue
        cell = skin[rows, cols]
        if strategy != "border":
            chosen[rows, cols] = cell
        if cell.sum() < max(4, 0.25 * cell.size):
            continue
        lightness, b = _median_lb(lab[rows, cols], cell)
        usable.append((lightness, rows, cols))
        if (ita := ita_degrees(lightness, b)) is not None:
            patch_itas.append(ita)
    if strategy == "border":  # pool the lightest quarter: away from vignetting, shadows and hair remnants
        usable.sort(key=lambda item: -item[0])
        for _, rows, cols in usable[: max(1, len(usable) // 4)]:
            chosen[rows, cols] = skin[rows, cols]
    return chosen, patch_itas


def estimate_ita(
    image: Image.Image | str | os.PathLike | np.ndarray,
    strategy: str = "border",
    scheme: str | ToneScheme | tuple = "paper",
    *,
    working_side: int = WORKING_SIDE,
) -> ToneEstimate:
    """Estimate the skin's ITA and category after masking lesion and hair (see ``masks``).

    Strategies, all on a GRID × GRID patch layout: ``"border"`` pools the lightest quarter of the border
    patches that are at least 25 % skin; ``"whole"`` uses every skin pixel; ``"center_excluded"`` every
    skin pixel outside the middle half of the image (both ways). Grayscale images raise DataError.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown ITA strategy {strategy!r}; use one of {STRATEGIES}")
    tone_scheme = get_scheme(scheme)
    rgb = load_rgb(image, working_side)
    lab = rgb2lab(rgb)
    lesion, hair, skin = masks(lab)
    method = f"{strategy}, median L*/b*, {rgb.shape[1]}x{rgb.shape[0]} px"
    common = {
        "scheme": tone_scheme.name,
        "method": method,
        "skin_fraction": float(skin.mean()),
        "lesion_fraction": float(lesion.mean()),
    }
    chosen, patch_itas = _select(lab, skin, strategy)
    reason = None
    if skin.mean() < MIN_SKIN_FRACTION:
        reason = (
            f"no usable skin: lesion covers {lesion.mean():.0%} and hair {hair.mean():.0%} of the "
            f"image, leaving {skin.mean():.1%} skin (< {MIN_SKIN_FRACTION:.0%})"
        )
    elif chosen.sum() < 4:
        reason = f"strategy {strategy!r} finds too little skin where it looks (lesion or hair); try 'whole'"
    else:
        lightness, b = _median_lb(lab, chosen)
        ita = ita_degrees(lightness, b)
        if ita is None:
            reason = f"median skin b* is {b:.1f} <= 0: not a skin colour, ITA undefined"
        else:
            spread = float(np.std(patch_itas)) if patch_itas else 0.0
            return ToneEstimate(ita, categorize(ita, tone_scheme), spread=spread, **common)
    return ToneEstimate(None, None, spread=math.nan, undetermined_reason=reason, **common)


def skin_median_lb(image: Image.Image | str | os.PathLike | np.ndarray, strategy: str = "border", *,
                   working_side: int = WORKING_SIDE) -> tuple[float, float] | None:
    """The median L* and b* of the skin pixels ``estimate_ita`` measures (None where it finds too few)."""
    lab = rgb2lab(load_rgb(image, working_side))
    _, _, skin = masks(lab)
    chosen, _ = _select(lab, skin, strategy)
    return _median_lb(lab, chosen) if chosen.sum() >= 4 else None
