"""LoHa and LoKr layers with LyCORIS' key names and formulas (what ComfyUI, AUTOMATIC1111 and Forge load).

Per layer ``lora_unet_<module>`` (or ``lora_te_text_model_<module>``) with

- LoHa: ``.hada_w1_a [out, r]``, ``.hada_w1_b [r, in·kh·kw]``, ``.hada_w2_a``, ``.hada_w2_b``, ``.alpha``;
  ΔW = (alpha / r) · (w1_a w1_b) ⊙ (w2_a w2_b), reshaped to the weight.
- LoKr: ``.lokr_w1`` (or ``.lokr_w1_a`` / ``.lokr_w1_b``), ``.lokr_w2`` (or ``.lokr_w2_a`` / ``.lokr_w2_b``),
  ``.alpha``; ΔW = scale · w1 ⊗ w2 reshaped, where scale = alpha / r when a factor is low-rank (r: the rank
  of w2's factors, else w1's) and 1 when both factors are full matrices: LyCORIS and ComfyUI ignore alpha
  there, while peft always scales by alpha / r, so peft's scale is baked into ``lokr_w1`` on writing.

peft stores these factors under the same names, so tensors are moved (only that one scale is multiplied in).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

HADA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
KRON = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
UNSUPPORTED = ("hada_t1", "hada_t2", "lokr_t2", "dora_scale")  # Tucker cores, kohya DoRA


@dataclass
class HadaLayer:
    w1_a: torch.Tensor
    w1_b: torch.Tensor
    w2_a: torch.Tensor
    w2_b: torch.Tensor
    alpha: float
    shape: tuple[int, ...] | None = None  # the base weight's shape (a file does not say a conv's kernel)
    method = "loha"

    @property
    def rank(self) -> int:
        return int(self.w1_b.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def base_shape(self) -> tuple[int, ...]:
        return self.shape or (int(self.w1_a.shape[0]), int(self.w1_b.shape[1]))

    def tensors(self) -> list[torch.Tensor]:
        return [self.w1_a, self.w1_b, self.w2_a, self.w2_b]

    def file_tensors(self) -> dict[str, torch.Tensor]:
        return dict(zip(HADA, self.tensors()))

    @property
    def max_rank(self) -> int:
        return min(self.base_shape[0], int(torch.Size(self.base_shape[1:]).numel()))

    def sq_norm(self) -> float:
        return float(self.delta().pow(2).sum())

    def delta(self) -> torch.Tensor:
        w1 = self.w1_a.double() @ self.w1_b.double()
        w2 = self.w2_a.double() @ self.w2_b.double()
        return (w1 * w2 * self.scale).reshape(self.base_shape)


@dataclass
class KronLayer:
    parts: dict[str, torch.Tensor]  # lokr_w1 or lokr_w1_a/_b, lokr_w2 or lokr_w2_a/_b
    alpha: float
    shape: tuple[int, ...] | None = None
    method = "lokr"

    def _factor(self, i: int) -> torch.Tensor:
        full = self.parts.get(f"lokr_w{i}")
        if full is not None:
            return full.double()
        return self.parts[f"lokr_w{i}_a"].double() @ self.parts[f"lokr_w{i}_b"].double()

    @property
    def rank(self) -> int | None:
        """The rank of the low-rank factor (w2's, else w1's); None when both factors are full."""
        for key in ("lokr_w2_b", "lokr_w1_b"):
            if key in self.parts:
                return int(self.parts[key].shape[0])
        return None

    @property
    def scale(self) -> float:
        return 1.0 if self.rank is None else self.alpha / self.rank

    @property
    def base_shape(self) -> tuple[int, ...]:
        if self.shape:
            return self.shape
        w1, w2 = self._factor(1), self._factor(2)
        if w2.dim() == 4:
            return (int(w1.shape[0] * w2.shape[0]), int(w1.shape[1] * w2.shape[1]), *map(int, w2.shape[2:]))
        return (int(w1.shape[0] * w2.shape[0]), int(w1.shape[1] * w2.shape[1]))

    def tensors(self) -> list[torch.Tensor]:
        return [self.parts[k] for k in KRON if k in self.parts]

    def file_tensors(self) -> dict[str, torch.Tensor]:
        return {k: self.parts[k] for k in KRON if k in self.parts}

    max_rank = HadaLayer.max_rank
    sq_norm = HadaLayer.sq_norm

    def delta(self) -> torch.Tensor:
        w1, w2 = self._factor(1), self._factor(2)
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        return (torch.kron(w1, w2) * self.scale).reshape(self.base_shape)


def refuse_dora(adapter, command: str, alternative: str) -> None:
    """One line naming the DoRA adapter a command cannot take, and what to do instead."""
    from ..core.errors import AdapterError

    if any(layer.method == "dora" for layer in adapter.layers.values()):
        raise AdapterError(f"{command}: {adapter.source} is a DoRA adapter, whose change to a weight depends on "
                           f"that weight (its magnitudes renormalise W + ΔW); {alternative}")


def is_lycoris_part(part: str) -> bool:
    return part in HADA or part in KRON


def from_parts(parts: dict[str, torch.Tensor], alpha: float | None, source: str, stem: str):
    """A LoHa or LoKr layer from one key stem's tensors (alpha = rank when the file has none)."""
    from ..core.errors import AdapterError

    if any(k in parts for k in HADA):
        if not all(k in parts for k in HADA):
            raise AdapterError(f"{source}: layer {stem} lacks one of {', '.join(HADA)} (corrupt file)")
        rank = int(parts["hada_w1_b"].shape[0])
        return HadaLayer(*(parts[k] for k in HADA), alpha=float(rank if alpha is None else alpha))
    has = [any(f"lokr_w{i}{s}" in parts for s in ("", "_a")) for i in (1, 2)]
    if not all(has):
        raise AdapterError(f"{source}: layer {stem} lacks its lokr_w1 or lokr_w2 factor (corrupt file)")
    layer = KronLayer({k: parts[k] for k in KRON if k in parts}, 0.0)
    layer.alpha = float(layer.rank or 1) if alpha is None else float(alpha)
    return layer


def layers_from_model(model, component: str) -> dict[str, HadaLayer | KronLayer]:
    """The LoHa / LoKr layers (adapter 'default') of a peft-wrapped model, with LyCORIS' scale convention."""
    layers = {}
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", None)
        if base is None or "default" not in getattr(module, "scaling", {}):
            continue
        shape = tuple(int(d) for d in base.weight.shape)
        alpha = float(module.alpha["default"])
        if hasattr(module, "hada_w1_a"):
            tensors = [getattr(module, k)["default"].detach().clone() for k in HADA]
            layers[f"{component}.{name}"] = HadaLayer(*tensors, alpha=alpha, shape=shape)
        elif hasattr(module, "lokr_w1"):
            parts = {k: getattr(module, k)["default"].detach().clone() for k in KRON
                     if "default" in getattr(module, k)}
            layer = KronLayer(parts, alpha, shape)
            if layer.rank is None:  # both full: LyCORIS applies no alpha, so bake peft's alpha / r into w1
                layer.parts["lokr_w1"] = layer.parts["lokr_w1"] * float(module.scaling["default"])
            layers[f"{component}.{name}"] = layer
    return layers
