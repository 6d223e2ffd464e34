"""Several adapters with weights → one adapter that is exactly their weighted sum, or an SVD compression of it.

Exact: for each layer the factors are concatenated along the rank, ``up = [w₁s₁·B₁ | w₂s₂·B₂]``,
``down = [A₁; A₂]``, so ``up @ down = Σ wᵢ sᵢ Bᵢ Aᵢ`` with no cross terms (unlike merging the factors
separately). The scales are folded into ``up``; every layer's alpha is stored in the file (per-layer ranks go
to diffusers' ``rank_pattern``). With ``rank``, each layer's sum is replaced by its best rank-``rank``
approximation and the relative error is reported per layer and overall.

LoHa and LoKr factors do not add (Hadamard and Kronecker products), so adapters with them are combined only
with ``rank``: each layer's weighted sum of dense ΔW, then SVD (a LoRA, error reported). DoRA is refused (its
change depends on the base weight): merge or generate with several adapters instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ..core.errors import AdapterError
from . import io, lycoris, svd
from .layers import Adapter, Layer, derived_meta, max_rank, most_common


def combine(sources: Sequence[tuple[str | os.PathLike, float]], out: str | os.PathLike, *,
            rank: int | None = None, overwrite: bool = False, allow_pickle: bool = False) -> dict:
    """Write the weighted sum of ``sources`` ((path, weight) pairs) to ``out``; return the report."""
    if len(sources) < 1:
        raise AdapterError("combine needs at least one adapter")
    io.check_output(out, overwrite, [p for p, _ in sources])
    adapters = [io.load(p, allow_pickle=allow_pickle) for p, _ in sources]
    weights = [float(w) for _, w in sources]
    _check_compatible(adapters)
    if any(a.method != "lora" for a in adapters):
        return _combine_dense(adapters, sources, out, rank, overwrite)
    factors = _concatenated(adapters, weights)
    rows, approxes = [], []
    for name, (up, down, shape) in factors.items():
        if rank is not None:
            approx = svd.of_product(up, down, name=name, rank=rank, max_rank=max_rank(shape))
            factors[name] = (approx.up, approx.down, shape)
            approxes.append(approx)
            rows.append({"layer": name, "rank_in": approx.rank_in, "rank": approx.rank,
                         "rel_error": approx.rel_error})
        else:
            rows.append({"layer": name, "rank_in": int(down.shape[0]), "rank": int(down.shape[0]),
                         "rel_error": 0.0})
    dtype = _common_dtype(adapters)
    alpha = float(most_common(int(d.shape[0]) for _, d, _ in factors.values()))
    layers = {name: Layer.from_factors(up, down, shape, alpha, dtype) for name, (up, down, shape) in factors.items()}
    meta = derived_meta(layers, _meta(adapters, sources))
    file = io.save(Adapter(layers, meta), out, overwrite=overwrite, inputs=[p for p, _ in sources])
    summary = svd.overall(approxes) if approxes else {"rel_error": 0.0, "energy": 1.0}
    return {"output": str(file), "exact": rank is None, "layers": rows, **summary,
            "rank": meta["rank"], "rank_range": meta.get("rank_range")}


def _combine_dense(adapters: list[Adapter], sources, out, rank: int | None, overwrite: bool) -> dict:
    """Adapters with LoHa / LoKr layers: SVD of each layer's weighted sum of dense ΔW, at ``rank``."""
    for adapter in adapters:
        lycoris.refuse_dora(adapter, "combine", "DoRA adapters do not add: `merge` them into a full model, or "
                                                "`generate` with several --adapter")
    if rank is None:
        method = next(a.method for a in adapters if a.method != "lora")
        raise AdapterError(f"combine: {method} factors (Hadamard / Kronecker products) do not add exactly; pass "
                           "--rank R for a LoRA of the summed ΔW by SVD (error printed), or `merge` them")
    rows, approxes, layers = [], [], {}
    for name in sorted({n for a in adapters for n in a.layers}):
        present = [(a.layers[name], float(w)) for a, (_, w) in zip(adapters, sources) if name in a.layers]
        delta = sum(w * layer.delta() for layer, w in present)
        approx = svd.of_dense(delta, name=name, rank=min(rank, max_rank(present[0][0].base_shape)))
        approxes.append(approx)
        layers[name] = Layer.from_factors(approx.up, approx.down, present[0][0].base_shape, float(approx.rank),
                                          _common_dtype(adapters))
        rows.append({"layer": name, "rank_in": approx.rank_in, "rank": approx.rank, "rel_error": approx.rel_error})
    meta = derived_meta(layers, {**_meta(adapters, sources), "method": "lora"})
    file = io.save(Adapter(layers, meta), out, overwrite=overwrite, inputs=[p for p, _ in sources])
    return {"output": str(file), "exact": False, "layers": rows, **svd.overall(approxes),
            "rank": meta["rank"], "rank_range": meta.get("rank_range")}


def _concatenated(adapters: list[Adapter], weights: list[float]) -> dict:
    """``{layer: (up [out, Σr], down [Σr, in], base shape)}`` in float64 with weights and scales in ``up``."""
    names = sorted({n for a in adapters for n in a.layers})
    factors = {}
    for name in names:
        ups, downs, shape = [], [], None
        for adapter, weight in zip(adapters, weights):
            layer = adapter.layers.get(name)
            if layer is None:
                continue
            up, down = layer.factors()
            ups.append(up * weight)
            downs.append(down)
            shape = layer.base_shape
        factors[name] = (torch.cat(ups, 1), torch.cat(downs, 0), shape)
    return factors


def _check_compatible(adapters: list[Adapter]) -> None:
    seen: dict[str, tuple[Adapter, tuple]] = {}
    for adapter in adapters:
        for name, layer in adapter.layers.items():
            first, shape = seen.setdefault(name, (adapter, layer.base_shape))
            if shape != layer.base_shape:
                raise AdapterError(
                    f"{adapter.label} and {first.label} were trained on different architectures: layer "
                    f"{name} is {layer.base_shape} in one and {shape} in the other")


def _common_dtype(adapters: list[Adapter]) -> torch.dtype:
    dtypes = {a.common_dtype() for a in adapters}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def _meta(adapters: list[Adapter], sources) -> dict:
    """The first adapter's metadata (base, prompts) plus where the combination came from."""
    meta = {k: v for k, v in adapters[0].meta.items() if k != "train_steps"}
    meta["combined_from"] = [{"source": str(p), "weight": float(w), "base_model": a.meta.get("base_model"),
                              "fingerprint": a.fingerprint()} for a, (p, w) in zip(adapters, sources)]
    templates = {a.meta.get("prompt_template") for a in adapters} - {None}
    if len(templates) > 1:
        meta["prompt_templates_differ"] = sorted(templates)
    from ..core.version import __version__

    meta["package_version"] = __version__
    return meta
