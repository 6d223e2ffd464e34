"""Images from a pipeline: one seeded generator per image, diagnosis × tone grids, blank-image checks.

``generate`` is the command behind ``dermdiff-lora generate``: base + adapters (each with a scale) →
PNGs with provenance, labelled grids and a settings JSON that replays the run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import ConfigError, ModelError
from ..core.prompts import PromptBuilder
from ..core.version import __version__


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


# --------------------------------------------------------------------------------------- generate command
SETTINGS_FILE = "generate.json"


@dataclass
class GenerateSettings:
    """Everything that decides the images (saved as JSON: ``generate --settings`` replays it)."""

    base: str = "tiny-random"
    revision: str | None = None
    adapters: list[tuple[str, float]] = field(default_factory=list)  # (adapter, scale)
    prompts: list[str] = field(default_factory=list)  # free text; empty = the adapter's template grid
    grid: list[str] | None = None  # template columns, rows first (default: the template's order)
    template: str | None = None  # prompt template + value maps for the grid (default: the adapter's own)
    value_maps: dict | None = None
    negative_prompt: str | None = None
    seed: int = 0
    num_images: int = 1  # per prompt, seeds seed, seed+1, ...
    steps: int = 30
    guidance_scale: float = 7.5
    scheduler: str = "default"
    height: int | None = None
    width: int | None = None
    batch_size: int = 4
    dtype: str = "fp32"
    safety_checker: bool = False
    allow_pickle: bool = False

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> GenerateSettings:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read generate settings {path}: {exc}") from None
        data = data.get("settings", data)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        data["adapters"] = [tuple(a) for a in data.get("adapters", [])]
        return cls(**data)


def generate(settings: GenerateSettings, out: str | os.PathLike, *, overwrite: bool = False,
             progress: bool = True) -> dict:
    """Render the settings' prompts to ``out``: PNGs with provenance, labelled grid(s), ``generate.json``.

    Blank (all-black or uniform) images are not saved as results: they are listed under ``blank``.
    """
    from ..adapters import io

    with io.staged_dir(out, overwrite) as tmp:
        pipe, info = _pipeline(settings)
        jobs, grids = _plan(settings, info)
        images = _render_jobs(pipe, jobs, settings, progress)
        record = _write(tmp, settings, pipe, info, jobs, grids, images)
    return record


def _pipeline(s: GenerateSettings):
    import torch

    from ..adapters.apply import attach
    from ..core.models import load_pipeline
    from .schedulers import set_scheduler

    dtypes = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    if s.dtype not in dtypes:
        raise ConfigError(f"dtype {s.dtype!r}: use one of {', '.join(dtypes)}")
    pipe = load_pipeline(s.base, s.revision, allow_pickle=s.allow_pickle, safety_checker=s.safety_checker,
                         torch_dtype=dtypes[s.dtype])
    if s.safety_checker and pipe.safety_checker is None:
        raise ModelError(f"base {s.base} has no safety_checker component to switch on; drop --safety-checker")
    info = attach(pipe, s.adapters, base_label=s.base, allow_pickle=s.allow_pickle)
    set_scheduler(pipe, s.scheduler)
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    return pipe, info


def _builder(s: GenerateSettings, info: list[dict]) -> PromptBuilder:
    """The template and value maps saved with the first adapter (or the full fine-tune's config)."""
    from ..core.config import load_saved

    if s.template:
        return PromptBuilder(s.template, s.value_maps or {})
    for item in info:
        if item["meta"].get("prompt_template"):
            return PromptBuilder(item["meta"]["prompt_template"], item["meta"].get("value_maps") or {})
    saved = load_saved(s.base) if Path(s.base).is_dir() else None
    if saved and saved.prompts.template:
        return PromptBuilder(saved.prompts.template, saved.prompts.value_maps)
    raise ConfigError("no prompt template to build prompts from: pass --prompt TEXT, or an adapter (or a full "
                      "fine-tune as --base) trained by dermdiff-lora")


def _plan(s: GenerateSettings, info: list[dict]):
    """``jobs`` = [(prompt, seed, words)] and ``grids`` = [(seed or None, rows, cols, row/col labels, jobs)]."""
    seeds = [s.seed + i for i in range(s.num_images)]
    if s.prompts:
        jobs = [(p, seed, {}) for p in s.prompts for seed in seeds]
        labels = [p if len(p) <= 32 else p[:31] + "…" for p in s.prompts]
        return jobs, [(None, len(s.prompts), len(seeds), labels, [f"seed {x}" for x in seeds], jobs)]
    cells, n_rows, n_cols, row_labels, col_labels = grid_layout(_builder(s, info), s.grid)
    jobs, grids = [], []
    for seed in seeds:
        mine = [(prompt, seed, words) for words, prompt in cells]
        jobs += mine
        grids.append((seed, n_rows, n_cols, row_labels, col_labels, mine))
    return jobs, grids


def _render_jobs(pipe, jobs, s: GenerateSettings, progress: bool) -> list[Image.Image]:
    from ..core.progress import progress as progress_bar

    images: list[Image.Image] = []
    with progress_bar(total=len(jobs), desc="generate", unit="img", disable=not progress) as bar:
        for start in range(0, len(jobs), s.batch_size):
            chunk = jobs[start:start + s.batch_size]
            images += render(pipe, [p for p, _, _ in chunk], [seed for _, seed, _ in chunk], steps=s.steps,
                             guidance_scale=s.guidance_scale, height=s.height, width=s.width,
                             negative_prompt=s.negative_prompt, batch_size=s.batch_size)
            bar.update(len(chunk))
    return images


def _write(folder: Path, s: GenerateSettings, pipe, info, jobs, grids, images) -> dict:
    from .grid import make_grid, save_png

    common = {"synthetic": "true", "base_model": s.base, "base_revision": s.revision,
              "adapters": [{k: i[k] for k in ("path", "scale", "base_model", "fingerprint")} for i in info],
              "negative_prompt": s.negative_prompt, "steps": s.steps, "guidance_scale": s.guidance_scale,
              "scheduler": type(pipe.scheduler).__name__, "height": images[0].height,
              "width": images[0].width, "package_version": __version__}
    records, blank, by_job = [], [], {}
    for n, ((prompt, seed, words), image) in enumerate(zip(jobs, images)):
        item = {"prompt": prompt, "seed": seed, "words": words}
        by_job[(prompt, seed)] = image
        if is_blank(image):
            blank.append(item)
            continue
        slug = "-".join(words.values()) if words else "".join(c if c.isalnum() else "-" for c in prompt)[:40]
        name = f"images/{n:03d}-{slug}-seed{seed}.png"
        save_png(image, folder / name, {**common, "prompt": prompt, "seed": seed})
        records.append({**item, "file": name})
    grid_files = []
    for seed, rows, cols, row_labels, col_labels, grid_jobs in grids:
        grid = make_grid([by_job[(p, x)] for p, x, _ in grid_jobs], rows, cols, row_labels, col_labels,
                         title=f"{s.base} + {len(info)} adapter(s)" + (f", seed {seed}" if seed is not None else ""))
        name = "grid.png" if len(grids) == 1 else f"grid-seed{seed}.png"
        save_png(grid, folder / name, {**common, "seed": seed, "blank_cells": len(blank)})
        grid_files.append(name)
    record = {"settings": asdict(s), "scheduler": common["scheduler"], "package_version": __version__,
              "images": records, "grids": grid_files, "blank": blank,
              "adapters": common["adapters"], "device": str(pipe.device)}
    (folder / SETTINGS_FILE).write_text(json.dumps(record, indent=2))
    return record
