"""Optimizer and learning-rate schedule from the config's ``optim`` section."""

from __future__ import annotations

from ..core.errors import ConfigError


def make_optimizer(params: list, optim_cfg, device_type: str = "cpu"):
    """AdamW (fused on CUDA and CPU: one kernel per tensor, no temporaries; foreach elsewhere) or
    bitsandbytes AdamW8bit."""
    import torch

    kw = dict(lr=optim_cfg.lr, betas=tuple(optim_cfg.betas), eps=optim_cfg.eps,
              weight_decay=optim_cfg.weight_decay)
    if not params:
        raise ConfigError("nothing to train: no parameter requires a gradient (check lora.target_modules)")
    if optim_cfg.name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as exc:  # pragma: no cover - bitsandbytes is a dependency
            raise ConfigError(f"optim.name=adamw8bit needs bitsandbytes ({exc})") from None
        return bnb.optim.AdamW8bit(params, min_8bit_size=optim_cfg.min_8bit_size, **kw)
    if device_type in ("cuda", "cpu"):
        return torch.optim.AdamW(params, fused=True, **kw)
    return torch.optim.AdamW(params, foreach=True, **kw)


def make_scheduler(optimizer, optim_cfg, max_steps: int):
    """A diffusers LR schedule, stepped once per optimizer step."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(optim_cfg.scheduler, optimizer, num_warmup_steps=optim_cfg.warmup_steps,
                         num_training_steps=max_steps)


def optimizer_state_bytes(optimizer) -> int:
    """Bytes held by the optimizer's state tensors (Adam moments, 8-bit quantisation maps, ...)."""
    import torch

    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total
