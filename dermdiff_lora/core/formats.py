"""File formats other tools must open: weight file names, header keys, pickle suffixes, layer fingerprints.

An adapter file is ``pytorch_lora_weights.safetensors`` with peft-style keys; diffusers' own header key
``lora_adapter_metadata`` holds only LoraConfig fields (so alpha survives a stock reload), and this
package's facts (base, template, value maps, fingerprint, version) live beside it under ``dermdiff_lora``.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from .errors import AdapterError

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
META_KEY = "dermdiff_lora"
DIFFUSERS_META_KEY = "lora_adapter_metadata"
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


def fingerprint(layer_shapes: dict[str, tuple[int, ...]]) -> str:
    """A digest of the shapes of the layers an adapter touches: equal for every SD-1.x base."""
    text = json.dumps(sorted((k, list(v)) for k, v in layer_shapes.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_header(file: str | os.PathLike) -> dict[str, str]:
    """The header metadata of a safetensors file; a corrupt file is named."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), "np") as f:  # numpy: reading a header needs no torch
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise AdapterError(f"{file} is not a readable safetensors file ({exc}); download or export it "
                           "again") from None


def own_metadata(header: dict[str, str]) -> dict[str, Any]:
    """The package's own metadata in a header ({} for files made by other tools)."""
    raw = header.get(META_KEY)
    return json.loads(raw) if raw else {}
