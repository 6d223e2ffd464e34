"""Base + adapter(s) with scales → one full pipeline folder that stock ``from_pretrained`` loads.

The adapters are fused by diffusers (``fuse_lora``) and then unloaded, so the saved modules carry plain
names (saving while still wrapped would write ``base_layer`` names no stock loader reads). Weights are cast
to the requested dtype only after fusing in fp32, and written as safetensors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from ..core.errors import AdapterError, ConfigError
from ..core.models import load_pipeline
from ..core.version import __version__
from . import io
from .apply import attach

DTYPES = ("fp32", "fp16", "bf16")
RECORD = "dermdiff_merge.json"


def merge(base: str, sources: Sequence[tuple[str | os.PathLike, float]], out: str | os.PathLike, *,
          dtype: str = "fp32", revision: str | None = None, overwrite: bool = False,
          allow_pickle: bool = False) -> dict:
    """Fuse ``sources`` ((adapter, scale) pairs) into ``base`` and save the pipeline to ``out``."""
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if not sources:
        raise AdapterError("merge needs at least one adapter")
    io.check_output(out, overwrite, [p for p, _ in sources])
    with io.staged_dir(out, overwrite) as tmp:
        pipe = load_pipeline(base, revision, allow_pickle=allow_pickle, safety_checker=True)
        info = attach(pipe, sources, base_label=base, allow_pickle=allow_pickle)
        loaded = [i for i in info if i["name"]]  # LoHa / LoKr are already folded into the weights
        if loaded:
            components = sorted({c for item in loaded for c in item["components"]})
            pipe.fuse_lora(components=components, lora_scale=1.0, adapter_names=[i["name"] for i in loaded])
            pipe.unload_lora_weights()
        pipe.to(getattr(torch, {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[dtype]))
        pipe.save_pretrained(tmp, safe_serialization=True)
        record = {"base_model": base, "base_revision": revision, "dtype": dtype, "package_version": __version__,
                  "adapters": [{k: i[k] for k in ("path", "scale", "base_model", "fingerprint", "format", "method")}
                               for i in info]}
        (tmp / RECORD).write_text(json.dumps(record, indent=2))
    return {"output": str(out), **record}
