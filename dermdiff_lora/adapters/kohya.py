"""kohya-ss / A1111 / ComfyUI key format for SD-1.x LoRAs, both directions, exactly.

``unet.down_blocks.0.attentions.0.proj_in`` ↔ ``lora_unet_down_blocks_0_attentions_0_proj_in`` with
``.lora_down.weight`` (= lora_A), ``.lora_up.weight`` (= lora_B) and ``.alpha`` (a scalar tensor per layer);
the text encoder's layers are ``lora_te_text_model_encoder_layers_0_mlp_fc1`` (the names ComfyUI's
``model_lora_keys_clip`` and AUTOMATIC1111 map; transformers 5's ``CLIPTextModel`` has no ``text_model`` level,
so it is added on writing; ``lora_te_encoder_…`` files, as version 0 of this package wrote them, are read too).
Tensors are moved, never recomputed, so a round trip is bit-exact. Dots come back from underscores through the
fixed vocabulary of multi-word names SD-1.x modules use (``to_q``, ``conv_shortcut``, ``time_emb_proj``, …).
"""

from __future__ import annotations

import functools

import torch

from ..core.errors import AdapterError
from . import lycoris
from .layers import Adapter, Layer

PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
TEXT_MODEL = "text_model."  # the CLIP level kohya names carry (transformers < 5 has it in the module tree too)
SUFFIXES = {"down": ".lora_down.weight", "up": ".lora_up.weight", "alpha": ".alpha"}
# Module-name parts that contain an underscore (longest first when matching).
COMPOUNDS = sorted({
    "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v", "to_out",
    "proj_in", "proj_out", "conv_in", "conv_out", "conv_shortcut", "conv_norm_out", "time_emb_proj",
    "time_embedding", "linear_1", "linear_2", "add_embedding", "class_embedding", "text_model",
    "self_attn", "q_proj", "k_proj", "v_proj", "out_proj", "final_layer_norm", "layer_norm1",
    "layer_norm2", "token_embedding", "position_embedding", "add_k_proj", "add_v_proj",
}, key=lambda c: -c.count("_"))
_LDM_NAMES = ("input_blocks", "middle_block", "output_blocks")
_SDXL_PREFIXES = ("lora_te1_", "lora_te2_")
ALPHA_DTYPE_KEY = "kohya_alpha_dtype"
CONFIGS_KEY = "diffusers_lora_configs"
SHAPES_KEY = "layer_shapes"  # LoHa/LoKr: each layer's base weight shape (a conv's kernel is not in its factors)


def is_kohya(keys) -> bool:
    return bool(keys) and all(k.startswith(("lora_unet_", "lora_te")) for k in keys)


def kohya_name(name: str) -> str:
    """``text_encoder.encoder.layers.0.mlp.fc1`` → ``lora_te_text_model_encoder_layers_0_mlp_fc1``."""
    component, module = name.split(".", 1)
    if component == "text_encoder":
        module = TEXT_MODEL + module.removeprefix(TEXT_MODEL)
    return PREFIXES[component] + module.replace(".", "_")


def layer_name(stem: str) -> str:
    """The adapter's layer name of a kohya key stem (either text-encoder spelling)."""
    component = next(c for c, p in PREFIXES.items() if stem.startswith(p))
    module = module_name(stem[len(PREFIXES[component]):])
    if component == "text_encoder":
        module = (TEXT_MODEL if clip_has_text_model() else "") + module.removeprefix(TEXT_MODEL)
    return f"{component}.{module}"


@functools.cache
def clip_has_text_model() -> bool:
    """Whether the installed transformers' ``CLIPTextModel`` nests its modules under ``text_model`` (< 5)."""
    from importlib.metadata import version

    return int(version("transformers").split(".")[0]) < 5


def module_name(flat: str) -> str:
    """``down_blocks_0_attentions_0_proj_in`` → ``down_blocks.0.attentions.0.proj_in``."""
    parts, rest = [], flat
    while rest:
        part = next((c for c in COMPOUNDS if rest == c or rest.startswith(c + "_")), rest.split("_", 1)[0])
        parts.append(part)
        rest = rest[len(part) + 1:]
    return ".".join(parts)


def to_kohya(adapter: Adapter) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and package metadata of the kohya / LyCORIS file (diffusers' LoraConfigs ride along for the way
    back); a DoRA layer is refused (kohya's ``dora_scale`` is read differently by different loaders)."""
    alpha_dtype = getattr(torch, adapter.meta.get(ALPHA_DTYPE_KEY, "float32"))
    tensors = {}
    for name, layer in adapter.layers.items():
        key = kohya_name(name)
        if layer.method == "dora":
            raise AdapterError(f"{adapter.source}: layer {name} is DoRA, which has no kohya form every loader "
                               "reads alike (kohya's dora_scale is dropped by stock diffusers and normalised along "
                               "another axis by some loaders): use its diffusers file, or `merge` it into a model")
        if isinstance(layer, Layer):
            tensors[key + SUFFIXES["down"]] = layer.down
            tensors[key + SUFFIXES["up"]] = layer.up
        else:
            tensors.update({f"{key}.{part}": t for part, t in layer.file_tensors().items()})
        tensors[key + SUFFIXES["alpha"]] = torch.tensor(layer.alpha, dtype=alpha_dtype)
    meta = {k: v for k, v in adapter.meta.items() if k != ALPHA_DTYPE_KEY}
    if adapter.configs:
        meta[CONFIGS_KEY] = adapter.configs
    shapes = {n: list(layer.shape) for n, layer in adapter.layers.items() if getattr(layer, "shape", None)}
    if shapes:
        meta[SHAPES_KEY] = shapes
    return tensors, meta


def from_kohya(tensors: dict[str, torch.Tensor], meta: dict, source: str) -> Adapter:
    """An adapter from kohya (LoRA) or LyCORIS (LoHa, LoKr) keys; SDXL and LDM-named keys are refused."""
    keys = sorted(tensors)
    _refuse_foreign(keys, source)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key in keys:
        stem, part = _split(key, source)
        groups.setdefault(stem, {})[part] = tensors[key]
    meta = dict(meta)
    configs, shapes = meta.pop(CONFIGS_KEY, {}), meta.pop(SHAPES_KEY, {})
    layers, alpha_dtypes = {}, set()
    for stem, parts in groups.items():
        name = layer_name(stem)
        alpha = float(parts["alpha"].item()) if "alpha" in parts else None
        if "alpha" in parts:
            alpha_dtypes.add(str(parts["alpha"].dtype).removeprefix("torch."))
        if any(lycoris.is_lycoris_part(p) for p in parts):
            layers[name] = lycoris.from_parts(parts, alpha, source, stem)
            layers[name].shape = tuple(shapes[name]) if name in shapes else None
            continue
        if "down" not in parts or "up" not in parts:
            raise AdapterError(f"{source}: layer {stem} lacks its lora_down or lora_up tensor (corrupt file)")
        rank = int(parts["down"].shape[0])
        layers[name] = Layer(parts["down"], parts["up"], float(rank) if alpha is None else alpha)
    if alpha_dtypes - {"float32"}:
        meta[ALPHA_DTYPE_KEY] = sorted(alpha_dtypes)[0]
    return Adapter(layers, meta, configs, source=source, fmt="kohya")


def _split(key: str, source: str) -> tuple[str, str]:
    for part, suffix in SUFFIXES.items():
        if key.endswith(suffix):
            return key[:-len(suffix)], part
    stem, _, part = key.partition(".")
    if lycoris.is_lycoris_part(part):
        return stem, part
    if part in lycoris.UNSUPPORTED:
        raise AdapterError(f"{source}: key {key!r}: {part} (Tucker-decomposed convolutions or kohya DoRA) is not "
                           "supported; train with lora.method=dora|loha|lokr here instead")
    raise AdapterError(f"{source}: unknown key layout {key!r} (expected .lora_down.weight, .lora_up.weight, "
                       "LyCORIS .hada_*/.lokr_* factors or .alpha)")


def _refuse_foreign(keys: list[str], source: str) -> None:
    if any(k.startswith(_SDXL_PREFIXES) for k in keys):
        raise AdapterError(f"{source} is an SDXL LoRA (lora_te1_/lora_te2_ keys); this toolkit's bases are "
                           "SD 1.x (e.g. CompVis/stable-diffusion-v1-4)")
    ldm = next((k for k in keys if any(n in k for n in _LDM_NAMES)), None)
    if ldm:
        raise AdapterError(f"{source}: key {ldm!r} uses the original LDM block names (input_blocks, ...); "
                           "only kohya files with diffusers module names (down_blocks, ...) are supported")
