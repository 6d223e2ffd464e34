"""One typed config for everything: YAML file + ``key.sub=value`` overrides, validated all at once.

Each section is a dataclass. Field metadata may carry ``choices`` and ``min``/``max``; ``load()`` reports
every unknown key (with the closest valid key), wrong type and out-of-range value in one ConfigError.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

CONFIG_FILENAME = "dermdiff_config.yaml"
PACKAGED_CONFIGS = Path(__file__).parent.parent / "configs"


def _opt(default: Any = None, *, choices: tuple | None = None, min: float | None = None,
         max: float | None = None, help: str = "") -> Any:
    meta = {"choices": choices, "min": min, "max": max, "help": help}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: _copy(d), metadata=meta)
    return field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


@dataclass
class ModelConfig:
    base: str = _opt("tiny-random", help="Hub id, local diffusers folder, 'tiny-random' or 'tiny'")
    revision: str | None = _opt(None, help="Hub revision (branch, tag or commit) of model.base")
    init_adapter: str | None = _opt(None, help="start LoRA training from this adapter (folder, file or Hub id)")
    safety_checker: bool = _opt(False, help="run SD's NSFW checker on generated images (it blacks out skin)")
    allow_pickle: bool = _opt(False, help="allow loading .bin/.ckpt/.pt weights (pickle); off by default")


@dataclass
class DataConfig:
    dir: str | None = _opt(None, help="imagefolder with metadata.csv or metadata.jsonl")
    file_column: str = _opt("auto", help="column naming the image file; 'auto' = file_name or image_name")
    caption_column: str = _opt("text", help="caption column, used when prompts.template is empty")
    resolution: int = _opt(512, min=8, max=4096)
    center_crop: bool = _opt(True, help="center crop (true) or random crop (false)")
    random_flip: bool = _opt(True)
    on_bad_image: str = _opt("error", choices=("error", "skip"))
    balance: str = _opt("none", choices=("none", "tone", "tone_x_diagnosis"))
    balance_cap: float | None = _opt(None, min=1.0, help="max ratio between sampling weights")
    tone_column: str = _opt("skin_tone")
    diagnosis_column: str = _opt("benign_malignant")
    num_workers: int = _opt(0, min=0, max=64)
    max_samples: int | None = _opt(None, min=1)


@dataclass
class PromptsConfig:
    template: str | None = _opt("{benign_malignant} skin disease on {skin_tone} skin tone")
    value_maps: dict[str, dict[str, str]] = _opt(
        {"skin_tone": {"0": "lighter", "1": "brown", "2": "darker"},
         "benign_malignant": {"benign": "benign", "malignant": "malignant"}})
    caption_dropout: float = _opt(0.0, min=0.0, max=1.0, help="probability of an empty prompt (for CFG)")


@dataclass
class LoraConfig:
    rank: int = _opt(4, min=1, max=1024)
    alpha: float = _opt(4.0, min=0.0)
    dropout: float = _opt(0.0, min=0.0, max=1.0)
    target_modules: list[str] = _opt(["to_q", "to_k", "to_v", "to_out.0"])
    text_encoder: bool = _opt(False, help="also train a LoRA on the text encoder")
    text_encoder_target_modules: list[str] = _opt(["q_proj", "k_proj", "v_proj", "out_proj"])


@dataclass
class TrainConfig:
    mode: str = _opt("lora", choices=("lora", "full"))
    max_steps: int = _opt(100, min=1)
    batch_size: int = _opt(1, min=1)
    gradient_accumulation: int = _opt(1, min=1)
    gradient_checkpointing: bool = _opt(False)
    mixed_precision: str = _opt("no", choices=("no", "fp16", "bf16"))
    max_skipped_steps: int = _opt(20, min=1, help="fp16: stop after this many optimizer steps in a row skipped "
                                                  "for overflow (the loss scaler halves its scale at each)")
    seed: int = _opt(0, min=0)
    max_grad_norm: float | None = _opt(1.0, min=0.0)
    snr_gamma: float | None = _opt(None, min=0.0, help="min-SNR weighting gamma (5.0 is typical)")
    noise_offset: float = _opt(0.0, min=0.0, max=1.0)
    ema: bool = _opt(True, help="keep an EMA of the UNet (full mode); the saved model holds it")
    ema_decay: float = _opt(0.9999, min=0.0, max=1.0)
    checkpoint_every: int = _opt(0, min=0, help="0 = no intermediate checkpoints")
    keep_checkpoints: int = _opt(2, min=1)
    resume: str | None = _opt(None, help="'latest' or a checkpoint folder")


@dataclass
class OptimConfig:
    name: str = _opt("adamw", choices=("adamw", "adamw8bit"))
    lr: float = _opt(1e-4, min=0.0, max=1.0)
    betas: list[float] = _opt([0.9, 0.999])
    weight_decay: float = _opt(1e-2, min=0.0)
    eps: float = _opt(1e-8, min=0.0)
    min_8bit_size: int = _opt(4096, min=1, help="tensors smaller than this keep 32-bit Adam state")
    scheduler: str = _opt("constant", choices=("constant", "constant_with_warmup", "linear", "cosine",
                                               "cosine_with_restarts", "polynomial"))
    warmup_steps: int = _opt(0, min=0)


@dataclass
class ValidationConfig:
    every: int = _opt(0, min=0, help="render a diagnosis x tone grid every N steps (0 = only at the end)")
    at_end: bool = _opt(True)
    inference_steps: int = _opt(20, min=1)
    guidance_scale: float = _opt(7.5, min=0.0)
    seed: int = _opt(0, min=0)
    resolution: int | None = _opt(None, min=8, help="defaults to data.resolution")


@dataclass
class SpeedConfig:
    cache_latents: str = _opt("auto", choices=("auto", "on", "off"),
                              help="cache VAE latents and frozen text embeddings (same losses, no VAE per "
                                   "step); auto = on unless data.center_crop=false (random crops)")
    cache_dir: str | None = _opt(None, help="defaults to ~/.cache/dermdiff_lora/latents")
    sdpa: bool = _opt(True, help="fused scaled-dot-product attention; false = diffusers' plain processor")
    channels_last: bool = _opt(False, help="channels-last UNet weights and activations")
    compile: bool = _opt(False, help="torch.compile the UNet (slow first step, faster after)")
    tf32: bool = _opt(True, help="TF32 matmuls/convolutions on GPUs that have them (fp32 runs)")
    pin_memory: bool = _opt(True, help="pinned host memory for batches (CUDA)")


@dataclass
class OutputConfig:
    dir: str = _opt("outputs/run")
    overwrite: bool = _opt(False, help="replace an existing finished output folder")


@dataclass
class LoggingConfig:
    tensorboard: bool = _opt(True)
    log_every: int = _opt(10, min=1)
    progress: bool = _opt(True)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _cross_checks(cfg: Config) -> list[str]:
    errors = []
    if cfg.train.mode == "full" and cfg.lora.text_encoder:
        errors.append("lora.text_encoder=true needs train.mode=lora (full mode trains the UNet only)")
    if len(cfg.optim.betas) != 2:
        errors.append(f"optim.betas: expected 2 numbers, got {cfg.optim.betas!r}")
    if not cfg.prompts.template and not cfg.data.caption_column:
        errors.append("prompts.template is empty and data.caption_column is empty: set one of them")
    if cfg.speed.cache_latents == "on" and not cfg.data.center_crop:
        errors.append("speed.cache_latents=on with data.center_crop=false would freeze one random crop: "
                      "use cache_latents=auto/off or center_crop=true")
    return errors


# ----------------------------------------------------------------------------------------------- loading
def parse_overrides(overrides: list[str]) -> dict:
    """``["train.max_steps=10", "lora.target_modules=[to_q,to_v]"]`` → nested dict (values parsed as YAML)."""
    nested: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (example: train.max_steps=100)")
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return nested


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A file path, or the name of a packaged config (``demo``, ``lora_24gb``, ...)."""
    p = Path(path)
    if p.is_file():
        return p
    packaged = PACKAGED_CONFIGS / f"{p.stem if p.suffix in ('.yaml', '.yml') else p.name}.yaml"
    if packaged.is_file():
        return packaged
    names = sorted(f.stem for f in PACKAGED_CONFIGS.glob("*.yaml"))
    raise ConfigError(f"config file {str(path)!r} not found (packaged configs: {', '.join(names)})")


def load(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults if ``path`` is None), apply overrides, validate everything."""
    data: dict = {}
    if path is not None:
        cfg_path = resolve_config_path(path)
        try:
            data = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{cfg_path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{cfg_path}: expected a mapping of sections, got {type(data).__name__}")
    _deep_merge(data, parse_overrides(overrides or []))
    return from_dict(data)


def from_dict(data: dict) -> Config:
    errors: list[str] = []
    cfg = _build(Config, data, "", errors)
    if not errors:
        errors.extend(_cross_checks(cfg))
    if errors:
        raise ConfigError(f"{len(errors)} config error(s):\n  - " + "\n  - ".join(errors))
    return cfg


def save(cfg: Config, folder: str | os.PathLike) -> Path:
    """Write the resolved config next to an output (atomically)."""
    path = Path(folder) / CONFIG_FILENAME
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    os.replace(tmp, path)
    return path


def load_saved(folder: str | os.PathLike) -> Config | None:
    """The config saved beside an output, or None when there is none."""
    path = Path(folder) / CONFIG_FILENAME
    if not path.is_file():
        return None
    return from_dict(yaml.safe_load(path.read_text()) or {})


def _deep_merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _build(cls: type, data: Any, prefix: str, errors: list[str]) -> Any:
    if not isinstance(data, dict):
        errors.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (valid: {', '.join(fields)})"
            errors.append(f"unknown key '{prefix}{key}'{hint}")
    values = {}
    for name, f in fields.items():
        if name not in data:
            continue
        if dataclasses.is_dataclass(hints[name]):
            values[name] = _build(hints[name], data[name], f"{prefix}{name}.", errors)
        else:
            values[name] = _check_value(f"{prefix}{name}", data[name], hints[name], f.metadata, errors)
    return cls(**values)


def _check_value(key: str, value: Any, hint: Any, meta: dict, errors: list[str]) -> Any:
    if isinstance(value, bool):  # YAML 1.1 reads on/off/yes/no as booleans: give back the choice's word
        words = [w for w in (("on", "yes") if value else ("off", "no")) if w in (meta.get("choices") or ())]
        value = words[0] if words else value
    ok, value = _coerce(value, hint)
    if not ok:
        errors.append(f"{key}: expected {_type_name(hint)}, got {value!r}")
        return value
    if value is None:
        return value
    choices = meta.get("choices")
    if choices and value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint_txt = f" (did you mean {close[0]!r}?)" if close else ""
        errors.append(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}{hint_txt}")
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            errors.append(f"{key}: {value!r} is out of range [{lo}, {hi}]")
    return value


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return True, None
        for arg in args:
            if arg is not type(None):
                ok, coerced = _coerce(value, arg)
                if ok:
                    return True, coerced
        return False, value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_coerce(v, args[0]) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if origin is dict:
        if not isinstance(value, dict):
            return False, value
        items = {str(k): _coerce(v, args[1]) for k, v in value.items()}
        return all(ok for ok, _ in items.values()), {k: v for k, (_, v) in items.items()}
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if hint is float:
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return (isinstance(value, (int, float)) and not isinstance(value, bool)), (
            float(value) if isinstance(value, (int, float)) else value)
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)
        return isinstance(value, str), value
    return True, value


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if origin is dict:
        return "a mapping"
    return {type(None): "null", bool: "true/false", int: "an integer", float: "a number",
            str: "a string"}.get(hint, str(hint))
