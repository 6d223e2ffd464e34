"""Labelled image grids (diagnosis × tone) and PNG provenance chunks."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def make_grid(images: Sequence[Image.Image], rows: int, cols: int, row_labels: Sequence[str] = (),
              col_labels: Sequence[str] = (), title: str = "", min_cell: int = 96) -> Image.Image:
    """Images in a rows × cols grid (upscaled to at least ``min_cell`` px) with row/column labels."""
    if len(images) != rows * cols:
        raise ValueError(f"grid needs {rows * cols} images, got {len(images)}")
    w, h = images[0].size
    scale = max(1, -(-min_cell // min(w, h)))
    cw, ch = w * scale, h * scale
    font = _font(max(11, min(18, ch // 7)))
    left = 10 + max((int(font.getlength(t)) for t in row_labels), default=0)
    top = (24 if col_labels else 4) + (24 if title else 0)
    pad = 4
    canvas = Image.new("RGB", (left + cols * (cw + pad), top + rows * (ch + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 4), title, fill="black", font=font)
    for c, label in enumerate(col_labels):
        draw.text((left + c * (cw + pad) + 2, top - 20), label, fill="black", font=font)
    for r, label in enumerate(row_labels):
        draw.text((4, top + r * (ch + pad) + ch // 2 - 8), label, fill="black", font=font)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        cell = image.convert("RGB").resize((cw, ch), Image.Resampling.NEAREST)
        canvas.paste(cell, (left + c * (cw + pad), top + r * (ch + pad)))
    return canvas


def save_png(image: Image.Image, path: str | os.PathLike, provenance: dict | None = None) -> Path:
    """Save a PNG atomically, with provenance as PNG text chunks (each key, plus all of it as JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    for key, value in (provenance or {}).items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    if provenance:
        info.add_text("dermdiff_provenance", json.dumps(provenance, sort_keys=True))
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG", pnginfo=info)
    os.replace(tmp, path)
    return path


def read_provenance(path: str | os.PathLike) -> dict:
    with Image.open(path) as im:
        raw = im.text.get("dermdiff_provenance") if hasattr(im, "text") else None
    return json.loads(raw) if raw else {}
