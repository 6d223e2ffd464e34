"""Images drawn for tests, independently of the package's own synthetic-image code."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def lesion_photo(rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A textured skin-coloured photo with an off-centre dark blob and a bar (no symmetry)."""
    skin = np.array([205, 155, 125]) + rng.integers(-30, 30, 3)
    image = Image.fromarray(np.clip(skin + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    rx, ry = rng.uniform(0.1, 0.3, 2) * size
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=tuple(int(c) for c in rng.integers(30, 110, 3)))
    x = rng.uniform(0, size * 0.6)
    draw.rectangle([x, 0, x + size * 0.12, size * 0.25], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return image
