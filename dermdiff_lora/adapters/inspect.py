"""What an adapter is: rank, alpha, targets, size, dtype, base, prompts and training config, for any file."""

from __future__ import annotations

import os

from . import io
from .layers import Adapter, module_kind


def inspect_adapter(path: str | os.PathLike, *, allow_pickle: bool = False) -> dict:
    """A JSON-able description of an adapter file or folder (diffusers or kohya keys)."""
    file = io.weights_file(path, allow_pickle)
    adapter = io.load(file, allow_pickle=allow_pickle, allow_non_finite=True)
    meta = adapter.meta
    bad = io.non_finite({f"{n}.{part}": t for n, layer in adapter.layers.items()
                         for part, t in _named(layer).items()})
    info = {"file": str(file), "format": adapter.fmt, "method": adapter.method, "size_bytes": file.stat().st_size,
            "dtype": ",".join(adapter.dtypes()), "parameters": adapter.parameters(),
            "layers": len(adapter.layers), "components": {c: _component(adapter, c) for c in adapter.components()},
            "base_model": meta.get("base_model"), "base_revision": meta.get("base_revision"),
            "fingerprint": adapter.fingerprint(), "fingerprint_recorded": meta.get("fingerprint"),
            "prompt_template": meta.get("prompt_template"), "value_maps": meta.get("value_maps"),
            "package_version": meta.get("package_version"), "training": _training(file, meta),
            "non_finite_tensors": bad}
    for key in ("combined_from", "resized_from", "extracted_from"):
        if key in meta:
            info[key] = meta[key]
    return info


def _named(layer) -> dict:
    if hasattr(layer, "file_tensors"):  # LoHa / LoKr: the LyCORIS names
        return layer.file_tensors()
    return {"down": layer.down, "up": layer.up, **({} if layer.magnitude is None else {"magnitude": layer.magnitude})}


def _component(adapter: Adapter, component: str) -> dict:
    layers = [layer for name, layer in adapter.layers.items() if name.startswith(component + ".")]
    ranks = sorted({layer.rank or 0 for layer in layers})  # 0: a LoKr layer whose two factors are full
    alphas = sorted({layer.alpha for layer in layers})
    kinds = sorted({module_kind(n) for n in adapter.layers if n.startswith(component + ".")})
    return {"layers": len(layers), "rank": ranks[0] if len(ranks) == 1 else ranks,
            "alpha": alphas[0] if len(alphas) == 1 else alphas,
            "target_modules": (adapter.meta.get("target_modules") if component == "unet" else None) or kinds,
            "layer_kinds": kinds, **_kronecker(layers)}


def _kronecker(layers: list) -> dict:
    """LoKr: the shapes of the small factor w1 (which the factor option sets), most common first."""
    import collections

    shapes = collections.Counter(tuple(layer.tensors()[0].shape) if "lokr_w1" in layer.parts else
                                 (int(layer.parts["lokr_w1_a"].shape[0]), int(layer.parts["lokr_w1_b"].shape[1]))
                                 for layer in layers if layer.method == "lokr")
    return {"kron_w1_shapes": [list(s) for s, _ in shapes.most_common()]} if shapes else {}


def _training(file, meta: dict) -> dict | None:
    saved = io.saved_config(file)
    if saved:
        cfg = saved["config"]
        pick = {"mode": ("train", "mode"), "steps": ("train", "max_steps"), "batch_size": ("train", "batch_size"),
                "lr": ("optim", "lr"), "resolution": ("data", "resolution"), "seed": ("train", "seed"),
                "data": ("data", "dir"), "balance": ("data", "balance")}
        out = {k: (cfg.get(s) or {}).get(f) for k, (s, f) in pick.items()}
        return {"config": saved["path"], "config_digest": saved["digest"], **out}
    known = {k: meta[k] for k in ("train_steps", "resolution", "training_config_digest") if k in meta}
    return known or None


def format_table(info: dict) -> str:
    """The description as aligned ``key  value`` lines."""
    rows = [("file", info["file"]), ("format", info["format"]), ("method", info["method"]),
            ("size", f"{info['size_bytes'] / 1e6:.2f} MB"), ("dtype", info["dtype"]),
            ("parameters", f"{info['parameters']:,}"), ("layers", info["layers"])]
    for component, c in info["components"].items():
        rows += [(f"{component}.rank", c["rank"]), (f"{component}.alpha", c["alpha"]),
                 (f"{component}.layers", c["layers"]),
                 (f"{component}.target_modules", ", ".join(c["target_modules"]))]
        if "kron_w1_shapes" in c:
            rows.append((f"{component}.lokr_w1", ", ".join("x".join(map(str, s)) for s in c["kron_w1_shapes"])))
    fp = info["fingerprint"] + ("" if info["fingerprint_recorded"] in (None, info["fingerprint"])
                                else f" (recorded {info['fingerprint_recorded']}: MISMATCH)")
    rows += [("base_model", info["base_model"]), ("fingerprint", fp),
             ("prompt_template", info["prompt_template"]), ("value_maps", info["value_maps"]),
             ("package_version", info["package_version"])]
    for key, value in (info["training"] or {}).items():
        rows.append((f"training.{key}", value))
    for key in ("combined_from", "resized_from", "extracted_from"):
        if key in info:
            rows.append((key, info[key]))
    if info.get("non_finite_tensors"):
        bad = info["non_finite_tensors"]
        rows.append(("NaN/inf", f"{len(bad)} tensor(s), e.g. {bad[0]}: BROKEN, refused by merge/generate/combine"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {'-' if v is None else v}" for k, v in rows)
