"""Small hand-made adapters on the tiny-random base (cached per session) and a fixed UNet probe."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

BROAD = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "conv_shortcut", "proj_in", "proj_out",
         "ff.net.0.proj", "ff.net.2", "time_emb_proj")
TEMPLATE = "{benign_malignant} skin disease on {skin_tone} skin tone"
VALUE_MAPS = {"benign_malignant": {"benign": "benign", "malignant": "malignant"},
              "skin_tone": {"0": "lighter", "1": "brown", "2": "darker"}}


@functools.cache
def make_adapter(name: str, targets: tuple[str, ...] = BROAD, rank: int = 4, alpha: float = 8.0,
                 seed: int = 0, text_encoder: bool = False) -> Path:
    """An adapter with random (non-zero) A and B on the tiny-random UNet (and text encoder), saved by lora.py."""
    import torch
    from peft import LoraConfig

    from dermdiff_lora.adapters import lora
    from dermdiff_lora.core.models import load_parts

    parts = load_parts("tiny-random")
    torch.manual_seed(seed)
    parts.unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets),
                                      init_lora_weights=False))
    te = None
    if text_encoder:
        te = parts.text_encoder
        te.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False,
                                  target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]))
    for model in (parts.unet, te):
        for pname, p in (model.named_parameters() if model is not None else []):
            if "lora_B" in pname:
                p.data.normal_(0.0, 0.05)
    out = Path(os.environ["DERMDIFF_CACHE"]) / "adapters" / name
    meta = {"base_model": "tiny-random", "rank": rank, "alpha": alpha, "target_modules": list(targets),
            "prompt_template": TEMPLATE, "value_maps": VALUE_MAPS}
    lora.save_adapter(out, parts.unet, te, meta=meta)
    return out


def probe_inputs():
    import torch

    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, 4, 8, 8, generator=g), torch.tensor([10]), torch.randn(1, 5, 32, generator=g))


def unet_out(unet):
    """The UNet's output on a fixed latent, timestep and text embedding."""
    import torch

    x, t, e = probe_inputs()
    with torch.no_grad():
        return unet(x, t, e).sample


def text_out(text_encoder):
    import torch

    ids = torch.tensor([[49406, 10, 20, 30, 49407]]) % text_encoder.config.vocab_size
    with torch.no_grad():
        return text_encoder(ids)[0]


def pipeline(*adapters: tuple[str | Path, float]):
    """The tiny-random pipeline with adapters attached through the package's loader."""
    from dermdiff_lora.adapters.apply import attach
    from dermdiff_lora.core.models import load_pipeline

    pipe = load_pipeline("tiny-random")
    attach(pipe, list(adapters), base_label="tiny-random")
    return pipe


def scratch(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ["DERMDIFF_CACHE"]))


ALL_LINEAR_TE = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@functools.cache
def make_method_adapter(method: str, rank: int = 4, alpha: float = 8.0, conv_rank: int | None = 2,
                        decompose_both: bool = False, factor: int = -1):
    """(folder, unet, text encoder): a peft adapter of ``method`` with random non-zero factors on attention,
    resnet convolutions (own rank) and the text encoder, saved by ``lora.save_adapter``; the live models
    stay wrapped (the unfused reference)."""
    import types

    import torch

    from dermdiff_lora.adapters import lora, methods
    from dermdiff_lora.core.models import load_parts

    settings = types.SimpleNamespace(method=method, rank=rank, alpha=alpha, dropout=0.0, rank_dropout=0.0,
                                     module_dropout=0.0, factor=factor, decompose_both=decompose_both,
                                     conv_rank=conv_rank, conv_alpha=None if conv_rank is None else 3.0)
    parts = load_parts("tiny-random")
    unet, te = parts.unet, parts.text_encoder
    torch.manual_seed(1)
    unet.add_adapter(methods.build_config(settings, ["attention", "resnet_convs"], unet))
    te.add_adapter(methods.build_config(settings, list(ALL_LINEAR_TE), te))
    for model in (unet, te):
        for pname, p in model.named_parameters():
            if any(k in pname for k in ("lora_", "hada_", "lokr_")):
                p.data.add_(torch.randn_like(p) * 0.1)
    out = Path(os.environ["DERMDIFF_CACHE"]) / "adapters" / f"{method}-{rank}-{conv_rank}-{decompose_both}-{factor}"
    meta = {"base_model": "tiny-random", "rank": rank, "alpha": alpha, "prompt_template": TEMPLATE,
            "value_maps": VALUE_MAPS}
    lora.save_adapter(out, unet, te, meta=meta)
    return out, unet.eval(), te.eval()
