"""Images as the review serves them: nothing but pixels tells real from synthetic.

Every image is cropped to a centred square (as training's centre crop does), resized to one size and
re-encoded as a baseline JPEG with no metadata (no EXIF, no ICC profile, no PNG text chunks), so file
format, size and provenance chunks (our PNGs carry them; ISIC images are 4:3 JPEGs) give nothing away.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageOps

SERVED_SIZE = 384
JPEG_QUALITY = 90


def square(image: Image.Image, size: int = SERVED_SIZE) -> Image.Image:
    """RGB, the short side resized to ``size`` and the long side centre-cropped (bicubic)."""
    image = ImageOps.exif_transpose(image).convert("RGB")
    return ImageOps.fit(image, (size, size), Image.BICUBIC, centering=(0.5, 0.5))


@lru_cache(maxsize=256)
def served_bytes(path: Path, size: int = SERVED_SIZE) -> bytes:
    """The JPEG bytes served for ``path`` (cached: a reader goes back and forth)."""
    with Image.open(path) as image:
        pixels = square(image, size)
    buf = io.BytesIO()
    pixels.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False, subsampling=0)
    return buf.getvalue()
