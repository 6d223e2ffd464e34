"""The PEFT methods an adapter can be trained with, each through peft's own config class.

``lora`` (LoraConfig), ``dora`` (LoraConfig(use_dora=True): weight-decomposed, a magnitude vector per output
channel beside A and B), ``loha`` (LoHaConfig: ΔW = (w1_a w1_b) ⊙ (w2_a w2_b)) and ``lokr`` (LoKrConfig:
ΔW = w1 ⊗ w2, the larger factor optionally low-rank). ``conv_rank`` / ``conv_alpha`` give convolutions with a
kernel larger than 1×1 their own rank and alpha (LyCORIS' ``conv_dim`` / ``conv_alpha``; 1×1 convolutions are
linear layers to LyCORIS and keep ``rank``) through peft's ``rank_pattern`` / ``alpha_pattern``.
"""

from __future__ import annotations

from ..core.config import expand_targets


def matches(name: str, targets: list[str]) -> bool:
    """peft's rule for a list of target names: the module name is one, or ends with ``.<one>``."""
    return any(name == t or name.endswith("." + t) for t in targets)


def conv_patterns(model, targets: list[str], settings) -> tuple[dict, dict]:
    """``rank_pattern`` / ``alpha_pattern`` giving the targeted k×k convolutions conv_rank / conv_alpha."""
    import torch

    if model is None or (settings.conv_rank is None and settings.conv_alpha is None):
        return {}, {}
    convs = [name for name, m in model.named_modules()
             if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1) and matches(name, targets)]
    ranks = {f"^{n}$": settings.conv_rank for n in convs} if settings.conv_rank is not None else {}
    alphas = {f"^{n}$": settings.conv_alpha for n in convs} if settings.conv_alpha is not None else {}
    return ranks, alphas


def build_config(settings, targets: list[str], model=None):
    """The peft config of ``settings`` (the ``lora`` config section) for ``targets`` of ``model``."""
    from peft import LoHaConfig, LoKrConfig, LoraConfig

    targets = expand_targets(list(targets))
    ranks, alphas = conv_patterns(model, targets, settings)
    common = {"r": settings.rank, "target_modules": targets, "rank_pattern": ranks, "alpha_pattern": alphas}
    method = settings.method
    if method in ("lora", "dora"):
        return LoraConfig(lora_alpha=settings.alpha, lora_dropout=settings.dropout, init_lora_weights="gaussian",
                          use_dora=method == "dora", **common)
    lycoris = {"alpha": settings.alpha, "rank_dropout": settings.rank_dropout,
               "module_dropout": settings.module_dropout, **common}
    if method == "loha":
        return LoHaConfig(**lycoris)
    return LoKrConfig(decompose_both=settings.decompose_both, decompose_factor=settings.factor, **lycoris)


def method_of(model) -> str:
    """The method of a peft-wrapped model's 'default' adapter."""
    cfg = model.peft_config["default"]
    kind = str(getattr(cfg.peft_type, "value", cfg.peft_type)).lower()
    return "dora" if kind == "lora" and getattr(cfg, "use_dora", False) else kind
