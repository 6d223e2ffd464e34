"""Everything a training run touches, built once: accelerator, models in their training dtypes and modes,
dataset (or latent cache), optimizer, LR schedule, balanced-sampling weights, trackers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import config
from ..data import cache
from . import checkpoint, cpu_bf16, modes

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
    resumed_from: int | None = None  # the checkpoint step this run resumed from (None: a fresh start)


def setup(cfg, *, resuming: bool) -> Run:
    """Build the run from a validated config (``resuming``: keep the run folder's checkpoints)."""
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
    cpu_bf16.guard_strided_convs(run.trained, acc.device.type, cfg.train.mixed_precision)
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


def _start_logging(run: Run) -> None:
    acc = run.accelerator
    if acc.is_main_process:
        config.save(run.cfg, run.cfg.output.dir)
        flat = {f"{s}.{k}": (v if isinstance(v, (int, float, str, bool)) else str(v))
                for s, sec in run.cfg.to_dict().items() for k, v in sec.items()}
        acc.init_trackers("dermdiff", config=flat)

