"""The training loop: one loop for LoRA and full UNet fine-tuning (accelerate), read top to bottom.

Mode differences live in ``modes.setup_lora`` / ``modes.setup_full`` and ``validation.save_lora`` /
``validation.save_full``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import config
from ..core.errors import TrainingError
from ..data import cache
from . import checkpoint, modes

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything the loop touches, built once by ``setup``."""

    cfg: Any
    accelerator: Any
    parts: Any
    builder: Any
    index: Any
    dataset: Any
    params: list
    optimizer: Any = None
    lr_scheduler: Any = None
    ema: Any = None
    weight_dtype: Any = None
    empty_ids: Any = None
    weights: list | None = None
    trained: list = field(default_factory=list)  # the modules the optimizer changes (accelerate-prepared)
    group_mix: dict | None = None  # expected tone x diagnosis mix of balanced sampling
    empty_embedding: Any = None  # cached text embedding of the empty prompt (caption dropout)
    offloaded: list[str] = field(default_factory=list)  # components moved off the accelerator by the cache


def train(cfg, *, stop_after: int | None = None) -> dict:
    """Train as the config says; returns (and writes) the JSON summary. ``stop_after`` simulates a
    pause: stop (with a checkpoint) after that many optimizer steps, to resume later."""

    t0 = time.time()
    run_dir = Path(cfg.output.dir)
    resume_from = checkpoint.resolve_resume(run_dir, cfg.train.resume)
    run = setup(cfg, resuming=resume_from is not None)
    acc = run.accelerator
    state = {"step": 0, "images_seen": 0, "loss": None}
    if resume_from is not None:
        state = checkpoint.load(acc, resume_from)
        log.info("resumed from %s at step %d", resume_from, state["step"])
    stop = min(cfg.train.max_steps, stop_after or cfg.train.max_steps)
    loader = make_loader(run, state["step"], stop)
    bar = _progress(acc, cfg, state["step"])
    loss_sum, micro = 0.0, 0
    for batch in loader:
        loss = micro_step(run, batch)
        mean_loss = acc.gather(loss.detach().reshape(1)).mean().item()
        if not math.isfinite(mean_loss):
            last = checkpoint.list_checkpoints(run_dir)
            raise TrainingError(f"loss became {mean_loss} at step {state['step'] + 1}; stopped. Last good "
                                f"checkpoint: {last[-1] if last else 'none'} (lower optim.lr or use bf16)")
        loss_sum, micro = loss_sum + mean_loss, micro + 1
        state["images_seen"] += cfg.train.batch_size * acc.num_processes
        if not acc.sync_gradients:
            continue
        run.lr_scheduler.step()
        if run.ema is not None:
            run.ema.step(acc.unwrap_model(run.parts.unet).parameters())
        state["step"] += 1
        state["loss"], loss_sum, micro = loss_sum / micro, 0.0, 0
        after_step(run, state, bar)
    bar.close()
    if state["step"] < cfg.train.max_steps:
        checkpoint.save(acc, run_dir, state["step"], state, cfg.train.keep_checkpoints)
        acc.end_training()
        return {"paused_at_step": state["step"], "output_dir": str(run_dir)}
    return finish(run, state, time.time() - t0)


def micro_step(run: Run, batch: dict):
    """Loss, backward, and (at the end of an accumulation) clipping and the optimizer step."""
    acc, cfg = run.accelerator, run.cfg
    with acc.accumulate(*run.trained):
        loss = training_loss(run, batch)
        acc.backward(loss)
        if acc.sync_gradients and cfg.train.max_grad_norm:
            acc.clip_grad_norm_(run.params, cfg.train.max_grad_norm)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    return loss


def setup(cfg, *, resuming: bool) -> Run:
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration, set_seed

    from ..core import models
    from ..data import dataset as data
    from .ddp import ddp_handlers
    from .optim import make_optimizer, make_scheduler

    run_dir = Path(cfg.output.dir)
    # One Accelerator per train() call: forget the previous call's precision (not its process group), so a
    # notebook or test can train twice in one process with different settings.
    AcceleratorState._reset_state(reset_partial_state=False)
    # cpu=True on accelerator-less machines makes torchrun's processes a real gloo group.
    acc = Accelerator(cpu=not _has_accelerator(), gradient_accumulation_steps=cfg.train.gradient_accumulation,
                      mixed_precision=cfg.train.mixed_precision, kwargs_handlers=ddp_handlers(),
                      log_with="tensorboard" if cfg.logging.tensorboard else None,
                      project_config=ProjectConfiguration(project_dir=str(run_dir),
                                                          logging_dir=str(run_dir / "logs")))
    if acc.is_main_process:
        checkpoint.prepare_run_dir(run_dir, overwrite=cfg.output.overwrite, resuming=resuming)
    acc.wait_for_everyone()
    set_seed(cfg.train.seed)
    if acc.device.type == "cuda" and cfg.speed.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    _log_safety_checker(cfg)
    parts = models.load_parts(cfg.model.base, cfg.model.revision, cfg.model.allow_pickle)
    cfg, builder, index = data.prepare(cfg)  # value maps completed with the data's classes: saved below
    run = Run(cfg, acc, parts, builder, index, data.ImageCaptionDataset(index, cfg.data, parts.tokenizer), [])
    run.weight_dtype = _weight_dtype(cfg, acc)
    (modes.setup_lora if cfg.train.mode == "lora" else modes.setup_full)(run)
    _fast_paths(run)
    if cache.cache_enabled(cfg):
        cache.attach(run)
    run.optimizer = make_optimizer(run.params, cfg.optim, acc.device.type)
    run.lr_scheduler = make_scheduler(run.optimizer, cfg.optim, cfg.train.max_steps)
    prepared = acc.prepare(*run.trained, run.optimizer)
    run.trained, run.optimizer = list(prepared[:-1]), prepared[-1]
    run.parts.unet = run.trained[0]
    if cfg.lora.text_encoder:
        run.parts.text_encoder = run.trained[1]
    if cfg.speed.compile:
        run.parts.unet.compile()  # in place: state-dict keys, peft and EMA see the same module
    acc.register_for_checkpointing(run.lr_scheduler)
    if run.ema is not None:
        acc.register_for_checkpointing(run.ema)
    run.empty_ids = data.tokenize(parts.tokenizer, "").unsqueeze(0)
    run.weights = _balance_weights(run)
    _start_logging(run)
    return run


def _has_accelerator() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available())


def _weight_dtype(cfg, acc):
    import torch

    if cfg.train.mixed_precision == "bf16":
        return torch.bfloat16
    if cfg.train.mixed_precision == "fp16":
        if acc.device.type == "cpu":
            log.warning("fp16 on CPU computes in fp32; use train.mixed_precision=bf16 for a real speed-up")
            return torch.float32
        return torch.float16
    return torch.float32


def _log_safety_checker(cfg) -> None:
    state = "ON (it blacks out many skin images)" if cfg.model.safety_checker else "off"
    log.info("SD NSFW safety checker: %s (model.safety_checker)", state)


def _fast_paths(run: Run) -> None:
    """``speed``: fused SDPA attention (or diffusers' plain processor) and channels-last UNet weights."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    speed = run.cfg.speed
    for model in (run.parts.unet, run.parts.vae):
        model.set_attn_processor(AttnProcessor2_0() if speed.sdpa else AttnProcessor())
    if speed.channels_last:
        run.parts.unet.to(memory_format=torch.channels_last)


def _balance_weights(run: Run) -> list[float] | None:
    from ..data.balance import sampling_weights

    weights, run.group_mix = sampling_weights(run.index, run.cfg.data)
    return weights


def make_loader(run: Run, start_step: int, stop_step: int):
    import torch

    from ..data.dataset import collate
    from ..data.loading import loader_options
    from ..data.sampler import StepBatchSampler

    cfg, acc = run.cfg, run.accelerator
    accum = cfg.train.gradient_accumulation
    sampler = StepBatchSampler(len(run.dataset), cfg.train.batch_size, seed=cfg.train.seed,
                               start=start_step * accum, stop=stop_step * accum,
                               num_processes=acc.num_processes, process_index=acc.process_index,
                               weights=run.weights)
    # Its own generator: creating the iterator must not draw from the global RNG (LoRA dropout uses it,
    # and a resumed run creates the iterator at another point of that stream).
    return torch.utils.data.DataLoader(run.dataset, batch_sampler=sampler,
                                       collate_fn=getattr(run.dataset, "collate", collate),
                                       **loader_options(cfg.data, acc.num_processes),
                                       generator=torch.Generator().manual_seed(cfg.train.seed),
                                       pin_memory=cfg.speed.pin_memory and acc.device.type == "cuda")


def training_loss(run: Run, batch: dict):
    """Denoising loss of one micro-batch; all randomness comes from each sample's own seed."""
    import torch.nn.functional as F

    cfg, parts, acc = run.cfg, run.parts, run.accelerator
    device, sched = acc.device, parts.noise_scheduler
    noise_rand = _per_sample_randoms(batch["seed"], _latent_size(run, batch), run)
    mean, std = _latent_dist(run, batch)
    eps = noise_rand["latent_eps"].to(device, mean.dtype)
    latents = ((mean + std * eps) * parts.vae.config.scaling_factor).float()
    noise = noise_rand["noise"].to(device)
    if cfg.train.noise_offset:
        noise = noise + cfg.train.noise_offset * noise_rand["offset"].to(device)
    timesteps = noise_rand["timesteps"].to(device)
    noisy = sched.add_noise(latents, noise, timesteps)
    hidden = _text_embeddings(run, batch, noise_rand["drop"].to(device))
    target = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(latents, noise, timesteps)
    pred = parts.unet(noisy, timesteps, hidden, return_dict=False)[0]
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if cfg.train.snr_gamma:
        per_sample = per_sample * _min_snr_weights(sched, timesteps, cfg.train.snr_gamma)
    return per_sample.mean()


def _latent_size(run: Run, batch: dict) -> tuple[int, int]:
    if "latent_mean" in batch:
        return tuple(batch["latent_mean"].shape[-2:])
    f = 2 ** (len(run.parts.vae.config.block_out_channels) - 1)
    return tuple(s // f for s in batch["pixel_values"].shape[-2:])


def _latent_dist(run: Run, batch: dict):
    """Mean and std of each image's VAE posterior: from the latent cache, or encoded now. Contiguous
    either way: the VAE may return channels-last views, and the UNet's kernels follow the input layout."""
    import torch

    device = run.accelerator.device
    if "latent_mean" in batch:
        return batch["latent_mean"].to(device), batch["latent_std"].to(device)
    with torch.no_grad():
        dist = run.parts.vae.encode(batch["pixel_values"].to(device, run.weight_dtype)).latent_dist
    return dist.mean.contiguous(), dist.std.contiguous()


def _text_embeddings(run: Run, batch: dict, drop):
    """Encoder hidden states (cached or encoded now); dropped captions get the empty prompt's."""
    import torch

    device, cfg = run.accelerator.device, run.cfg
    if "encoder_hidden_states" in batch:
        hidden = batch["encoder_hidden_states"].to(device)
        if drop.any():
            hidden = torch.where(drop[:, None, None], run.empty_embedding.to(device), hidden)
        return hidden
    ids = batch["input_ids"].to(device)
    if drop.any():
        ids = torch.where(drop[:, None], run.empty_ids.to(device).expand_as(ids), ids)
    with torch.set_grad_enabled(cfg.lora.text_encoder and cfg.train.mode == "lora"):
        return run.parts.text_encoder(ids, return_dict=False)[0]


def _per_sample_randoms(seeds, latent_size: tuple[int, int], run: Run) -> dict:
    """Latent sampling noise, diffusion noise, offset noise, timestep and caption-dropout draw per sample."""
    import torch

    h, w = latent_size
    c = run.parts.vae.config.latent_channels
    n_train = run.parts.noise_scheduler.config.num_train_timesteps
    out: dict[str, list] = {"latent_eps": [], "noise": [], "offset": [], "timesteps": [], "drop": []}
    for s in seeds.tolist():
        g = torch.Generator().manual_seed(int(s) ^ 0x5EED)
        out["latent_eps"].append(torch.randn(c, h, w, generator=g))
        out["noise"].append(torch.randn(c, h, w, generator=g))
        out["offset"].append(torch.randn(c, 1, 1, generator=g))
        out["timesteps"].append(torch.randint(0, n_train, (), generator=g))
        out["drop"].append(torch.rand((), generator=g) < run.cfg.prompts.caption_dropout)
    return {k: torch.stack(v) for k, v in out.items()}


def _min_snr_weights(sched, timesteps, gamma: float):
    import torch
    from diffusers.training_utils import compute_snr

    snr = compute_snr(sched, timesteps)
    weights = torch.clamp(snr, max=gamma) / snr
    if sched.config.prediction_type == "v_prediction":
        weights = torch.clamp(snr, max=gamma) / (snr + 1)
    return weights


def after_step(run: Run, state: dict, bar) -> None:
    cfg, acc = run.cfg, run.accelerator
    lr = run.lr_scheduler.get_last_lr()[0]
    bar.update(1)
    bar.set_postfix(loss=f"{state['loss']:.4f}", lr=f"{lr:.2e}")
    if state["step"] % cfg.logging.log_every == 0 or state["step"] == cfg.train.max_steps:
        acc.log({"train/loss": state["loss"], "train/lr": lr}, step=state["step"])
    if cfg.train.checkpoint_every and state["step"] % cfg.train.checkpoint_every == 0:
        checkpoint.save(acc, Path(cfg.output.dir), state["step"], state, cfg.train.keep_checkpoints)
    if cfg.validation.every and state["step"] % cfg.validation.every == 0 and state["step"] < cfg.train.max_steps:
        validate(run, state["step"])


def _progress(acc, cfg, initial: int):
    from ..core.progress import progress

    return progress(total=cfg.train.max_steps, initial=initial, desc=f"train ({cfg.train.mode})", unit="step",
                    disable=not (cfg.logging.progress and acc.is_local_main_process))


def _start_logging(run: Run) -> None:
    acc = run.accelerator
    if acc.is_main_process:
        config.save(run.cfg, run.cfg.output.dir)
        flat = {f"{s}.{k}": (v if isinstance(v, (int, float, str, bool)) else str(v))
                for s, sec in run.cfg.to_dict().items() for k, v in sec.items()}
        acc.init_trackers("dermdiff", config=flat)


def validate(run: Run, step: int) -> Path | None:
    """Render the diagnosis × tone grid with the current (EMA, for full mode) weights."""
    from .validation import render_validation_grid

    with cache.frozen_on_device(run):
        return render_validation_grid(run, step)


def finish(run: Run, state: dict, seconds: float) -> dict:
    """Save the final output (adapter or pipeline folder), a last grid, and the JSON summary."""
    from .validation import save_outputs

    cfg, acc = run.cfg, run.accelerator
    outputs = save_outputs(run)
    grid = validate(run, state["step"]) if cfg.validation.at_end else None
    summary = {
        "mode": cfg.train.mode, "steps": state["step"], "final_loss": state["loss"],
        "images_seen": state["images_seen"], "seconds": round(seconds, 2),
        "processes": acc.num_processes, "device": str(acc.device),
        "peak_memory_bytes": _peak_memory(acc), "skipped_images": len(run.index.skipped),
        "dataset_images": len(run.index.records), "group_mix": run.group_mix, "data": run.index.report,
        "outputs": {**outputs, "validation_grid": str(grid) if grid else None,
                    "config": str(Path(cfg.output.dir) / config.CONFIG_FILENAME)},
    }
    if acc.is_main_process:
        path = Path(cfg.output.dir) / checkpoint.SUMMARY_FILE
        path.write_text(json.dumps(summary, indent=2))
    acc.end_training()
    return summary


def _peak_memory(acc) -> dict:
    import torch

    out = {"process_max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if acc.device.type == "cuda":
        out["cuda_max_allocated"] = torch.cuda.max_memory_allocated()
    return out


def run_from_cli(config_path: str, overrides: list[str]) -> dict:
    cfg = config.load(config_path, overrides)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return train(cfg)
