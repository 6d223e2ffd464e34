"""The offline demo: synthetic lesion data → LoRA training → exported adapter → diagnosis × tone grid.

The grid is rendered by a *stock* diffusers pipeline that loads the exported adapter with
``load_lora_weights``, so the demo also proves the export works outside this package.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import config, models, prompts


def run_demo(out: str | Path = "outputs/demo", *, steps: int | None = None, overrides: list[str] | None = None,
             n_images: int = 60) -> dict:
    """Run the whole demo into ``out``; returns (and prints) where everything went."""
    from .generate import render_grid
    from .grid import make_grid, save_png
    from .synthetic import make_dataset
    from .train import train

    t0 = time.time()
    out = Path(out)
    data_dir = out / "data"
    if not (data_dir / "metadata.csv").is_file():
        make_dataset(data_dir, n=n_images, size=64, seed=0)
    extra = [f"data.dir={data_dir}", f"output.dir={out / 'lora'}", "output.overwrite=true"]
    if steps:
        extra.append(f"train.max_steps={steps}")
    cfg = config.load("demo", extra + list(overrides or []))
    summary = train(cfg)

    builder = prompts.from_config(cfg.prompts)
    pipe = models.load_pipeline(cfg.model.base, cfg.model.revision)
    kw = dict(seed=cfg.validation.seed, steps=cfg.validation.inference_steps,
              guidance_scale=cfg.validation.guidance_scale, height=cfg.data.resolution, width=cfg.data.resolution)
    before, _, _ = render_grid(pipe, builder, title="base model", **kw)
    pipe.load_lora_weights(cfg.output.dir)  # stock diffusers loader on the exported adapter
    after, _, _ = render_grid(pipe, builder, title="base + LoRA (stock load_lora_weights)", **kw)
    both = make_grid([before, after], 1, 2, min_cell=before.height)
    grid_path = save_png(both, out / "grid.png", {"synthetic": "true", "base_model": cfg.model.base,
                                                  "adapters": json.dumps({cfg.output.dir: 1.0})})
    result = {"dataset": str(data_dir), "adapter": summary["outputs"]["adapter"],
              "config": summary["outputs"]["config"], "grid": str(grid_path),
              "validation_grids": str(Path(cfg.output.dir) / "validation"),
              "tensorboard": str(Path(cfg.output.dir) / "logs"), "final_loss": summary["final_loss"],
              "train_seconds": summary["seconds"], "total_seconds": round(time.time() - t0, 1)}
    _print_result(result)
    return result


def _print_result(result: dict) -> None:
    print("\nDemo finished. Everything it wrote:")
    for key in ("dataset", "adapter", "config", "grid", "validation_grids", "tensorboard"):
        print(f"  {key:<17} {result[key]}")
    print(f"  final loss {result['final_loss']:.4f}, training {result['train_seconds']} s, "
          f"total {result['total_seconds']} s")
    print("Load the adapter with plain diffusers: pipe.load_lora_weights('" + str(Path(result["adapter"]).parent)
          + "')")
