"""LoRA adapters on live models: peft configs, attach/continue an adapter, and save files stock diffusers loads.

The file is ``pytorch_lora_weights.safetensors`` with peft-style keys (``unet.<module>.lora_A.weight``),
which ``StableDiffusionPipeline.load_lora_weights`` reads for every target set (attention, conv and
feed-forward alike). diffusers' ``lora_adapter_metadata`` header holds only LoraConfig fields (so alpha
survives a reload); our own metadata lives beside it under the ``dermdiff_lora`` header key.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..core import formats
from ..core.errors import AdapterError, ConfigError
from ..core.formats import DIFFUSERS_META_KEY, META_KEY, WEIGHT_NAME, fingerprint  # noqa: F401 (re-exported)
from ..core.fsutil import disk_errors
from ..core.version import __version__


def peft_config(rank: int, alpha: float, targets: list[str], dropout: float = 0.0, **extra):
    """A LoraConfig (``extra``: use_dora, rank_pattern, alpha_pattern as a saved config holds them)."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                      init_lora_weights="gaussian", **extra)


def add_lora(model, config, what: str) -> None:
    """Attach a trainable adapter named 'default'; unknown target modules name the config key."""
    try:
        model.add_adapter(config)
    except ValueError as exc:
        if "not found" in str(exc) or "Target modules" in str(exc):
            key = "lora.target_modules" if what == "unet" else "lora.text_encoder_target_modules"
            raise ConfigError(f"{key}: {sorted(config.target_modules)} match no layer of the {what} "
                              f"({str(exc).splitlines()[0]})") from None
        raise


def adapter_file(path: str | os.PathLike) -> Path:
    """The weights file of an adapter folder, a file, or a Hub id ``user/repo[@revision]`` (cached)."""
    from .io import weights_file

    return weights_file(path)


def read_header(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors header metadata of an adapter (folder, file or Hub id); a corrupt file is named."""
    return formats.read_header(adapter_file(path))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The package's own metadata of an adapter ({} for adapters made by other tools)."""
    return formats.own_metadata(read_header(path))


def touched_shapes(model, prefix: str = "unet") -> dict[str, tuple[int, ...]]:
    """``{prefix.module: base weight shape}`` for every module carrying a LoRA adapter."""
    shapes = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
            shapes[f"{prefix}.{name}"] = tuple(module.base_layer.weight.shape)
    return shapes


def save_adapter(out_dir: str | os.PathLike, unet, text_encoder=None, *, meta: dict | None = None) -> Path:
    """Write the adapter(s) of a peft-wrapped UNet (and text encoder) atomically into ``out_dir``."""
    from diffusers import StableDiffusionPipeline
    from peft import get_peft_model_state_dict

    from .methods import method_of

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    method = method_of(unet)
    if method in ("loha", "lokr"):
        return _save_lycoris(out_dir, unet, text_encoder, {**(meta or {}), "method": method})
    kwargs: dict = {"unet_lora_layers": get_peft_model_state_dict(unet),
                    "unet_lora_adapter_metadata": _lora_config_dict(unet)}
    shapes = touched_shapes(unet, "unet")
    if text_encoder is not None and getattr(text_encoder, "peft_config", None):
        kwargs["text_encoder_lora_layers"] = {
            (k + ".weight" if k.endswith("lora_magnitude_vector") else k): v  # see io.magnitude_key
            for k, v in get_peft_model_state_dict(text_encoder).items()}
        kwargs["text_encoder_lora_adapter_metadata"] = _lora_config_dict(text_encoder)
        shapes.update(touched_shapes(text_encoder, "text_encoder"))
    own = {"package_version": __version__, **(meta or {}), "method": method, "fingerprint": fingerprint(shapes),
           "layers": len(shapes)}
    tmp = Path(tempfile.mkdtemp(prefix=".lora-", dir=out_dir))
    try:
        with disk_errors(out_dir, "adapter"):
            StableDiffusionPipeline.save_lora_weights(tmp, safe_serialization=True, **kwargs)
            add_header_metadata(tmp / WEIGHT_NAME, {META_KEY: json.dumps(own, sort_keys=True)})
        os.replace(tmp / WEIGHT_NAME, out_dir / WEIGHT_NAME)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / WEIGHT_NAME


def _save_lycoris(out_dir: Path, unet, text_encoder, meta: dict) -> Path:
    """LoHa / LoKr: a LyCORIS-keyed file (ComfyUI, A1111); stock diffusers cannot load these into SD 1.x."""
    from . import io, lycoris
    from .layers import Adapter

    layers = lycoris.layers_from_model(unet, "unet")
    if text_encoder is not None and getattr(text_encoder, "peft_config", None):
        layers.update(lycoris.layers_from_model(text_encoder, "text_encoder"))
    shapes = {name: layer.base_shape for name, layer in layers.items()}
    own = {"package_version": __version__, **meta, "fingerprint": fingerprint(shapes), "layers": len(shapes)}
    return io.save(Adapter(layers, own), out_dir, fmt="kohya", overwrite=True)


def _lora_config_dict(model) -> dict:
    cfg = model.peft_config["default"].to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}


def add_header_metadata(path: Path, extra: dict[str, str]) -> None:
    """Rewrite a safetensors file in place with more header metadata (same tensors, same bytes)."""
    from safetensors.torch import load_file, save_file

    header = read_header(path)
    tensors = load_file(str(path))
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={**header, **extra})
    os.replace(tmp, path)


def lora_settings(path: str | os.PathLike, component: str = "unet") -> dict:
    """rank / alpha / target modules of one component from diffusers' adapter metadata header."""
    raw = read_header(path).get(DIFFUSERS_META_KEY)
    if not raw:
        return {}
    flat = json.loads(raw)
    prefix = f"{component}."
    return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}


def load_into(model, path: str | os.PathLike, component: str = "unet") -> None:
    """Attach an existing adapter (as trainable 'default') to a model, to continue training it."""
    from peft import set_peft_model_state_dict

    from .io import read_file, refuse_non_finite

    file = adapter_file(path)
    settings = lora_settings(file, component)
    tensors = read_file(file)[0]
    refuse_non_finite(tensors, file)
    state = {k[len(component) + 1:]: v for k, v in tensors.items() if k.startswith(component + ".")}
    if not state:
        if component == "unet":
            raise AdapterError(f"{file} has no 'unet.' LoRA keys (convert kohya files first; LoHa/LoKr "
                               "(LyCORIS) files cannot seed a run: model.init_adapter takes LoRA or DoRA)")
        return
    if not settings:
        raise AdapterError(f"{file} lacks diffusers' lora_adapter_metadata: its rank/alpha are unknown")
    extra = {k: settings[k] for k in ("use_dora", "rank_pattern", "alpha_pattern") if settings.get(k)}
    config = peft_config(settings["r"], settings["lora_alpha"], settings["target_modules"],
                         settings.get("lora_dropout", 0.0), **extra)
    add_lora(model, config, component)
    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise AdapterError(f"{file}: {len(unexpected)} key(s) match no layer, e.g. {unexpected[0]}")
