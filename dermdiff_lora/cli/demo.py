"""The offline demo: the shipped ``tiny`` base → measure tone fidelity → LoRA on its weakest tone group →
measure again; a before/after diagnosis × tone grid and a per-tone fidelity table.

Fidelity is the share of images in the prompted tone group and, sharper once the base puts nearly all of
them there, the share in the group's core ITA range (``CORE_ITA``, the middle of the paper interval, where
the LoRA's training images lie).

The LoRA is loaded by a *stock* diffusers pipeline (``load_lora_weights``), so the demo also proves the
export works outside this package.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from ..core import config, models, prompts
from ..tone import fidelity

# The middle of each paper interval: where the LoRA's training images lie, and the "in core" measure.
CORE_ITA = {"lighter": (45.0, 65.0), "brown": (-14.0, 12.0), "darker": (-58.0, -42.0)}
DEMO_SEEDS = range(100, 116)  # images per prompt for the fidelity table
REBALANCE_PER_CELL = 3  # synthetic images added per (diagnosis, tone) cell of the other tones: 12 to review


def run_demo(out: str | Path = "outputs/demo", *, steps: int | None = None, overrides: list[str] | None = None,
             n_images: int = 96) -> dict:
    """Run the whole demo into ``out``; returns (and prints) the figures and where everything went.

    Runs on one torch thread (restored afterwards): for 32 px models it is the fastest setting, and on a
    busy 2-core machine two threads were 7x slower (400 s instead of 56 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_demo(Path(out), steps, overrides, n_images)
    finally:
        torch.set_num_threads(threads)


def _run_demo(out: Path, steps: int | None, overrides: list[str] | None, n_images: int) -> dict:
    from ..training.train import train

    t0 = time.time()
    extra = [f"data.dir={out / 'data'}", f"output.dir={out / 'lora'}", "output.overwrite=true"]
    if steps:
        extra.append(f"train.max_steps={steps}")
    cfg = config.load("demo", extra + list(overrides or []))
    builder = prompts.from_config(cfg.prompts)
    pipe = models.load_pipeline(cfg.model.base, cfg.model.revision)
    kw = dict(steps=cfg.validation.inference_steps, guidance_scale=cfg.validation.guidance_scale,
              size=cfg.data.resolution)
    before = fidelity.tone_report(fidelity.generate_samples(pipe, builder, DEMO_SEEDS, **kw), core=CORE_ITA)
    target = weakest_group(before)
    make_lora_data(out / "data", target, n_images, cfg.train.seed)
    summary = train(cfg)
    pipe.load_lora_weights(cfg.output.dir)  # stock diffusers loader on the exported adapter
    after = fidelity.tone_report(fidelity.generate_samples(pipe, builder, DEMO_SEEDS, **kw), core=CORE_ITA)
    grid_path = save_before_after_grid(cfg, builder, out / "grid.png")
    t1 = time.time()
    rebalanced = small_rebalance(pipe, cfg, out, target, kw)
    result = {"target_group": target, "before": before, "after": after, "dataset": str(out / "data"),
              "adapter": summary["outputs"]["adapter"], "config": summary["outputs"]["config"],
              "grid": str(grid_path), "rebalanced": str(rebalanced.out_dir), "rebalance_added": rebalanced.added,
              "rebalance_seconds": round(time.time() - t1, 1), "final_loss": summary["final_loss"],
              "train_seconds": summary["seconds"], "total_seconds": round(time.time() - t0, 1)}
    (out / "fidelity.json").write_text(json.dumps(result, indent=2) + "\n")
    _print_result(result)
    return result


def weakest_group(report: dict[str, dict]) -> str:
    """The tone with the fewest images in group; ties go to the fewest in core, then to the mean ITA
    farthest from the core's centre."""
    def badness(tone: str) -> tuple[float, float, float]:
        centre = sum(CORE_ITA[tone]) / 2
        r = report[tone]
        return r["in_group"], r.get("in_core", 0.0), -abs(r["mean_ita"] - centre)

    return min(report, key=badness)


def make_lora_data(folder: Path, target: str, n: int, seed: int) -> Path:
    """A tone-imbalanced set: 3/4 of the images in ``target``'s group, the rest split evenly; every image's
    ITA in its group's core range."""
    from ..tone.synthetic import TONE_GROUPS, make_dataset

    others = [g for g in TONE_GROUPS if g != target]
    counts = {target: n - 2 * (n // 8), **{g: n // 8 for g in others}}
    return make_dataset(folder, size=32, seed=seed, tone_counts=counts, malignant_fraction=0.5,
                        ita_ranges=CORE_ITA, overwrite=True)


def small_rebalance(pipe, cfg, out: Path, target: str, kw: dict, per_cell: int = REBALANCE_PER_CELL):
    """``per_cell`` more images for each (diagnosis, tone) cell of the tones the LoRA was not aimed at,
    from the base + LoRA ``pipe``, into ``out/rebalanced`` (written afresh), for ``review`` to show."""
    import shutil

    from ..tone.rebalance import pipeline_generate_fn, rebalance
    from ..tone.synthetic import TONE_GROUPS

    codes = {g: str(i) for i, g in enumerate(TONE_GROUPS)}
    others = [codes[g] for g in TONE_GROUPS if g != target]
    with open(out / "data" / "metadata.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    goal = {}
    for dx in ("benign", "malignant"):
        for tone in others:
            goal[(dx, tone)] = per_cell + sum(r["benign_malignant"] == dx and r["skin_tone"] == tone for r in rows)
    shutil.rmtree(out / "rebalanced", ignore_errors=True)
    generate_fn = pipeline_generate_fn(pipe, steps=kw["steps"], guidance_scale=kw["guidance_scale"],
                                       height=kw["size"], width=kw["size"])
    return rebalance(out / "data", out / "rebalanced", generate_fn, target=goal, max_tries=3, seed=cfg.train.seed,
                     adapter=cfg.output.dir, progress=False, link=True)


def save_before_after_grid(cfg, builder, path: Path) -> Path:
    """Base and base + LoRA diagnosis × tone grids side by side (same seed per cell), with provenance."""
    from ..generation.generate import render_grid
    from ..generation.grid import make_grid, save_png

    pipe = models.load_pipeline(cfg.model.base, cfg.model.revision)
    kw = dict(seed=cfg.validation.seed, steps=cfg.validation.inference_steps,
              guidance_scale=cfg.validation.guidance_scale, height=cfg.data.resolution, width=cfg.data.resolution)
    before, _, _ = render_grid(pipe, builder, title=f"base ({cfg.model.base})", **kw)
    pipe.load_lora_weights(cfg.output.dir)
    after, _, _ = render_grid(pipe, builder, title="base + LoRA (stock load_lora_weights)", **kw)
    both = make_grid([before, after], 1, 2, min_cell=before.height)
    return save_png(both, path, {"synthetic": "true", "base_model": cfg.model.base,
                                 "adapters": json.dumps({cfg.output.dir: 1.0})})


def _print_result(result: dict) -> None:
    print(f"\nPer-tone fidelity ({len(DEMO_SEEDS)} seeds x 2 diagnoses per tone; share of images whose "
          "estimated ITA lands in the prompted group, and in its core range "
          + ", ".join(f"{t} [{lo:g}, {hi:g})" for t, (lo, hi) in CORE_ITA.items()) + "):")
    print(fidelity.format_table({"before": result["before"], "after LoRA": result["after"]}))
    t = result["target_group"]
    b, a = result["before"][t], result["after"][t]
    print(f"LoRA target: {t} ({b['in_group']:.0%} -> {a['in_group']:.0%} in group, {b['in_core']:.0%} -> "
          f"{a['in_core']:.0%} in core, mean ITA {b['mean_ita']:.1f} -> {a['mean_ita']:.1f})")
    print("\nDemo finished. Everything it wrote:")
    for key in ("dataset", "adapter", "config", "grid", "rebalanced"):
        print(f"  {key:<10} {result[key]}")
    print(f"  final loss {result['final_loss']:.4f}, training {result['train_seconds']} s, "
          f"total {result['total_seconds']} s")
    print("Load the adapter with plain diffusers: pipe.load_lora_weights('" + str(Path(result["adapter"]).parent)
          + "')")
    print(f"\nRebalanced: {result['rebalance_added']} checked synthetic images added in "
          f"{result['rebalance_seconds']} s. Review them in your browser (keyboard: A accept, 1-7 + R reject):")
    print(f"  dermdiff-lora review {result['rebalanced']} --reader YOUR_NAME")
