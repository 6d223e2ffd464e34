"""The training loop: one loop for LoRA and full UNet fine-tuning (accelerate), read top to bottom.

``session.setup`` builds the run; mode differences live in ``modes.setup_lora`` / ``modes.setup_full`` and
``validation.save_lora`` / ``validation.save_full``. Under fp16 a loss scaler runs (on a GPU): an
overflowed optimizer step is skipped and changes nothing (weights, LR schedule, EMA, step count); the run
stops after ``train.max_skipped_steps`` such steps in a row. Without a scaler a non-finite loss (or gradient
norm, when clipping) stops the run before the optimizer step, naming the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import resource
import time
from pathlib import Path
from typing import Any, NamedTuple

from ..core import config, killpoints
from ..core.errors import TrainingError
from ..core.fsutil import atomic_write
from ..core.lock import folder_lock
from ..data import cache
from . import checkpoint, modes
from .checkpoint import TrainState
from .session import Run, setup

log = logging.getLogger(__name__)


def train(cfg, *, stop_after: int | None = None) -> dict:
    """Train as the config says; returns (and writes) the JSON summary. ``stop_after`` simulates a
    pause: stop (with a checkpoint) after that many optimizer steps, to resume later.

    The first process holds ``output.dir``'s lock throughout: a second run into the same folder is refused
    while this one lives; a killed run's lock goes with its process."""
    t0 = time.time()
    first = int(os.environ.get("RANK", "0")) == 0  # before accelerate exists: torchrun/accelerate set RANK
    with folder_lock(cfg.output.dir, "train") if first else contextlib.nullcontext():
        run, state = start(cfg)
        fit(run, state, min(cfg.train.max_steps, stop_after or cfg.train.max_steps))
        if state.step < cfg.train.max_steps:
            checkpoint.save(run.accelerator, Path(cfg.output.dir), state, cfg.train.keep_checkpoints)
            run.accelerator.end_training()
            return {"paused_at_step": state.step, "resumed_from": run.resumed_from, "output_dir": cfg.output.dir}
        return finish(run, state, time.time() - t0)


def start(cfg) -> tuple[Run, TrainState]:
    """Set up the run, resumed from a checkpoint when ``train.resume`` names one (or ``latest`` finds one)."""
    resume_from = checkpoint.resolve_resume(Path(cfg.output.dir), cfg.train.resume)
    run = setup(cfg, resuming=resume_from is not None)
    if resume_from is None:
        log.info("resumed_from=null: a fresh start%s", " (no checkpoint yet)" if cfg.train.resume else "")
        return run, TrainState()
    return run, resume(run, resume_from)


def resume(run: Run, folder: Path) -> TrainState:
    """Load a checkpoint into the set-up run: weights, optimizer, LR schedule, RNG, loss scale, EMA."""
    state = checkpoint.load(run.accelerator, folder, run.cfg.train.gradient_accumulation)
    modes.place_ema(run)  # accelerate loads custom states on the CPU; EMAModel keeps what it is given
    run.resumed_from = state.step
    log.info("resumed_from=%d: resumed from %s", state.step, folder)
    return state


def fit(run: Run, state: TrainState, stop: int) -> None:
    """Optimizer steps until ``state.step`` reaches ``stop``."""
    bar = _progress(run.accelerator, run.cfg, state.step)
    while state.step < stop:  # more than one pass only when fp16 overflows skipped steps
        _run_batches(run, state, stop, bar)
    bar.close()


def _run_batches(run: Run, state: TrainState, stop: int, bar) -> None:
    """The micro-batches of the ``stop - state.step`` optimizer steps still to take (fewer steps if some
    are skipped)."""
    acc, accum = run.accelerator, run.cfg.train.gradient_accumulation
    losses: list[float] = []
    for batch in micro_loader(run, state.micro_step, state.micro_step + (stop - state.step) * accum):
        loss, skipped = _guarded_micro_step(run, state, batch)
        losses.append(loss)
        state.micro_step += 1
        state.images_seen += run.cfg.train.batch_size * acc.num_processes
        if not acc.sync_gradients:
            continue
        if skipped:
            _count_skipped(run, state)
        else:
            advance(run)
            state.step, state.loss, state.skipped_in_a_row = state.step + 1, sum(losses) / len(losses), 0
            after_step(run, state, bar)
        losses = []


class MicroStep(NamedTuple):
    """What ``micro_step`` did."""

    loss: Any  # this micro-batch's loss (a tensor on the device)
    skipped: bool  # the optimizer step that ended here was skipped: fp16 overflow


class NonFiniteGradients(TrainingError):
    """The gradient norm is not finite and no loss scaler runs: raised before the optimizer step."""


def micro_step(run: Run, batch: dict) -> MicroStep:
    """Loss, backward, and (at the end of an accumulation) clipping and the optimizer step."""
    acc, cfg = run.accelerator, run.cfg
    with acc.accumulate(*run.trained):
        loss = training_loss(run, batch)
        acc.backward(loss)
        scale = _loss_scale(acc) if acc.sync_gradients and acc.scaler is not None else None  # before the step
        if acc.sync_gradients and cfg.train.max_grad_norm:
            norm = acc.clip_grad_norm_(run.params, cfg.train.max_grad_norm)
            if acc.scaler is None and norm is not None and not math.isfinite(float(norm)):
                raise NonFiniteGradients(f"loss became {loss.item()}" if not math.isfinite(loss.item())
                                         else f"gradient norm became {float(norm)}")
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    return MicroStep(loss, scale is not None and _step_skipped(acc, scale))


def _loss_scale(acc) -> float:
    return acc.scaler.get_scale() if acc.scaler is not None else 1.0


def _step_skipped(acc, scale_before: float) -> bool:
    """The loss scaler found inf/NaN gradients and skipped the step. Fused optimizers (our AdamW) take the
    skip inside their own step, which accelerate's ``optimizer_step_was_skipped`` does not see; the scaler
    halving its scale does."""
    return acc.optimizer_step_was_skipped or _loss_scale(acc) < scale_before


def advance(run: Run) -> None:
    """After an applied optimizer step: the LR schedule and the EMA follow."""
    run.lr_scheduler.step()
    if run.ema is not None:
        run.ema.step(run.accelerator.unwrap_model(run.parts.unet).parameters())


def _guarded_micro_step(run: Run, state: TrainState, batch: dict) -> tuple[float, bool]:
    """``micro_step``, stopping the run on a non-finite loss or gradient norm unless a loss scaler runs."""
    acc = run.accelerator
    try:
        out = micro_step(run, batch)
    except NonFiniteGradients as exc:
        raise _stopped(run, state, str(exc), "lower optim.lr or use bf16") from None
    mean_loss = acc.gather(out.loss.detach().reshape(1)).mean().item()
    if not math.isfinite(mean_loss) and acc.scaler is None:
        raise _stopped(run, state, f"loss became {mean_loss}", "lower optim.lr or use bf16")
    return mean_loss, out.skipped


def _count_skipped(run: Run, state: TrainState) -> None:
    """Count an overflowed (skipped) fp16 step; stop after ``train.max_skipped_steps`` in a row."""
    limit = run.cfg.train.max_skipped_steps
    state.skipped_steps, state.skipped_in_a_row = state.skipped_steps + 1, state.skipped_in_a_row + 1
    log.warning("fp16 overflow: optimizer step %d skipped (%d in a row, stop at %d); loss scale now %g",
                state.step + 1, state.skipped_in_a_row, limit, _loss_scale(run.accelerator))
    if state.skipped_in_a_row >= limit:
        raise _stopped(run, state, f"{limit} optimizer steps in a row overflowed in fp16 "
                                   f"(train.max_skipped_steps={limit})",
                       "lower optim.lr, use train.mixed_precision=bf16 or raise train.max_skipped_steps")


def _stopped(run: Run, state: TrainState, what: str, fix: str) -> TrainingError:
    last = checkpoint.list_checkpoints(Path(run.cfg.output.dir))
    return TrainingError(f"{what} at step {state.step + 1}; stopped. Last good checkpoint: "
                         f"{last[-1] if last else 'none'} ({fix})")


def make_loader(run: Run, start_step: int, stop_step: int):
    """The batches of optimizer steps ``[start_step, stop_step)`` (each ``train.gradient_accumulation``
    micro-batches), assuming no step is skipped."""
    accum = run.cfg.train.gradient_accumulation
    return micro_loader(run, start_step * accum, stop_step * accum)


def micro_loader(run: Run, start: int, stop: int):
    """The DataLoader of micro-batches ``[start, stop)`` of this process (see ``StepBatchSampler``)."""
    import torch

    from ..data.dataset import collate
    from ..data.loading import loader_options
    from ..data.sampler import StepBatchSampler

    cfg, acc = run.cfg, run.accelerator
    sampler = StepBatchSampler(len(run.dataset), cfg.train.batch_size, seed=cfg.train.seed, start=start,
                               stop=stop, num_processes=acc.num_processes, process_index=acc.process_index,
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


def after_step(run: Run, state: TrainState, bar) -> None:
    """After an applied optimizer step: progress, logs, checkpoint and validation grid when due."""
    cfg, acc, step = run.cfg, run.accelerator, state.step
    lr = run.lr_scheduler.get_last_lr()[0]
    bar.update(1)
    bar.set_postfix(loss=f"{state.loss:.4f}", lr=f"{lr:.2e}")
    if step % cfg.logging.log_every == 0 or step == cfg.train.max_steps:
        acc.log({"train/loss": state.loss, "train/lr": lr, "train/skipped_steps": state.skipped_steps}, step=step)
    if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
        checkpoint.save(acc, Path(cfg.output.dir), state, cfg.train.keep_checkpoints)
    if cfg.validation.every and step % cfg.validation.every == 0 and step < cfg.train.max_steps:
        validate(run, step)


def _progress(acc, cfg, initial: int):
    from ..core.progress import progress

    return progress(total=cfg.train.max_steps, initial=initial, desc=f"train ({cfg.train.mode})", unit="step",
                    disable=not (cfg.logging.progress and acc.is_local_main_process))


def validate(run: Run, step: int) -> Path | None:
    """Render the diagnosis × tone grid with the current (EMA, for full mode) weights."""
    from .validation import render_validation_grid

    with cache.frozen_on_device(run):
        return render_validation_grid(run, step)


def finish(run: Run, state: TrainState, seconds: float) -> dict:
    """Save the final output (adapter or pipeline folder), a last grid, and the JSON summary."""
    from .validation import save_outputs

    cfg, acc = run.cfg, run.accelerator
    outputs = save_outputs(run)
    grid = validate(run, state.step) if cfg.validation.at_end else None
    summary = {
        "mode": cfg.train.mode, "steps": state.step, "resumed_from": run.resumed_from, "final_loss": state.loss,
        "images_seen": state.images_seen, "skipped_steps": state.skipped_steps, "seconds": round(seconds, 2),
        "processes": acc.num_processes, "device": str(acc.device),
        "peak_memory_bytes": _peak_memory(acc), "skipped_images": len(run.index.skipped),
        "dataset_images": len(run.index.records), "group_mix": run.group_mix, "data": run.index.report,
        "outputs": {**outputs, "validation_grid": str(grid) if grid else None,
                    "config": str(Path(cfg.output.dir) / config.CONFIG_FILENAME)},
    }
    if acc.is_main_process:
        killpoints.reached("train.before_summary")
        atomic_write(Path(cfg.output.dir) / checkpoint.SUMMARY_FILE, json.dumps(summary, indent=2))
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
