"""Images from a pipeline: one seeded generator per image, diagnosis × tone grids, blank-image checks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from .prompts import PromptBuilder


def render(pipe, prompts: Sequence[str], seeds: Sequence[int], *, steps: int = 30,
           guidance_scale: float = 7.5, height: int | None = None, width: int | None = None,
           negative_prompt: str | None = None, batch_size: int = 4) -> list[Image.Image]:
    """One image per (prompt, seed); each image's noise depends only on its own seed."""
    import torch

    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[start:start + batch_size]]
        out = pipe(chunk, generator=gens, num_inference_steps=steps, guidance_scale=guidance_scale,
                   height=height, width=width,
                   negative_prompt=[negative_prompt] * len(chunk) if negative_prompt else None)
        images.extend(out.images)
    return images


def grid_layout(builder: PromptBuilder, columns: Sequence[str] | None = None):
    """Cells of a 2-D grid over the template columns: rows = first column, columns = the others."""
    columns = list(columns or builder.columns)
    cells = builder.grid(columns)
    row_words = builder.choices(columns[0]) if columns else [""]
    n_rows = len(row_words)
    n_cols = len(cells) // n_rows
    col_labels = [" · ".join(w for k, w in words.items() if k != columns[0]) for words, _ in cells[:n_cols]]
    return cells, n_rows, n_cols, row_words, col_labels


def render_grid(pipe, builder: PromptBuilder, *, seed: int = 0, columns: Sequence[str] | None = None,
                title: str = "", **render_kw):
    """A labelled diagnosis × tone grid (one image per cell, same seed per cell) and its images."""
    from .grid import make_grid

    cells, n_rows, n_cols, row_labels, col_labels = grid_layout(builder, columns)
    prompts = [p for _, p in cells]
    images = render(pipe, prompts, [seed] * len(prompts), **render_kw)
    grid = make_grid(images, n_rows, n_cols, row_labels, col_labels, title=title)
    return grid, images, cells


def is_blank(image: Image.Image, tol: float = 2.0) -> bool:
    """True for an all-black (safety-checker) or uniform image."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    return float(arr.max()) <= tol or float(arr.std()) <= tol / 4
