"""One typed config for everything: YAML file + ``key.sub=value`` overrides, validated all at once.

Each section is a dataclass. Field metadata may carry ``choices`` and ``min``/``max``; ``load()`` reports
every unknown key (with the closest valid key), wrong type and out-of-range value in one ConfigError.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .validate import build

CONFIG_FILENAME = "dermdiff_config.yaml"
PACKAGED_CONFIGS = Path(__file__).parent.parent / "configs"


def _opt(default: Any = None, *, choices: tuple | None = None, min: float | None = None,
         max: float | None = None, help: str = "") -> Any:
    meta = {"choices": choices, "min": min, "max": max, "help": help}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    base: str = _opt("tiny-random", help="Hub id, local diffusers folder, 'tiny-random' or 'tiny'")
    revision: str | None = _opt(None, help="Hub revision (branch, tag or commit) of model.base")
    init_adapter: str | None = _opt(None, help="start LoRA training from this adapter (folder, file or Hub id)")
    safety_checker: bool = _opt(False, help="run SD's NSFW checker on generated images (it blacks out skin)")
    allow_pickle: bool = _opt(False, help="allow loading .bin/.ckpt/.pt weights (pickle); off by default")


PRESETS = ("isic_archive", "isic2020", "ham10000", "fitzpatrick17k", "ddi", "pad_ufes_20")
TONE_GROUPS = ("lighter", "brown", "darker")  # the paper's three groups, lightest first
FITZPATRICK_GROUPS = {"1": "lighter", "2": "lighter", "3": "brown", "4": "brown", "5": "darker", "6": "darker"}


@dataclass
class DataConfig:
    dir: str | None = _opt(None, help="imagefolder with metadata.csv or metadata.jsonl, or a preset's download")
    preset: str | None = _opt(None, choices=PRESETS, help="a public dataset's layout, classes, tones and terms")
    metadata: str | None = _opt(None, help="metadata file (.csv, .tab/.tsv, .jsonl, .parquet); relative to data.dir")
    images: list[str] = _opt([], help="image folder(s), relative to data.dir (default: the metadata's folder)")
    dataset: str | None = _opt(None, help="Hub dataset user/name[@rev] or local dataset (datasets.load_dataset)")
    split: str = _opt("train", help="split of data.dataset")
    image_column: str = _opt("auto", help="image column of data.dataset ('auto': the first image feature)")
    tones: str | None = _opt(None, help="the audit's tones.csv: ITA tone groups for rows without a given tone")
    unknown_tone: str = _opt("estimate", choices=("estimate", "drop"), help="rows without a given tone: estimate (data.tones) or drop")
    fitzpatrick_groups: dict[str, str] = _opt(dict(FITZPATRICK_GROUPS), help="Fitzpatrick type 1-6 -> group "
                                              "(unlisted types: I-II lighter, III-IV brown, V-VI darker)")
    non_neoplastic: str = _opt("benign", choices=("benign", "leave_out"), help="Fitzpatrick17k's 'non-neoplastic' "
                               "three_partition_label (mostly inflammatory conditions): benign, or rows left out")
    file_column: str = _opt("auto", help="column naming the image file; 'auto' = file_name or image_name")
    caption_column: str = _opt("text", help="caption column, used when prompts.template is empty")
    resolution: int = _opt(512, min=8, max=4096)
    center_crop: bool = _opt(True, help="center crop (true) or random crop (false)")
    fit: str = _opt("crop", choices=("crop", "pad"), help="non-square images: crop (data.center_crop) loses the "
                    "ends of the long side; pad (to a square, in the border's median colour) keeps all of it "
                    "at fewer pixels")
    decode: str = _opt("draft", choices=("draft", "full"), help="JPEGs: draft decodes at 1/2, 1/4 or 1/8 "
                       "scale, still at least data.resolution (much faster on large photos); full: every pixel")
    random_flip: bool = _opt(True)
    on_bad_image: str = _opt("error", choices=("error", "skip"))
    balance: str = _opt("none", choices=("none", "tone", "tone_x_diagnosis"))
    balance_cap: float | None = _opt(10.0, min=1.0, help="max ratio between sampling weights (null: none): "
                                     "an image of a small group is drawn at most this many times as often as "
                                     "one of the largest")
    balance_min_group: int = _opt(50, min=0, help="with data.balance: warn about every (diagnosis, tone) group "
                                  "with fewer images (oversampling a few patients' photos invites memorising "
                                  "them); 0: no warning")
    tone_column: str = _opt("skin_tone")
    diagnosis_column: str = _opt("benign_malignant")
    num_workers: int | None = _opt(None, min=0, max=64, help="DataLoader worker processes per training process; "
                                   "null: min(8, CPUs per process - 1), 0 below 4 CPUs per process")
    max_samples: int | None = _opt(None, min=1)
    split_file: str | None = _opt(None, help="a split file (`dermdiff-lora split`): use only the rows of data.split_part")
    split_part: str = _opt("train", choices=("train", "val", "test"), help="which part of data.split_file to use")


@dataclass
class PromptsConfig:
    template: str | None = _opt("{benign_malignant} skin disease on {skin_tone} skin tone")
    value_maps: dict[str, dict[str, str]] = _opt(
        {"skin_tone": {"0": "lighter", "1": "brown", "2": "darker"},
         "benign_malignant": {"benign": "benign", "malignant": "malignant"}})
    caption_dropout: float = _opt(0.0, min=0.0, max=1.0, help="probability of an empty prompt (for CFG)")


ADAPTER_METHODS = ("lora", "dora", "loha", "lokr")
# Named target sets (an entry of lora.target_modules may be one of these names).
TARGET_PRESETS = {
    "attention": ["to_q", "to_k", "to_v", "to_out.0"],
    "resnet_convs": ["conv1", "conv2", "conv_shortcut"],  # SD 1.x ResnetBlock2D convolutions (LoCon's)
    "sampler_convs": ["downsamplers.0.conv", "upsamplers.0.conv"],
}


@dataclass
class LoraConfig:
    method: str = _opt("lora", choices=ADAPTER_METHODS, help="lora | dora (weight-decomposed) | loha "
                                                            "(Hadamard) | lokr (Kronecker), through peft")
    rank: int = _opt(4, min=1, max=1024)
    alpha: float = _opt(4.0, min=0.0)
    dropout: float = _opt(0.0, min=0.0, max=1.0, help="lora/dora: dropout on the adapter's input")
    rank_dropout: float = _opt(0.0, min=0.0, max=1.0, help="loha/lokr: drop whole ranks while training")
    module_dropout: float = _opt(0.0, min=0.0, max=1.0, help="loha/lokr: skip a whole layer's adapter while "
                                                             "training")
    factor: int = _opt(-1, min=-1, help="lokr: Kronecker factor of each dimension (-1: as square as possible)")
    decompose_both: bool = _opt(False, help="lokr: also low-rank-decompose the small Kronecker factor")
    conv_rank: int | None = _opt(None, min=1, max=1024, help="rank of convolution targets (LoCon's conv_dim); "
                                                             "null: lora.rank")
    conv_alpha: float | None = _opt(None, min=0.0, help="alpha of convolution targets; null: lora.alpha")
    target_modules: list[str] = _opt(["to_q", "to_k", "to_v", "to_out.0"],
                                     help="module names, or presets: " + ", ".join(TARGET_PRESETS))
    text_encoder: bool = _opt(False, help="also train an adapter (same method) on the text encoder")
    text_encoder_target_modules: list[str] = _opt(["q_proj", "k_proj", "v_proj", "out_proj"])


def expand_targets(targets: list[str]) -> list[str]:
    """Target module names with preset names replaced by their modules (order kept, no repeats)."""
    out: list[str] = []
    for item in targets:
        out.extend(m for m in TARGET_PRESETS.get(item, [item]) if m not in out)
    return out


def method_errors(lc: LoraConfig) -> list[str]:
    errors = []
    if lc.method in ("loha", "lokr") and lc.dropout:
        errors.append(f"lora.dropout applies to lora/dora; peft's {lc.method} has lora.rank_dropout and "
                      "lora.module_dropout instead")
    if lc.method in ("lora", "dora") and (lc.rank_dropout or lc.module_dropout):
        errors.append(f"lora.rank_dropout / lora.module_dropout are loha/lokr options; {lc.method} has "
                      "lora.dropout")
    if lc.method != "lokr" and (lc.factor != -1 or lc.decompose_both):
        errors.append(f"lora.factor / lora.decompose_both are lokr options (lora.method={lc.method})")
    return errors


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
    errors.extend(data_errors(cfg.data))
    errors.extend(method_errors(cfg.lora))
    if cfg.model.init_adapter and cfg.lora.method in ("loha", "lokr"):
        errors.append(f"model.init_adapter continues a LoRA or DoRA adapter; lora.method={cfg.lora.method} "
                      "starts a fresh adapter (leave model.init_adapter empty)")
    if cfg.speed.cache_latents == "on" and not cfg.data.center_crop and cfg.data.fit == "crop":
        errors.append("speed.cache_latents=on with data.center_crop=false would freeze one random crop: "
                      "use cache_latents=auto/off or center_crop=true")
    return errors


def data_errors(d: DataConfig) -> list[str]:
    errors = []
    if d.dataset and (d.dir or d.metadata or d.preset or d.images):
        errors.append("data.dataset (a datasets.load_dataset source) excludes data.dir, data.metadata, "
                      "data.images and data.preset: set one kind of source")
    if d.preset and not (d.dir or d.metadata):
        errors.append(f"data.preset={d.preset} needs data.dir: the folder you downloaded the dataset to")
    if d.images and not (d.dir or d.metadata):
        errors.append("data.images needs data.metadata (the file that lists the images)")
    if d.tones and Path(d.tones).suffix not in (".csv", ".jsonl"):
        errors.append(f"data.tones: {d.tones!r} is not the audit's tones .csv/.jsonl file")
    if set(d.fitzpatrick_groups) - set(FITZPATRICK_GROUPS):
        errors.append(f"data.fitzpatrick_groups: keys must be Fitzpatrick types 1-6 (types left out keep "
                      f"their default group), got {', '.join(sorted(d.fitzpatrick_groups))}")
    bad = sorted({v for v in d.fitzpatrick_groups.values() if v not in TONE_GROUPS})
    if bad:
        errors.append(f"data.fitzpatrick_groups: {', '.join(bad)} is not a tone group "
                      f"({', '.join(TONE_GROUPS)})")
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
        node[parts[-1]] = _yaml_value(raw)
    return nested


def _yaml_value(raw: str) -> Any:
    """An override's value as YAML; text that is not valid YAML (``{dx} on {skin_tone} skin``) stays text."""
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return raw


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
    cfg = build(Config, data, "", errors)
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


def with_overrides(cfg: Config | None, overrides: list[str]) -> Config:
    """``cfg`` (a saved config, or the defaults for None) with ``key=value`` overrides, validated again."""
    data = cfg.to_dict() if cfg is not None else {}
    _deep_merge(data, parse_overrides(overrides))
    return from_dict(data)


def _deep_merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
