"""Synthetic "skin + lesion" images whose skin tone (ITA) and lesion are known exactly.

Skin is drawn in CIELAB. A low-frequency shading field scales (L* - 50) and b* together, so every healthy
pixel keeps the target ITA; a fine zero-mean texture leaves the mean unchanged. The lesion is darker than
the skin. As in the ABCD rule of dermoscopy, benign = a small oval of one brown; malignant = a larger
irregular outline with 2-3 colours, one of them black-brown. Hair strokes are thin dark curves drawn last,
over skin and lesion alike.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin
from skimage.color import lab2rgb

from ..core.errors import ConfigError, DataError
from ..core.fsutil import replace_dir

TONE_GROUPS = ("lighter", "brown", "darker")  # skin_tone codes 0 / 1 / 2
DIAGNOSES = ("benign", "malignant")
# ITA ranges drawn by make_dataset: the paper's 3 groups (boundaries -30 and 28), 3 degrees inside them.
TONE_ITA_RANGES = {"lighter": (31.0, 70.0), "brown": (-27.0, 25.0), "darker": (-60.0, -33.0)}

_DETAIL_SIDE = 400  # colour is computed on a grid whose longest side is at most this, then upsampled
_B_CURVE = (
    (-70.0, 14.0),
    (-60.0, 15.0),
    (-30.0, 18.0),
    (10.0, 18.0),
    (28.0, 17.0),
    (41.0, 15.0),
    (55.0, 12.0),
    (70.0, 9.0),
    (80.0, 7.0),
)
# Default lesion area (share of the image) by diagnosis: melanomas are the larger lesions ("D" of ABCD).
LESION_FRACTION_RANGES = {"benign": (0.08, 0.18), "malignant": (0.18, 0.34)}
_BENIGN_NAMES = ("nevus", "nevus", "nevus", "seborrheic keratosis", "lentigo NOS", "unknown")
_SITES = ("torso", "lower extremity", "upper extremity", "head/neck", "palms/soles", "oral/genital")
METADATA_COLUMNS = (
    "image_name",
    "patient_id",
    "sex",
    "age_approx",
    "anatom_site_general_challenge",
    "diagnosis",
    "benign_malignant",
    "target",
    "skin_tone",
    "ita_true",
    "lesion_fraction",
)


def lab_for_ita(ita: float, rng: np.random.Generator | None = None) -> tuple[float, float, float]:
    """A plausible skin colour (L*, a*, b*) with b* > 0 whose ITA is exactly ``ita`` (degrees, -70..80).

    b* follows a skin-like curve of ITA (jittered by up to 1.5 with ``rng``), then L* = 50 + b*·tan(ITA);
    b* shrinks where needed to keep L* inside [8, 92].
    """
    if not -70.0 <= ita <= 80.0:
        raise ConfigError(
            f"ita={ita} is outside the supported skin range -70..80 degrees; pick a value in it"
        )
    xs, ys = zip(*_B_CURVE, strict=True)
    b = float(np.interp(ita, xs, ys))
    a = float(np.interp(ita, (-60.0, 70.0), (11.0, 7.0)))
    if rng is not None:
        b += float(rng.uniform(-1.5, 1.5))
        a += float(rng.uniform(-1.5, 1.5))
    t = math.tan(math.radians(ita))
    if abs(t) > 1e-9:
        b = min(b, 42.0 / abs(t))
    return 50.0 + b * t, a, b


def _grid_shape(width: int, height: int) -> tuple[int, int]:
    factor = max(1, math.ceil(max(width, height) / _DETAIL_SIDE))
    return max(1, round(width / factor)), max(1, round(height / factor))


def _smooth_field(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1] (bicubic upsampling of a ``cells``-wide random grid)."""
    coarse = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def _lesion_alpha(rng: np.random.Generator, width: int, height: int, fraction: float, malignant: bool):
    """Lesion coverage in [0, 1] per pixel (soft edge about 1 px wide)."""
    if fraction <= 0.0:
        return np.zeros((height, width), np.float32)
    if fraction >= 1.0:
        return np.ones((height, width), np.float32)
    area = fraction * width * height
    if malignant:
        ks = np.arange(2, 9)
        amps = rng.uniform(0.0, 0.22, ks.size) / np.sqrt(ks - 1)
        phases = rng.uniform(0.0, 2 * np.pi, ks.size)
        r0 = math.sqrt(area / (math.pi * (1.0 + 0.5 * float(np.sum(amps**2)))))
        rx = ry = r0
        reach = r0 * (1.0 + float(amps.sum()))
    else:
        q = rng.uniform(0.7, 1.0)
        rx = math.sqrt(area / (math.pi * q))
        ry = q * rx
        reach = rx
    cx = rng.uniform(min(reach, width / 2), max(width - reach, width / 2))
    cy = rng.uniform(min(reach, height / 2), max(height - reach, height / 2))
    theta = rng.uniform(0.0, np.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = x + 0.5 - cx, y + 0.5 - cy
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    rho = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    if malignant:  # radius factor 1 + sum_k amp_k cos(k phi + phase_k) = 1 + Re(sum_k c_k z^k), |z| = 1
        z = (u + 1j * v).astype(np.complex64) / np.maximum(rho * rx, 1e-6)
        poly = np.zeros_like(z)
        for c in (amps * np.exp(1j * phases))[::-1]:
            poly = (poly + np.complex64(c)) * z
        rho = rho / (1.0 + (poly * z).real)
    return np.clip((1.0 - rho) * ry + 0.5, 0.0, 1.0).astype(np.float32)


def _lesion_lab(rng, skin: tuple[float, float, float], alpha: np.ndarray, malignant: bool) -> np.ndarray:
    """Lesion colours (H, W, 3) in CIELAB: one for benign, 2-3 patches of a dark palette for malignant."""
    L0, a0, b0 = skin
    palette = np.array(
        [
            (L0 * rng.uniform(0.4, 0.55), a0 + rng.uniform(1, 4), b0 * rng.uniform(0.8, 1.05)),  # brown
            (L0 * 0.28, a0 * 0.5, b0 * 0.4),  # black-brown
            (L0 * 0.5, -1.0, -6.0),  # blue-grey
            (L0 * 0.6, a0 + 12.0, b0 * 0.9),  # red-brown
        ],
        dtype=np.float32,
    )
    h, w = alpha.shape
    if not malignant:
        return np.broadcast_to(palette[0], (h, w, 3))
    chosen = palette[[0, 1, *rng.choice([2, 3], size=int(rng.integers(0, 2)))]]
    field = _smooth_field(rng, w, h, 5)
    inside = field[alpha > 0.5]
    edges = np.quantile(inside, np.linspace(0, 1, len(chosen) + 1)[1:-1]) if inside.size else []
    return chosen[np.digitize(field, edges)]


def _draw_hair(img: Image.Image, rng: np.random.Generator, count: int, skin_l: float) -> Image.Image:
    """Draw ``count`` thin dark curved strokes (quadratic Bezier curves) over ``img``."""
    w, h = img.size
    side = max(w, h)
    mask = Image.new("L", img.size, 0)
    draw = ImageDraw.Draw(mask)
    t = np.linspace(0.0, 1.0, 16)[:, None]
    for _ in range(count):
        p0 = rng.uniform(0, 1, 2) * (w, h)
        angle = rng.uniform(0, 2 * np.pi)
        p2 = p0 + rng.uniform(0.3, 0.8) * side * np.array([np.cos(angle), np.sin(angle)])
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.12 * side, 2)
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        draw.line([tuple(p) for p in pts], fill=255, width=max(1, round(side / 300)), joint="curve")
    hair_lab = np.array([[[min(skin_l * 0.35, 18.0), 2.0, 3.0]]])
    colour = tuple(int(c) for c in np.round(lab2rgb(hair_lab)[0, 0] * 255))
    return Image.composite(Image.new("RGB", img.size, colour), img, mask)


def draw_skin(
    size: int | tuple[int, int],
    ita: float,
    diagnosis: str = "benign",
    *,
    seed: int = 0,
    lesion_fraction: float | None = None,
    hair: int = 0,
    texture: bool = True,
) -> tuple[Image.Image, np.ndarray]:
    """An RGB image of skin at ``ita`` degrees with a lesion, and the boolean lesion mask (H, W).

    ``size`` is the side of a square or (width, height). ``lesion_fraction`` is the lesion's share of the
    image area (default: random in ``LESION_FRACTION_RANGES[diagnosis]``, 8-18 % benign, 18-34 %
    malignant; 0 = no lesion, 1 = all lesion); the real share (after clipping
    at the edges) is ``mask.mean()``. Colour is computed on a grid of at most 400 px and upsampled;
    hair (``hair`` strokes) is drawn at full size. The same arguments give the same image.
    """
    width, height = (size, size) if isinstance(size, int) else size
    if width < 1 or height < 1 or seed < 0 or diagnosis not in DIAGNOSES:
        raise ConfigError(
            f"draw_skin: size={size!r} must be positive, seed={seed} >= 0 and diagnosis={diagnosis!r} "
            f"one of {DIAGNOSES}"
        )
    rng = np.random.default_rng(seed)
    skin = lab_for_ita(ita, rng)
    if lesion_fraction is None:
        fraction = rng.uniform(*LESION_FRACTION_RANGES[diagnosis])
    else:
        fraction = float(lesion_fraction)
    gw, gh = _grid_shape(width, height)
    shade = 1.0 + 0.06 * _smooth_field(rng, gw, gh, 4) if texture else np.ones((gh, gw), np.float32)
    lab = np.empty((gh, gw, 3), np.float32)
    lab[..., 0] = 50.0 + shade * (skin[0] - 50.0)
    lab[..., 1] = skin[1] + (_smooth_field(rng, gw, gh, 6) if texture else 0.0)
    lab[..., 2] = shade * skin[2]
    if texture:
        lab += rng.normal(0.0, 1.0, lab.shape).astype(np.float32) * np.float32([0.7, 0.5, 0.35])
    alpha = _lesion_alpha(rng, gw, gh, fraction, diagnosis == "malignant")
    lesion = _lesion_lab(rng, skin, alpha, diagnosis == "malignant")
    lab += alpha[..., None] * (lesion - lab)
    rgb = (np.clip(lab2rgb(lab), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    alpha_img = Image.fromarray(alpha, mode="F")
    if (gw, gh) != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
        alpha_img = alpha_img.resize((width, height), Image.Resampling.BILINEAR)
    if hair:
        img = _draw_hair(img, rng, hair, skin[0])
    return img, np.asarray(alpha_img) > 0.5


def _split_counts(n: int, tone_counts: dict | None) -> dict[str, int]:
    if tone_counts is None:
        if n < 0:
            raise ConfigError(f"make_dataset: n={n} must be >= 0")
        return {g: n // 3 + (i < n % 3) for i, g in enumerate(TONE_GROUPS)}
    unknown = sorted(set(tone_counts) - set(TONE_GROUPS))
    if unknown or any(int(c) < 0 for c in tone_counts.values()):
        raise ConfigError(
            f"make_dataset: tone_counts={tone_counts!r} must map names from {TONE_GROUPS} to counts >= 0"
        )
    return {g: int(tone_counts.get(g, 0)) for g in TONE_GROUPS}


def _plan_rows(counts: dict[str, int], malignant_fraction: float, rng: np.random.Generator, seed: int,
               ita_ranges: dict[str, tuple[float, float]]) -> list[dict]:
    """One metadata row (without the image-derived columns) per image, in a shuffled order."""
    rows = []
    for code, group in enumerate(TONE_GROUPS):
        n_mal = round(counts[group] * malignant_fraction)
        for i in range(counts[group]):
            malignant = i < n_mal
            rows.append(
                {
                    "diagnosis": "melanoma" if malignant else str(rng.choice(_BENIGN_NAMES)),
                    "benign_malignant": "malignant" if malignant else "benign",
                    "target": int(malignant),
                    "skin_tone": code,
                    "ita_true": float(rng.uniform(*ita_ranges[group])),
                }
            )
    order = rng.permutation(len(rows))
    n_patients = max(1, len(rows) // 2)
    for index, row_index in enumerate(order):
        rows[row_index].update(
            {
                "image_name": f"SYN_{index + 1:07d}",
                # the seed is part of the id: datasets drawn with other seeds share no patient
                "patient_id": f"IP_s{seed}_{int(rng.integers(1, n_patients + 1)):07d}",
                "sex": str(rng.choice(("female", "male"))),
                "age_approx": "" if rng.random() < 0.05 else f"{5 * int(rng.integers(4, 18))}.0",
                "anatom_site_general_challenge": str(rng.choice(_SITES)),
                "seed": int(rng.integers(0, 2**31 - 1)),
            }
        )
    return [rows[i] for i in order]


def _fresh_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"make_dataset: {out_dir} exists and is not a folder; pick a new folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(
            f"make_dataset: {out_dir} already exists and is not empty; pass overwrite=True or "
            "pick a new folder"
        )


def make_dataset(
    out_dir: str | os.PathLike,
    n: int = 60,
    *,
    size: int | tuple[int, int] = 64,
    seed: int = 0,
    tone_counts: dict | None = None,
    malignant_fraction: float = 0.3,
    hair: int = 0,
    image_format: str = "png",
    overwrite: bool = False,
    ita_ranges: dict[str, tuple[float, float]] | None = None,
) -> Path:
    """Write an ISIC-style imagefolder of synthetic images plus ``metadata.csv`` and return its path.

    ``tone_counts`` (group name -> count) replaces the even split of ``n`` over ``TONE_GROUPS``; each
    group's ITA is uniform in ``ita_ranges[group]`` (default ``TONE_ITA_RANGES``).
    ``round(count * malignant_fraction)`` images per group are malignant. ``size`` is as in ``draw_skin``. The folder is built beside ``out_dir`` and moved into
    place when complete.
    """
    out_dir = Path(out_dir)
    ext = {"png": "png", "jpg": "jpg", "jpeg": "jpg"}.get(image_format.lower())
    if ext is None or not 0.0 <= malignant_fraction <= 1.0:
        raise ConfigError(
            f"make_dataset: image_format={image_format!r} must be png or jpg and "
            f"malignant_fraction={malignant_fraction} in [0, 1]"
        )
    _fresh_dir(out_dir, overwrite)
    rng = np.random.default_rng(seed)
    ranges = {**TONE_ITA_RANGES, **(ita_ranges or {})}
    if any(not -70.0 <= lo <= hi <= 80.0 for lo, hi in ranges.values()):
        raise ConfigError(f"make_dataset: ita_ranges={ita_ranges!r} must be (low, high) pairs within -70..80")
    rows = _plan_rows(_split_counts(n, tone_counts), malignant_fraction, rng, seed, ranges)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for row in rows:
            img, mask = draw_skin(
                size, row["ita_true"], row["benign_malignant"], seed=row.pop("seed"), hair=hair
            )
            row["lesion_fraction"] = f"{mask.mean():.4f}"
            row["ita_true"] = f"{row['ita_true']:.3f}"
            info = PngImagePlugin.PngInfo()
            info.add_text("synthetic", "true")
            info.add_text("ita_true", row["ita_true"])
            options = {"pnginfo": info, "compress_level": 1} if ext == "png" else {"quality": 95}
            img.save(tmp / f"{row['image_name']}.{ext}", **options)
        with open(tmp / "metadata.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METADATA_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
