"""A full fine-tuned UNet minus its base UNet → a LoRA, by SVD of each Linear/Conv2d weight difference.

Targets are, by default, every Linear and Conv2d inside the down/mid/up blocks (attention, feed-forward,
projections, resnet convs, time-embedding projections, samplers); ``targets`` picks modules by name suffix
(``to_q``, ``conv_in``; ``all`` = every Linear/Conv2d). Each targeted layer gets ``rank`` (refused above what
the layer allows) or the fewest ranks keeping ``energy`` of its Σs²; its relative error is reported. What a
LoRA does not carry — norms, biases, embeddings and untargeted layers that changed — is reported with its
residual, never dropped silently. Weights stream one tensor at a time (two SD UNets never sit in memory).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from ..core.errors import AdapterError, ConfigError
from ..core.formats import PICKLE_SUFFIXES
from ..core.models import resolve_base
from . import io, svd
from .layers import Adapter, Layer, derived_meta, most_common

BLOCKS = ("down_blocks.", "mid_block.", "up_blocks.")


def extract(tuned: str | os.PathLike, base: str, out: str | os.PathLike, *, rank: int | None = None,
            energy: float | None = None, targets: Sequence[str] | None = None, revision: str | None = None,
            allow_pickle: bool = False, overwrite: bool = False, device: str = "cpu") -> dict:
    """Write the LoRA of ``tuned − base`` to ``out``; return per-layer errors and what was not carried."""
    if (rank is None) == (energy is None):
        raise AdapterError("extract needs exactly one of --rank or --energy")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device here; use --device cpu")
    io.check_output(out, overwrite, [tuned])
    tuned_dir = unet_dir(tuned)
    base_dir = unet_dir(resolve_base(base, revision, allow_pickle))
    lora_able = _lora_able_modules(base_dir)
    chosen = _targets(lora_able, targets)
    approxes, shapes, residuals, unchanged = {}, {}, [], 0
    with _weights(tuned_dir, allow_pickle) as (t_shapes, t_get), _weights(base_dir, allow_pickle) as (b_shapes, b_get):
        _check_same_architecture(t_shapes, b_shapes, tuned_dir, base_dir)
        for key in sorted(t_shapes):
            before = b_get(key)
            delta = t_get(key).float() - before.float()
            if not bool(delta.any()):
                unchanged += 1
                continue
            module, param = key.rsplit(".", 1)
            if param == "weight" and module in chosen:
                approxes[f"unet.{module}"] = svd.of_dense(delta, name=module, rank=rank, energy=energy,
                                                          device=device)
                shapes[f"unet.{module}"] = tuple(delta.shape)
            else:
                residuals.append(_residual(key, delta, before, lora_able.get(module)))
    if not approxes:
        raise AdapterError(f"{tuned_dir} does not differ from {base_dir} in any targeted layer: nothing to extract")
    alpha = float(most_common(a.rank for a in approxes.values()))
    layers = {n: Layer.from_factors(a.up, a.down, shapes[n], alpha, torch.float32) for n, a in approxes.items()}
    meta = derived_meta(layers, _meta(base, tuned))
    file = io.save(Adapter(layers, meta), out, overwrite=overwrite, inputs=[tuned])
    return _report(file, approxes, residuals, unchanged)


def unet_dir(path: str | os.PathLike) -> Path:
    """The UNet folder of a pipeline folder (``unet/``) or the UNet folder itself."""
    path = Path(path)
    folder = path / "unet" if (path / "unet" / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        raise AdapterError(f"{path} is neither a pipeline folder (with unet/) nor a UNet folder (with "
                           "config.json); pass the output folder of a full fine-tune")
    return folder


def _lora_able_modules(unet_folder: Path) -> dict[str, str]:
    """``{module: "Linear" | "Conv2d" | other type}`` from the UNet's config (built on the meta device)."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(unet_folder))
    return {name: type(m).__name__ for name, m in unet.named_modules() if name}


def _targets(kinds: dict[str, str], targets: Sequence[str] | None) -> set[str]:
    able = {n for n, kind in kinds.items() if kind in ("Linear", "Conv2d")}
    if not targets:
        return {n for n in able if n.startswith(BLOCKS)}
    if list(targets) == ["all"]:
        return able
    chosen = {n for n in able if any(n == t or n.endswith("." + t) for t in targets)}
    if not chosen:
        raise AdapterError(f"--targets {','.join(targets)} match no Linear/Conv2d layer of the UNet "
                           "(try to_q,to_k,to_v,to_out.0 or all)")
    return chosen


@contextmanager
def _weights(folder: Path, allow_pickle: bool) -> Iterator[tuple[dict, object]]:
    """``(shapes, get)`` over a UNet folder's weight files, read one tensor at a time."""
    files = _main_variant(folder.glob("*.safetensors"))
    if not files:
        pickles = _main_variant(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if not pickles:
            raise AdapterError(f"{folder} holds no UNet weights (*.safetensors)")
        state = {}
        for file in pickles:
            state.update(io.read_file(io.weights_file(file, allow_pickle))[0])
        yield {k: tuple(v.shape) for k, v in state.items()}, state.__getitem__
        return
    from safetensors import safe_open

    with ExitStack() as stack:
        owner, shapes = {}, {}
        for file in files:
            try:
                handle = stack.enter_context(safe_open(str(file), "pt"))
            except Exception as exc:  # corrupt or truncated
                raise AdapterError(f"{file} is not a readable safetensors file ({exc})") from None
            for key in handle.keys():
                owner[key], shapes[key] = handle, tuple(handle.get_slice(key).get_shape())
        yield shapes, lambda key: owner[key].get_tensor(key)


def _main_variant(files) -> list[Path]:
    """Weight files without a variant (``.fp16``, ``.non_ema``) when there are any, as diffusers loads."""
    files = sorted(files)
    plain = [f for f in files if f.name.count(".") == 1]
    return plain or files


def _check_same_architecture(tuned: dict, base: dict, tuned_dir: Path, base_dir: Path) -> None:
    differ = sorted(k for k in tuned.keys() & base.keys() if tuned[k] != base[k])
    only = sorted(tuned.keys() ^ base.keys())
    if differ or only:
        example = (f"{differ[0]} is {tuned[differ[0]]} vs {base[differ[0]]}" if differ
                   else f"{only[0]} exists in only one of them")
        raise AdapterError(f"fine-tuned UNet {tuned_dir} and base UNet {base_dir} are different architectures "
                           f"({len(differ) + len(only)} weight(s) differ, e.g. {example}); use the base it "
                           "was fine-tuned from")


def _residual(key: str, delta: torch.Tensor, before: torch.Tensor, kind: str | None) -> dict:
    norm = float(delta.double().norm())
    base_norm = float(before.double().norm())
    return {"param": key, "module_type": kind or "?", "residual_norm": norm,
            "rel_change": norm / base_norm if base_norm else None}


def _meta(base: str, tuned: str | os.PathLike) -> dict:
    from ..core.version import __version__

    meta = {"base_model": base, "extracted_from": str(tuned), "package_version": __version__}
    saved = io.saved_config(Path(tuned))
    if saved:
        prompts = saved["config"].get("prompts") or {}
        meta.update(prompt_template=prompts.get("template"), value_maps=prompts.get("value_maps"),
                    training_config_digest=saved["digest"])
    return meta


def _report(file: Path, approxes: dict[str, svd.Approx], residuals: list[dict], unchanged: int) -> dict:
    carried = svd.overall(approxes.values())
    sq_all = sum(a.sq_norm for a in approxes.values()) + sum(r["residual_norm"] ** 2 for r in residuals)
    sq_lost = sum(a.sq_error for a in approxes.values()) + sum(r["residual_norm"] ** 2 for r in residuals)
    return {"output": str(file),
            "layers": [{"layer": n, "rank": a.rank, "max_rank": a.rank_in, "rel_error": a.rel_error,
                        "energy": a.energy} for n, a in approxes.items()],
            "not_carried": residuals, "unchanged_tensors": unchanged, **carried,
            "total_rel_error": math.sqrt(sq_lost / sq_all) if sq_all else 0.0}
