"""Sampling schedulers by name, and ``auto``: a fast multistep solver chosen from the base's own config.

``auto`` follows the diffusers docs' advice: DPM-Solver++ (2M) for epsilon, v and sample prediction, with
Karras sigmas for a base trained on the usual noise schedule; a base trained with zero terminal SNR
(``rescale_betas_zero_snr``, e.g. ``tiny``) keeps ``trailing`` timestep spacing and gets no Karras sigmas
(its last sigma is infinite), ending on sigma 0.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..core.errors import ConfigError

SCHEDULERS = {"pndm": "PNDMScheduler", "ddim": "DDIMScheduler", "ddpm": "DDPMScheduler",
              "euler": "EulerDiscreteScheduler", "euler_a": "EulerAncestralDiscreteScheduler",
              "dpm++": "DPMSolverMultistepScheduler", "unipc": "UniPCMultistepScheduler",
              "heun": "HeunDiscreteScheduler"}
CHOICES = ("default", "auto", *SCHEDULERS)  # default: the base's own scheduler
AUTO_STEPS = 25  # DPM-Solver++ 2M: 20-25 steps per the diffusers docs


def zero_terminal_snr(config: Mapping) -> bool:
    """True when the base was trained with zero terminal SNR (its last timestep is pure noise)."""
    return bool(config.get("rescale_betas_zero_snr"))


def auto_settings(config: Mapping) -> dict:
    """What ``auto`` changes in a base's scheduler config (recorded with a run)."""
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction", "sample"):
        raise ConfigError(f"scheduler auto: the base predicts {prediction!r}; pass --scheduler default or a name")
    settings = {"algorithm_type": "dpmsolver++", "solver_order": 2}
    if zero_terminal_snr(config):
        settings.update(use_karras_sigmas=False, timestep_spacing="trailing", final_sigmas_type="zero")
    else:
        settings.update(use_karras_sigmas=True)
    return settings


def make_scheduler(name: str, config: Mapping):
    """A new scheduler ``name`` (a key of ``SCHEDULERS``, or ``auto``) built from a base's scheduler config;
    ``None`` for ``default`` (keep the base's own)."""
    if name == "default":
        return None
    if name not in CHOICES:
        raise ConfigError(f"scheduler {name!r}: use {', '.join(CHOICES)}")
    import diffusers

    if name == "auto":
        return diffusers.DPMSolverMultistepScheduler.from_config(config, **auto_settings(config))
    return getattr(diffusers, SCHEDULERS[name]).from_config(config)


def set_scheduler(pipe, name: str) -> str:
    """Put scheduler ``name`` into ``pipe``; returns the class name it samples with."""
    scheduler = make_scheduler(name, pipe.scheduler.config)
    if scheduler is not None:
        pipe.scheduler = scheduler
    return type(pipe.scheduler).__name__
