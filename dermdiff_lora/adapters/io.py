"""Adapter files: load (diffusers or kohya keys), validate, check against a base, and write atomically.

Pickle files (``.bin/.ckpt/.pt``) are refused unless ``allow_pickle`` (and then read with
``torch.load(weights_only=True)``). Outputs are written to a temporary name in their folder and moved into
place; an existing output is refused unless ``overwrite``; an input is never overwritten.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from ..core.errors import AdapterError, ConfigError
from ..core.formats import DIFFUSERS_META_KEY, META_KEY, PICKLE_SUFFIXES, WEIGHT_NAME
from ..core.fsutil import atomic_path, disk_errors
from . import kohya
from .layers import COMPONENTS, Adapter, Layer, most_common

_PEFT_KEY = re.compile(rf"^({'|'.join(COMPONENTS)})\.(.+)\.(?:lora_(A|B)\.weight|lora_(magnitude)_vector(?:\.weight)?)$")
MAGNITUDE = "lora_magnitude_vector"  # DoRA's per-output-channel magnitude (peft's key)


# ------------------------------------------------------------------------------------------------ reading
def weights_file(path: str | os.PathLike, allow_pickle: bool = False) -> Path:
    """The weights file of an adapter folder, a file or a Hub id ``user/repo[@rev]``; pickle needs opt-in."""
    from ..core.hubio import resolve_adapter

    path = resolve_adapter(path)
    if path.is_dir():
        if (path / "model_index.json").is_file():
            raise AdapterError(f"{path} is a full pipeline folder (a full fine-tune or a merged model), not "
                               "an adapter: use it as the base model, or `extract` an adapter from it")
        found = [path / WEIGHT_NAME] if (path / WEIGHT_NAME).is_file() else sorted(path.glob("*.safetensors"))
        if not found:
            found = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if len(found) != 1:
            what = "no adapter weights" if not found else f"{len(found)} weight files"
            raise AdapterError(f"{path} holds {what}; pass the .safetensors file itself")
        path = found[0]
    if not path.is_file():
        raise AdapterError(f"adapter {path} not found (expected a folder with {WEIGHT_NAME} or a "
                           ".safetensors file)")
    if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise AdapterError(f"{path} is a pickle file, which can run code when loaded; convert it to "
                           "safetensors, or pass --allow-pickle if you trust its source")
    return path


def read_file(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of a weights file (pickle only when ``weights_file`` allowed it)."""
    if file.suffix in PICKLE_SUFFIXES:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for bad pickles
            raise AdapterError(f"{file} is not a loadable weights-only pickle ({exc})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise AdapterError(f"{file} does not hold a flat dict of tensors")
        return state, {}
    from safetensors import safe_open

    try:
        with safe_open(str(file), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for corrupt or truncated files
        raise AdapterError(f"{file} is not a readable safetensors file (truncated or corrupt: {exc}); download "
                           "or export it again") from None


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors holding NaN or inf values, in key order."""
    return [k for k in sorted(tensors) if tensors[k].is_floating_point() and not torch.isfinite(tensors[k]).all()]


def refuse_non_finite(tensors: dict[str, torch.Tensor], file: Path) -> None:
    """AdapterError naming the first tensor with NaN/inf values (a diverged run's adapter is never used)."""
    if bad := non_finite(tensors):
        raise AdapterError(f"{file}: tensor {bad[0]} holds NaN or inf values ({len(bad)} such tensor(s)); the "
                           "adapter is broken (a diverged training run?): retrain it or use an earlier checkpoint")


def load(path: str | os.PathLike, *, allow_pickle: bool = False, allow_non_finite: bool = False) -> Adapter:
    """An adapter from a diffusers/peft-style or kohya file (or the folder holding it).

    An adapter with NaN/inf weights is refused unless ``allow_non_finite`` (``inspect`` reports them)."""
    file = weights_file(path, allow_pickle)
    tensors, header = read_file(file)
    if not allow_non_finite:
        refuse_non_finite(tensors, file)
    try:
        meta = json.loads(header.get(META_KEY) or "{}")
    except json.JSONDecodeError:
        raise AdapterError(f"{file}: the {META_KEY!r} header is not valid JSON (corrupt file)") from None
    if not tensors:
        raise AdapterError(f"{file} holds no tensors")
    if kohya.is_kohya(tensors):
        return kohya.from_kohya(tensors, meta, str(file))
    return from_peft(tensors, header, meta, str(file))


def from_peft(tensors: dict[str, torch.Tensor], header: dict, meta: dict, source: str) -> Adapter:
    """An adapter from ``unet.<module>.lora_A.weight`` keys (and DoRA's ``lora_magnitude_vector``), alpha from
    diffusers' LoraConfig header."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        match = _PEFT_KEY.match(key)
        if not match:
            raise AdapterError(f"{source}: unknown key layout {key!r} (expected unet.<module>.lora_A.weight "
                               "as diffusers writes, or kohya lora_unet_… keys; LoRA biases are not supported)")
        parts.setdefault(f"{match[1]}.{match[2]}", {})[match[3] or "M"] = value
    configs = _read_configs(header, source)
    layers = {}
    for name, ab in sorted(parts.items()):
        if not {"A", "B"} <= set(ab) or ab["A"].shape[0] != ab["B"].shape[1]:
            raise AdapterError(f"{source}: layer {name} has no matching lora_A/lora_B pair (corrupt file)")
        component, module = name.split(".", 1)
        if (configs.get(component) or {}).get("use_dora") and "M" not in ab:
            raise AdapterError(f"{source}: its LoraConfig says DoRA but layer {name} has no {MAGNITUDE} "
                               "(corrupt file)")
        layers[name] = Layer(ab["A"], ab["B"], _alpha(configs.get(component), module, ab["A"].shape[0],
                                                     source), ab.get("M"))
    return Adapter(layers, meta, configs, source=source, fmt="diffusers")


def _read_configs(header: dict, source: str) -> dict[str, dict]:
    raw = header.get(DIFFUSERS_META_KEY)
    if not raw:
        return {}
    try:
        flat = json.loads(raw)
    except json.JSONDecodeError:
        raise AdapterError(f"{source}: the {DIFFUSERS_META_KEY!r} header is not valid JSON") from None
    configs: dict[str, dict] = {}
    for key, value in flat.items():
        component, _, field = key.partition(".")
        configs.setdefault(component, {})[field] = value
    return configs


def _alpha(config: dict | None, module: str, rank: int, source: str) -> float:
    """The layer's alpha as diffusers would apply it (alpha = rank when the file has no LoraConfig)."""
    if not config:
        return float(rank)
    from peft.utils.other import get_pattern_key

    rank_pattern, alpha_pattern = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    want = rank_pattern.get(get_pattern_key(rank_pattern, module), config.get("r", rank))
    if want != rank:
        raise AdapterError(f"{source}: layer {module} has rank {rank} but its LoraConfig says {want} "
                           "(corrupt file)")
    alpha = float(alpha_pattern.get(get_pattern_key(alpha_pattern, module), config.get("lora_alpha", rank)))
    # rsLoRA scales by alpha/sqrt(r): store the alpha that gives that scale as alpha/r.
    return alpha * rank ** 0.5 if config.get("use_rslora") else alpha


def saved_config(path: str | os.PathLike) -> dict | None:
    """The training config saved beside an output (``dermdiff_config.yaml``), parsed, with a short digest."""
    import hashlib

    import yaml

    from ..core.config import CONFIG_FILENAME

    path = Path(path)
    file = (path if path.is_dir() else path.parent) / CONFIG_FILENAME
    if not file.is_file():
        return None
    text = file.read_text()
    return {"path": str(file), "digest": hashlib.sha256(text.encode()).hexdigest()[:12],
            "config": yaml.safe_load(text) or {}}


# ------------------------------------------------------------------------------------------------ writing
def lora_config(layers: dict[str, Layer], component: str) -> dict:
    """diffusers' LoraConfig for one component: most common rank/alpha, per-layer patterns for the rest."""
    mine = {n.split(".", 1)[1]: layer for n, layer in layers.items() if n.startswith(component + ".")}
    r = most_common(layer.rank for layer in mine.values())
    alpha = most_common(layer.alpha for layer in mine.values())
    return {"r": r, "lora_alpha": alpha, "target_modules": sorted(mine), "lora_dropout": 0.0,
            "bias": "none", "use_dora": any(layer.magnitude is not None for layer in mine.values()), "use_rslora": False, "peft_type": "LORA",
            "rank_pattern": {m: layer.rank for m, layer in mine.items() if layer.rank != r},
            "alpha_pattern": {m: layer.alpha for m, layer in mine.items() if layer.alpha != alpha}}


def diffusers_state(adapter: Adapter) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """peft-style tensors and the flat ``lora_adapter_metadata`` (keys ``unet.r`` ...) stock diffusers reads."""
    tensors = {}
    for name, layer in adapter.layers.items():
        if not isinstance(layer, Layer):
            raise AdapterError(f"{adapter.source}: layer {name} is {layer.method}, which stock diffusers cannot "
                               "load into SD 1.x: keep its LyCORIS (kohya-keyed) file, or `merge` it")
        tensors[f"{name}.lora_A.weight"] = layer.down
        tensors[f"{name}.lora_B.weight"] = layer.up
        if layer.magnitude is not None:
            tensors[magnitude_key(name)] = layer.magnitude
    flat = {f"{c}.{k}": v for c in adapter.components()
            for k, v in (adapter.configs.get(c) or lora_config(adapter.layers, c)).items()}
    return tensors, flat


def magnitude_key(name: str) -> str:
    """DoRA's magnitude key: text-encoder keys end in ``.weight``, or transformers' adapter loader (behind stock
    ``load_lora_weights``) leaves the magnitudes at their initial values with only an 'UNEXPECTED' report."""
    return f"{name}.{MAGNITUDE}" + (".weight" if name.startswith("text_encoder.") else "")


def output_file(out: str | os.PathLike) -> Path:
    """``out`` itself when it names a .safetensors file, else ``out/pytorch_lora_weights.safetensors``."""
    out = Path(out)
    return out if out.suffix == ".safetensors" else out / WEIGHT_NAME


def check_output(out: str | os.PathLike, overwrite: bool, inputs: Sequence[str | os.PathLike] = ()) -> None:
    """Refuse an existing output (unless ``overwrite``) and any output that is one of the inputs."""
    out = Path(out)
    targets = {out.resolve(), output_file(out).resolve()}
    for item in inputs:
        item = Path(item)
        if item.resolve() in targets or (item.is_dir() and (item / WEIGHT_NAME).resolve() in targets):
            raise ConfigError(f"output {out} is an input; inputs are never changed: choose another --out")
    if out.exists() and not overwrite:
        raise ConfigError(f"output {out} already exists; choose another --out or pass --overwrite")


def save(adapter: Adapter, out: str | os.PathLike, *, fmt: str = "diffusers", overwrite: bool = False,
         inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Write an adapter (diffusers or kohya keys) to ``out`` atomically; returns the file written."""
    from safetensors.torch import save_file

    check_output(out, overwrite, inputs)
    if fmt == "kohya":
        tensors, meta = kohya.to_kohya(adapter)
        header = {"format": "pt", META_KEY: json.dumps(meta, sort_keys=True)}
    elif fmt == "diffusers":
        tensors, flat = diffusers_state(adapter)
        header = {"format": "pt", DIFFUSERS_META_KEY: json.dumps(flat, indent=2, sort_keys=True),
                  META_KEY: json.dumps(adapter.meta, sort_keys=True)}
    else:
        raise ConfigError(f"unknown adapter format {fmt!r}: use diffusers or kohya")
    file = output_file(out)
    with atomic_path(file) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=header)
    return file


@contextmanager
def staged_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``out`` that replaces ``out`` only when the block succeeds."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"output folder {out} already exists; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with disk_errors(out.parent, f"output folder {out.name}"):
            yield tmp
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
            os.replace(out, old / "x")
        os.replace(tmp, out)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------- base checks
def check_fits(adapter: Adapter, models: dict[str, torch.nn.Module], base_label: str) -> None:
    """Refuse an adapter whose layers are missing from the base or shaped differently, naming both."""
    from ..core.formats import fingerprint

    found, missing, wrong = {}, [], []
    for component in adapter.components():
        modules = dict(models[component].named_modules()) if component in models else {}
        for name, layer in adapter.layers.items():
            if not name.startswith(component + "."):
                continue
            module = modules.get(name.split(".", 1)[1])
            weight = getattr(module, "weight", None)
            if weight is None:
                missing.append(name)
                continue
            found[name] = tuple(weight.shape)
            if not same_shape(found[name], layer.base_shape):
                wrong.append(name)
    trained_on = adapter.meta.get("base_model", "an unrecorded base")
    if wrong:
        name = wrong[0]
        raise AdapterError(
            f"adapter {adapter.source} (trained on {trained_on}, fingerprint {adapter.fingerprint()}) does not "
            f"fit base {base_label} (fingerprint {fingerprint(found)}): {len(wrong)} layer(s) differ in shape, "
            f"e.g. {name} is {adapter.layers[name].base_shape} in the adapter but {found[name]} in the base; an "
            "SD-1.x adapter needs an SD-1.x base (SD 2.x/SDXL layers are shaped differently)")
    if missing:
        raise AdapterError(
            f"adapter {adapter.source} (trained on {trained_on}): {len(missing)} of {len(adapter.layers)} "
            f"layer(s) have no match in base {base_label}, e.g. {missing[0]} (another architecture, or an "
            "unknown key layout)")


def same_shape(weight: tuple[int, ...], layer: tuple[int, ...]) -> bool:
    """A layer fits a weight of the same shape; a LyCORIS conv layer read without its kernel, [out, in·kh·kw]."""
    if len(layer) == 2 and len(weight) == 4:
        return layer == (weight[0], weight[1] * weight[2] * weight[3])
    return weight == layer
