"""Put adapters into a loaded pipeline, each under its own name and scale (diffusers' multi-adapter API)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from . import io


def attach(pipe, sources: Sequence[tuple[str | os.PathLike, float]], *, base_label: str,
           allow_pickle: bool = False) -> list[dict]:
    """Check every adapter against the pipeline's shapes, load it as ``adapter<i>``, set the scales.

    Files go through ``io.load`` (diffusers or kohya keys, pickle refusal, per-layer alpha) and then into
    diffusers' own ``load_lora_into_unet`` / ``load_lora_into_text_encoder`` with an explicit LoraConfig.
    """
    adapters = [io.load(path, allow_pickle=allow_pickle) for path, _ in sources]
    models = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}
    for adapter in adapters:
        io.check_fits(adapter, models, base_label)
    info = []
    for i, (adapter, (path, scale)) in enumerate(zip(adapters, sources)):
        name = f"adapter{i}"
        state, flat = io.diffusers_state(adapter)
        components = adapter.components()
        if "unet" in components:
            pipe.load_lora_into_unet(state, None, pipe.unet, adapter_name=name, _pipeline=pipe, metadata=flat)
        if "text_encoder" in components:
            pipe.load_lora_into_text_encoder(state, None, pipe.text_encoder, adapter_name=name,
                                             _pipeline=pipe, metadata=flat)
        info.append({"name": name, "path": str(path), "scale": float(scale), "components": components,
                     "base_model": adapter.meta.get("base_model"), "fingerprint": adapter.fingerprint(),
                     "format": adapter.fmt, "meta": adapter.meta})
    if info:
        pipe.set_adapters([i["name"] for i in info], [i["scale"] for i in info])
    return info
