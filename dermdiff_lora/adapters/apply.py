"""Put adapters into a loaded pipeline, each under its own name and scale (diffusers' multi-adapter API)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from . import io
from .layers import Adapter, Layer


def attach(pipe, sources: Sequence[tuple[str | os.PathLike, float]], *, base_label: str,
           allow_pickle: bool = False) -> list[dict]:
    """Check every adapter against the pipeline's shapes, load it as ``adapter<i>``, set the scales.

    Files go through ``io.load`` (diffusers or kohya keys, pickle refusal, per-layer alpha); LoRA and DoRA then
    go into diffusers' own ``load_lora_into_unet`` / ``load_lora_into_text_encoder`` with an explicit LoraConfig.
    LoHa and LoKr (which diffusers cannot load into SD 1.x) are added to the base weights as scale · ΔW, in
    float64 and before the others are loaded (a DoRA adapter then normalises the weight with them in it).
    """
    adapters = [io.load(path, allow_pickle=allow_pickle) for path, _ in sources]
    models = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}
    for adapter in adapters:
        io.check_fits(adapter, models, base_label)
    info = []
    for adapter, (_, scale) in zip(adapters, sources):
        fold(models, adapter, scale)  # its LoHa / LoKr layers
    for i, (adapter, (path, scale)) in enumerate(zip(adapters, sources)):
        lora_part = Adapter({n: la for n, la in adapter.layers.items() if isinstance(la, Layer)}, adapter.meta,
                            adapter.configs, source=adapter.source, fmt=adapter.fmt)
        name = f"adapter{i}" if lora_part.layers else None
        if name:
            state, flat = io.diffusers_state(lora_part)
            components = lora_part.components()
            if "unet" in components:
                pipe.load_lora_into_unet(state, None, pipe.unet, adapter_name=name, _pipeline=pipe,
                                         metadata=flat)
            if "text_encoder" in components:
                pipe.load_lora_into_text_encoder(state, None, pipe.text_encoder, adapter_name=name,
                                                 _pipeline=pipe, metadata=flat)
        info.append(_describe(name, path, scale, adapter))
    loaded = [i for i in info if i["name"]]
    if loaded:
        pipe.set_adapters([i["name"] for i in loaded], [i["scale"] for i in loaded])
    return info


def _describe(name: str | None, path, scale: float, adapter) -> dict:
    """What was attached (name None: folded into the base weights)."""
    return {"name": name, "path": str(path), "scale": float(scale), "components": adapter.components(),
            "base_model": adapter.meta.get("base_model"), "fingerprint": adapter.fingerprint(),
            "format": adapter.fmt, "method": adapter.method, "meta": adapter.meta}


def fold(models: dict, adapter, scale: float) -> None:
    """Add ``scale · ΔW`` of every LoHa / LoKr layer to its base weight (computed in float64, stored in the weight's dtype)."""
    import torch

    with torch.no_grad():
        for name, layer in adapter.layers.items():
            if isinstance(layer, Layer):
                continue
            component, module = name.split(".", 1)
            target = models[component].get_submodule(module)
            weight = getattr(target, "base_layer", target).weight
            delta = layer.delta().reshape(weight.shape)
            weight.copy_((weight.double() + scale * delta).to(weight.dtype))
