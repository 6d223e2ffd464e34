"""Change an adapter's rank by SVD of each layer's ΔW, reporting the energy kept per layer and overall.

LoHa and LoKr adapters become LoRAs this way (SVD of each layer's dense ΔW); DoRA is refused (its change
depends on the base weight: merge it instead).

``rank``: layers above it are truncated to it (best approximation); layers at or below it are copied
unchanged (a higher rank would only add zeros). ``energy``: each layer gets the fewest ranks that keep that
fraction of its Σs². A rank larger than a layer allows is refused. Values are never clamped.
"""

from __future__ import annotations

import os

from ..core.errors import AdapterError
from . import io, lycoris, svd
from .layers import Adapter, Layer, derived_meta, most_common


def resize(src: str | os.PathLike, out: str | os.PathLike, *, rank: int | None = None,
           energy: float | None = None, overwrite: bool = False, allow_pickle: bool = False) -> dict:
    """Write ``src`` at a new rank to ``out``; return the per-layer and overall kept energy."""
    if (rank is None) == (energy is None):
        raise AdapterError("resize needs exactly one of --rank or --energy")
    if rank is not None and rank < 1:
        raise AdapterError(f"--rank must be ≥ 1, not {rank}")
    io.check_output(out, overwrite, [src])
    adapter = io.load(src, allow_pickle=allow_pickle)
    lycoris.refuse_dora(adapter, "resize", "`merge` it into a full model, or keep its diffusers file")
    lora = adapter.method == "lora"
    alpha = most_common(layer.alpha for layer in adapter.layers.values()) if lora else None
    layers, rows, approxes = {}, [], []
    for name, layer in adapter.layers.items():
        if lora and rank is not None and layer.rank <= rank:
            svd.check_rank(rank, layer.max_rank, name)
            layers[name] = layer
            rows.append({"layer": name, "rank_in": layer.rank, "rank": layer.rank, "energy": 1.0,
                         "rel_error": 0.0, "kept": True})
            continue
        if isinstance(layer, Layer):
            approx = svd.of_product(*layer.factors(), name=name, rank=rank, energy=energy, max_rank=layer.max_rank)
        else:  # LoHa / LoKr: the dense ΔW
            approx = svd.of_dense(layer.delta(), name=name, rank=rank, energy=energy)
        dtype = layer.tensors()[0].dtype
        layers[name] = Layer.from_factors(approx.up, approx.down, layer.base_shape, alpha or approx.rank, dtype)
        approxes.append(approx)
        rows.append({"layer": name, "rank_in": layer.rank, "rank": approx.rank, "energy": approx.energy,
                     "rel_error": approx.rel_error, "kept": False})
    meta = derived_meta(layers, {**adapter.meta, "method": "lora", "resized_from": {
        "source": str(src), "rank": adapter.meta.get("rank"), "method": adapter.method}})
    file = io.save(Adapter(layers, meta), out, overwrite=overwrite, inputs=[src])
    return {"output": str(file), "layers": rows, **_overall(adapter, approxes),
            "rank": meta["rank"], "rank_range": meta.get("rank_range")}


def _overall(adapter: Adapter, approxes: list[svd.Approx]) -> dict:
    """Kept energy over all layers (copied layers count with their full energy)."""
    changed = svd.overall(approxes)
    if not approxes:
        return changed
    sq_total = sum(layer.sq_norm() for layer in adapter.layers.values())
    sq_error = sum(a.sq_error for a in approxes)
    return {"energy": 1.0 - sq_error / sq_total if sq_total else 1.0,
            "rel_error": (sq_error / sq_total) ** 0.5 if sq_total else 0.0}
