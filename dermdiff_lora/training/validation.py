"""What training writes besides checkpoints: validation grids and the final adapter / pipeline folder."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..core.version import __version__
from ..generation.grid import save_png

log = logging.getLogger(__name__)


def adapter_metadata(cfg, builder) -> dict:
    """The package's own adapter metadata (beside diffusers' LoraConfig header)."""
    lc = cfg.lora
    method = {"method": lc.method, **({"factor": lc.factor, "decompose_both": lc.decompose_both}
                                      if lc.method == "lokr" else {}),
              **({"conv_rank": lc.conv_rank, "conv_alpha": lc.conv_alpha} if lc.conv_rank or lc.conv_alpha else {})}
    return {"base_model": cfg.model.base, "base_revision": cfg.model.revision, "rank": cfg.lora.rank, **method,
            "alpha": cfg.lora.alpha, "target_modules": list(cfg.lora.target_modules),
            "text_encoder": cfg.lora.text_encoder, "prompt_template": builder.template,
            "value_maps": builder.to_dict()["value_maps"], "train_steps": cfg.train.max_steps,
            "resolution": cfg.data.resolution}


def save_outputs(run) -> dict:
    acc = run.accelerator
    acc.wait_for_everyone()
    outputs = {}
    if acc.is_main_process:
        outputs = save_lora(run) if run.cfg.train.mode == "lora" else save_full(run)
    acc.wait_for_everyone()
    return outputs


def save_lora(run) -> dict:
    from ..adapters import lora

    acc, cfg = run.accelerator, run.cfg
    unet = acc.unwrap_model(run.parts.unet)
    te = acc.unwrap_model(run.parts.text_encoder) if cfg.lora.text_encoder else None
    path = lora.save_adapter(cfg.output.dir, unet, te, meta=adapter_metadata(cfg, run.builder))
    return {"adapter": str(path)}


def save_full(run) -> dict:
    """A pipeline folder stock ``from_pretrained`` loads, holding the EMA weights when EMA is on."""
    from diffusers import StableDiffusionPipeline

    acc, cfg, parts = run.accelerator, run.cfg, run.parts
    out = Path(cfg.output.dir)
    with ema_weights(run):
        unet = acc.unwrap_model(parts.unet)
        pipe = StableDiffusionPipeline.from_pretrained(
            parts.folder, unet=unet, text_encoder=parts.text_encoder, vae=parts.vae,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        tmp = Path(tempfile.mkdtemp(prefix=".pipeline-", dir=out))
        try:
            _to_fp32(pipe)
            pipe.save_pretrained(tmp, safe_serialization=True)
            for item in tmp.iterdir():
                target = out / item.name
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(item, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            _to_dtype(parts, run.weight_dtype)
    return {"pipeline": str(out), "ema": run.ema is not None}


def _to_fp32(pipe) -> None:
    import torch

    _to_dtype(pipe, torch.float32)


def _to_dtype(parts, dtype) -> None:
    for model in (parts.vae, parts.text_encoder):
        if model.dtype != dtype:
            model.to(dtype=dtype)


@contextmanager
def ema_weights(run):
    """Temporarily swap the EMA weights into the UNet (no-op without EMA)."""
    if run.ema is None:
        yield
        return
    params = list(run.accelerator.unwrap_model(run.parts.unet).parameters())
    run.ema.store(params)
    run.ema.copy_to(params)
    try:
        yield
    finally:
        run.ema.restore(params)


@contextmanager
def eval_mode(run):
    """The trained modules in eval mode for the duration (no LoRA dropout in a grid), train mode after."""
    models = [run.accelerator.unwrap_model(m) for m in run.trained]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for model in models:
            model.train()


def render_validation_grid(run, step: int) -> Path | None:
    """Render the diagnosis × tone grid with the weights being trained; log it to TensorBoard."""
    import numpy as np
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from ..generation.generate import render_grid

    acc, cfg, parts = run.accelerator, run.cfg, run.parts
    if not acc.is_main_process or not run.builder.template:
        return None
    res = cfg.validation.resolution or cfg.data.resolution
    with ema_weights(run), eval_mode(run), torch.no_grad():
        pipe = StableDiffusionPipeline(
            vae=parts.vae, text_encoder=acc.unwrap_model(parts.text_encoder), tokenizer=parts.tokenizer,
            unet=acc.unwrap_model(parts.unet),
            scheduler=DPMSolverMultistepScheduler.from_pretrained(parts.folder, subfolder="scheduler"),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        with acc.autocast():
            grid, _, _ = render_grid(pipe, run.builder, seed=cfg.validation.seed, steps=cfg.validation.inference_steps,
                                     guidance_scale=cfg.validation.guidance_scale, height=res, width=res,
                                     title=f"step {step}")
    path = save_png(grid, Path(cfg.output.dir) / "validation" / f"step-{step:06d}.png",
                    {"synthetic": "true", "base_model": cfg.model.base, "step": str(step),
                     "package_version": __version__})
    for tracker in acc.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("validation/grid", np.asarray(grid), step, dataformats="HWC")
    return path
