"""Synthetic test images for the eval tests, drawn in the tests themselves (no dataset, no download)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def lesion_image(rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A skin-coloured background with noise and one dark, off-centre ellipse (asymmetric on purpose)."""
    skin = np.array([200, 150, 120]) + rng.integers(-40, 40, size=3)
    base = np.clip(skin + rng.normal(0, 8, size=(size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    cx, cy = rng.uniform(0.25, 0.75, size=2) * size
    rx, ry = rng.uniform(0.08, 0.3, size=2) * size
    colour = tuple(int(c) for c in rng.integers(20, 110, size=3))
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)
    x0 = rng.uniform(0, size * 0.5)
    draw.rectangle([x0, 0, x0 + size * 0.1, size * 0.3], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return image


def noise_image(rng: np.random.Generator, size: int = 48) -> Image.Image:
    """Coloured noise with a few bright blobs: nothing like ``lesion_image``."""
    base = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = rng.uniform(0, size, size=2)
        r = rng.uniform(2, size / 5)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in rng.integers(150, 256, 3)))
    return image


def lesion_set(seed: int, n: int, size: int = 48) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [lesion_image(rng, size) for _ in range(n)]


def noise_set(seed: int, n: int, size: int = 48) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [noise_image(rng, size) for _ in range(n)]
