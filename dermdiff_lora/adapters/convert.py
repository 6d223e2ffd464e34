"""diffusers ↔ kohya/A1111/ComfyUI adapter files: same tensors, other keys (see ``kohya``)."""

from __future__ import annotations

import os

from ..core.errors import ConfigError
from . import io
from .layers import module_kind

FORMATS = ("kohya", "diffusers")


def convert(src: str | os.PathLike, out: str | os.PathLike, *, to: str, overwrite: bool = False,
            allow_pickle: bool = False) -> dict:
    """Write ``src`` with ``to`` keys (``kohya`` or ``diffusers``) to ``out``; tensors are copied bit for bit."""
    if to not in FORMATS:
        raise ConfigError(f"--to {to!r}: use one of {', '.join(FORMATS)}")
    io.check_output(out, overwrite, [src])
    adapter = io.load(src, allow_pickle=allow_pickle)
    file = io.save(adapter, out, fmt=to, overwrite=overwrite, inputs=[src])
    notes = []
    attention_alphas = {layer.alpha for name, layer in adapter.layers.items() if ".attn" in name}
    if to == "kohya" and len(attention_alphas) > 1:
        notes.append("alpha differs between attention layers: ComfyUI/A1111 read each layer's .alpha, but "
                     "diffusers (≤ 0.42) applies one alpha to all attention layers of a kohya file; "
                     "keep the diffusers file for diffusers")
    return {"output": str(file), "from": adapter.fmt, "to": to, "layers": len(adapter.layers),
            "kinds": sorted({module_kind(n) for n in adapter.layers}), "notes": notes}
