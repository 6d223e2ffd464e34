"""An adapter in memory: its layers and its metadata.

A LoRA layer's weight change is ``ΔW = (alpha / rank) · up @ down``; for a conv layer ``down`` is a conv with
the layer's kernel (``[r, in, kh, kw]``) and ``up`` a 1×1 conv (``[out, r, 1, 1]``), so ΔW is that product
reshaped. A DoRA layer is a LoRA layer with a ``magnitude`` (one per output channel): the adapted weight is
``magnitude · (W + ΔW) / ‖W + ΔW‖`` (norm per output channel), so it needs the base weight. LoHa and LoKr
layers live in ``lycoris``. Layer names carry their component: ``unet.<module>`` or ``text_encoder.<module>``.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field

import torch

from ..core.formats import fingerprint

COMPONENTS = ("unet", "text_encoder")
# Where a module sits inside a block: stripped to name the kind of layer ("attn1.to_q", "conv1", ...).
_BLOCK_PATH = re.compile(r"^(.*\.)?(transformer_blocks|resnets|attentions|layers|downsamplers|upsamplers)\.\d+\.")


@dataclass
class Layer:
    down: torch.Tensor  # lora_A / lora_down: [r, in] or [r, in, kh, kw]
    up: torch.Tensor  # lora_B / lora_up: [out, r] or [out, r, 1, 1]
    alpha: float
    magnitude: torch.Tensor | None = None  # DoRA: lora_magnitude_vector, [out] (or [1, out, 1, 1] for conv)

    @property
    def method(self) -> str:
        return "lora" if self.magnitude is None else "dora"

    def tensors(self) -> list[torch.Tensor]:
        return [self.down, self.up] + ([] if self.magnitude is None else [self.magnitude])

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def base_shape(self) -> tuple[int, ...]:
        """Shape of the weight this layer changes."""
        return (int(self.up.shape[0]), *(int(d) for d in self.down.shape[1:]))

    @property
    def max_rank(self) -> int:
        return max_rank(self.base_shape)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale · up, down)`` as float64 matrices ``[out, r]``, ``[r, in·kh·kw]``: ΔW = their product."""
        up = self.up.reshape(self.up.shape[0], self.rank).double() * self.scale
        return up, self.down.reshape(self.rank, -1).double()

    def sq_norm(self) -> float:
        """‖ΔW‖² from the factors (trace identity), without forming ΔW."""
        up, down = self.factors()
        return float(((up.T @ up) * (down @ down.T)).sum())

    def delta(self) -> torch.Tensor:
        """ΔW in float64, in the base weight's shape."""
        up, down = self.factors()
        return (up @ down).reshape(self.base_shape)

    @classmethod
    def from_factors(cls, up: torch.Tensor, down: torch.Tensor, base_shape: tuple[int, ...], alpha: float,
                     dtype: torch.dtype) -> Layer:
        """The layer whose ΔW is ``up @ down`` (scale folded into ``up``), stored with the given alpha."""
        rank = int(down.shape[0])
        kernel = (1,) * (len(base_shape) - 2)
        up = (up * (rank / alpha)).reshape(base_shape[0], rank, *kernel)
        down = down.reshape(rank, *base_shape[1:])
        return cls(down.to(dtype).contiguous(), up.to(dtype).contiguous(), float(alpha))


@dataclass
class Adapter:
    layers: dict[str, Layer]
    meta: dict = field(default_factory=dict)  # the package's own metadata ({} for other tools' files)
    configs: dict[str, dict] = field(default_factory=dict)  # diffusers' LoraConfig per component, as read
    source: str = ""
    fmt: str = "diffusers"  # diffusers | kohya

    @property
    def label(self) -> str:
        base = self.meta.get("base_model")
        return f"{self.source or 'adapter'}" + (f" (base {base})" if base else "")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: layer.base_shape for name, layer in self.layers.items()}

    def fingerprint(self) -> str:
        return fingerprint(self.shapes())

    def components(self) -> list[str]:
        return [c for c in COMPONENTS if any(n.startswith(c + ".") for n in self.layers)]

    @property
    def method(self) -> str:
        """lora | dora | loha | lokr (the methods of its layers, joined by '+' if they differ)."""
        return "+".join(sorted({layer.method for layer in self.layers.values()})) or "lora"

    def parameters(self) -> int:
        return sum(t.numel() for layer in self.layers.values() for t in layer.tensors())

    def dtypes(self) -> list[str]:
        return sorted({str(t.dtype).removeprefix("torch.") for layer in self.layers.values()
                       for t in layer.tensors()})

    def common_dtype(self) -> torch.dtype:
        dtypes = {t.dtype for layer in self.layers.values() for t in layer.tensors()}
        return dtypes.pop() if len(dtypes) == 1 else torch.float32


def module_kind(name: str) -> str:
    """The kind of layer a module name is, without its block path: ``attn1.to_q``, ``conv1``, ``proj_in``."""
    module = name.split(".", 1)[1] if name.split(".", 1)[0] in COMPONENTS else name
    return _BLOCK_PATH.sub("", module)


def max_rank(shape: tuple[int, ...]) -> int:
    """The highest rank a change of a weight of this shape can have."""
    return min(shape[0], int(torch.Size(shape[1:]).numel()))


def most_common(values) -> float:
    return collections.Counter(values).most_common(1)[0][0]


def derived_meta(layers: dict[str, Layer], meta: dict) -> dict:
    """``meta`` with rank / alpha / target modules / fingerprint recomputed from the layers."""
    ranks = [layer.rank for layer in layers.values()]
    alphas = [layer.alpha for layer in layers.values()]
    shapes = {name: layer.base_shape for name, layer in layers.items()}
    out = {**{k: v for k, v in meta.items() if k != "rank_range"}, "rank": most_common(ranks), "alpha": most_common(alphas),
           "target_modules": sorted({module_kind(n) for n in layers if n.startswith("unet.")}),
           "text_encoder": any(n.startswith("text_encoder.") for n in layers),
           "fingerprint": fingerprint(shapes), "layers": len(layers)}
    if len(set(ranks)) > 1:
        out["rank_range"] = [min(ranks), max(ranks)]
    return out
