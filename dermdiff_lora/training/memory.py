"""``plan``: the peak accelerator memory a training config needs, known before training (and downloads).

Weights, gradients, optimizer states and EMA are exact arithmetic on the parameter counts of the
architecture, built from its configs on the ``meta`` device (no weights). Activations and temporaries
come from one micro-step simulated on ``meta`` (``memsim``). ``peak`` is what
``torch.cuda.max_memory_allocated`` reports; the fit check adds the CUDA runtime it does not count.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigError, ModelError
from .ddp import ddp_extra_bytes, ddp_note

if TYPE_CHECKING:
    from .memsim import MetaModels

GB = 10**9
RUNTIME_OVERHEAD = 1 * GB  # CUDA context, cuBLAS/cuDNN workspaces, allocator slack
SD14_ARCHITECTURE = Path(__file__).parent.parent / "assets" / "sd-v1-4-architecture.json"
VALIDATION_BATCH = 4  # generate.render's default prompts per pipeline call
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)


@dataclass
class Plan:
    """Peak memory of one training step, split so that the parts add up to ``peak``."""

    summary: str
    architecture: str
    params: dict[str, int]
    parts: dict[str, int]             # weights, gradients, optimizer, ema, activations (bytes)
    per_image: dict[str, int]         # activation bytes per extra image: checkpointing / no checkpointing
    validation: int | None            # peak while rendering a validation grid (between steps)
    budget: int
    largest_batch: int
    overhead: int = RUNTIME_OVERHEAD
    notes: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return sum(self.parts.values())

    @property
    def needs(self) -> int:
        return max(self.peak, self.validation or 0) + self.overhead

    @property
    def fits(self) -> bool:
        return self.needs <= self.budget

    def to_dict(self) -> dict:
        return {"summary": self.summary, "architecture": self.architecture, "params": self.params,
                "parts": self.parts, "peak": self.peak, "per_image": self.per_image,
                "validation": self.validation, "overhead": self.overhead, "needs": self.needs,
                "budget": self.budget, "fits": self.fits, "largest_batch": self.largest_batch,
                "notes": self.notes, "suggestions": self.suggestions}


def parse_size(text: str) -> int:
    """``"24GB"`` → 24·10⁹ bytes; ``GiB`` → 2³⁰; a bare number means GB."""
    m = _SIZE.match(str(text))
    if not m or (not m.group(2) and m.group(3)):
        raise ConfigError(f"--gpu-memory {text!r}: expected a size like 24GB, 80GB or 22.5GiB")
    prefix = m.group(2).lower() or ("" if m.group(4) else "g")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** " kmgt".index(prefix or " "))


# ---------------------------------------------------------------------------------------- architecture
def load_architecture(model_cfg) -> tuple[dict, str]:
    """The unet / vae / text_encoder configs of ``model.base`` (reads configs only) and their source."""
    from ..core import models

    base = model_cfg.base
    if base in (models.TINY_RANDOM, models.TINY) or Path(base).expanduser().exists():
        folder: Path | None = models.resolve_base(base, allow_pickle=True)
    else:
        folder = _cached_snapshot(base, model_cfg.revision)
    if folder is None:
        arch = json.loads(SD14_ARCHITECTURE.read_text())
        return arch, f"SD v1-4 (packaged configs: {base} is not on this machine)"
    arch = {}
    for part in ("unet", "vae", "text_encoder"):
        path = folder / part / "config.json"
        if not path.is_file():
            raise ModelError(f"{path} is missing: {folder} is not a Stable Diffusion pipeline folder")
        arch[part] = json.loads(path.read_text())
    return arch, str(folder)


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "unet/config.json", revision=revision)
    return Path(found).parent.parent if isinstance(found, str) else None


def build_meta(arch: dict, cfg, weight_dtype) -> MetaModels:
    """The three models on ``meta`` as training sets them up (``memsim.build_meta``)."""
    from .memsim import build_meta as build

    return build(arch, cfg, weight_dtype)


# ------------------------------------------------------------------------------------------ arithmetic
def tensor_bytes(module_or_params) -> int:
    """Bytes of parameters (and buffers, for a module)."""
    if hasattr(module_or_params, "parameters"):
        tensors = [*module_or_params.parameters(), *module_or_params.buffers()]
    else:
        tensors = list(module_or_params)
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_bytes(params: list, optim_cfg) -> int:
    """State bytes of ``optim.make_optimizer``'s optimizer (as ``optim.optimizer_state_bytes`` counts)."""
    total = 0
    for p in params:
        n = p.numel()
        if optim_cfg.name == "adamw8bit":  # bitsandbytes: uint8 moments, fp32 absmax per 256, 2 qmaps
            total += 2 * n + 8 * math.ceil(n / 256) + 2 * 256 * 4 if n >= optim_cfg.min_8bit_size else 8 * n
        else:  # torch AdamW: fp32 exp_avg + exp_avg_sq + a scalar step tensor
            total += 8 * n + 4
    return total


def dtypes(cfg, device: str):
    """(weight dtype, autocast dtype) of ``train._weight_dtype`` / accelerate on ``device``."""
    import torch

    mp = cfg.train.mixed_precision
    if mp == "bf16":
        return torch.bfloat16, torch.bfloat16
    if mp == "fp16" and device == "cuda":
        return torch.float16, torch.float16
    return torch.float32, None


def uses_cache(cfg) -> tuple[bool, bool]:
    """(latents cached, text embeddings cached) for this config."""
    from ..data.cache import cache_enabled

    latents = cache_enabled(cfg)
    return latents, latents and not cfg.lora.text_encoder


# ------------------------------------------------------------------------------------------- simulation
class Planner:
    """Builds meta models and runs simulations once per distinct setting (suggestions reuse them)."""

    def __init__(self, cfg, device: str = "cuda") -> None:
        self.device = device
        self.arch, self.source = load_architecture(cfg.model)
        self._models: dict[tuple, MetaModels] = {}
        self._sims: dict[tuple, Any] = {}

    def models(self, cfg) -> MetaModels:
        wdt, _ = dtypes(cfg, self.device)
        lc = cfg.lora
        key = (cfg.train.mode, str(wdt), lc.method, lc.rank, lc.conv_rank, lc.factor, lc.decompose_both,
               tuple(lc.target_modules), lc.text_encoder, tuple(lc.text_encoder_target_modules))
        if key not in self._models:
            self._models[key] = build_meta(self.arch, cfg, wdt)
        return self._models[key]

    def step(self, cfg, batch: int, ckpt: bool) -> tuple[int, int]:
        """(dynamic peak, gradient bytes) of one micro-step at ``batch``, relative to the static memory."""
        from .memsim import StepSpec, simulate_encode, simulate_unet

        mm, (wdt, adt) = self.models(cfg), dtypes(cfg, self.device)
        train_te = cfg.train.mode == "lora" and cfg.lora.text_encoder
        spec = StepSpec(batch, cfg.data.resolution, wdt, adt, train_te, cfg.train.gradient_accumulation > 1,
                        "cuda" if self.device == "cuda" else "cpu")
        key = (id(mm), ckpt, spec)
        if key not in self._sims:
            _set_checkpointing(mm, ckpt, train_te)
            self._sims[key] = simulate_unet(mm.unet, mm.vae, mm.text_encoder, spec)
        unet = self._sims[key]
        grads = unet["grads"]
        peak = unet["peak"]
        if not uses_cache(cfg)[0]:  # the VAE (and frozen text encoder) run first, without gradients
            enc_key = (id(mm), "encode", spec)
            if enc_key not in self._sims:
                self._sims[enc_key] = simulate_encode(mm.vae, mm.text_encoder, spec,
                                                      encode_text=not train_te)
            peak = max(peak, self._sims[enc_key] + (grads if spec.grads_exist else 0))
        # after the backward pass fused AdamW, 8-bit Adam and the fused-lerp EMA make no temporaries
        return max(peak, grads), grads

    def validation(self, cfg) -> int:
        from .memsim import StepSpec, simulate_generate

        mm, (wdt, adt) = self.models(cfg), dtypes(cfg, self.device)
        res = cfg.validation.resolution or cfg.data.resolution
        spec = StepSpec(1, res, wdt, adt, policy="cuda" if self.device == "cuda" else "cpu")
        key = (id(mm), "generate", spec)
        if key not in self._sims:
            _set_checkpointing(mm, False, False)
            self._sims[key] = simulate_generate(mm.unet, mm.vae, mm.text_encoder, spec,
                                                prompts=VALIDATION_BATCH,
                                                cfg_scale=cfg.validation.guidance_scale > 1)
        return self._sims[key]


def _set_checkpointing(mm: MetaModels, on: bool, text_encoder: bool) -> None:
    if on:
        mm.unet.enable_gradient_checkpointing()
    else:
        mm.unet.disable_gradient_checkpointing()
    if text_encoder and on:
        mm.text_encoder.gradient_checkpointing_enable()
    elif text_encoder:
        mm.text_encoder.gradient_checkpointing_disable()


# ------------------------------------------------------------------------------------------------- plan
def static_parts(cfg, mm: MetaModels) -> dict[str, int]:
    """Bytes held for the whole run: weights on the accelerator, gradients, optimizer states, EMA."""
    cached_latents, cached_text = uses_cache(cfg)
    weights = tensor_bytes(mm.unet)
    weights += 0 if cached_latents else tensor_bytes(mm.vae)
    weights += 0 if cached_text else tensor_bytes(mm.text_encoder)
    return {"weights": weights, "gradients": tensor_bytes(mm.trainable),
            "optimizer": optimizer_bytes(mm.trainable, cfg.optim),
            "ema": tensor_bytes(mm.unet) if cfg.train.mode == "full" and cfg.train.ema else 0}


def plan(cfg, gpu_memory: int = 24 * GB, *, device: str = "cuda", suggest: bool = True,
         detail: bool = True, planner: Planner | None = None, processes: int = 1) -> Plan:
    """Estimated peak memory of training with ``cfg`` on one ``device`` (``cuda``, or ``cpu`` to check
    the estimate against measurements), and whether it fits ``gpu_memory`` bytes. ``detail=False``
    skips the per-image figures (one simulated step instead of four). ``processes`` > 1: what each of
    them holds under DDP (``ddp``)."""
    planner = planner or Planner(cfg, device)
    mm = planner.models(cfg)
    cached_latents, cached_text = uses_cache(cfg)
    parts = static_parts(cfg, mm)
    b, ckpt = cfg.train.batch_size, cfg.train.gradient_checkpointing
    dynamic, grads = planner.step(cfg, b, ckpt)
    parts["activations"] = dynamic - grads
    parts["ddp"] = ddp_extra_bytes(mm.trainable, processes)
    per_image = {name: planner.step(cfg, b + 1, on)[0] - planner.step(cfg, b, on)[0]
                 for name, on in (("checkpointing", True), ("no checkpointing", False)) if detail}
    validation = None
    if cfg.validation.every or cfg.validation.at_end:
        validation = (parts["weights"] + parts["optimizer"] + parts["ema"] + planner.validation(cfg)
                      + (tensor_bytes(mm.vae) if cached_latents else 0)
                      + (tensor_bytes(mm.text_encoder) if cached_text else 0)
                      + (parts["gradients"] if processes > 1 else 0))  # DDP's buckets stay
    overhead = RUNTIME_OVERHEAD if device == "cuda" else 0
    slope = per_image.get("checkpointing" if ckpt else "no checkpointing")
    room = gpu_memory - overhead - sum(parts.values())
    largest = max(0, b + math.floor(room / max(slope, 1))) if slope is not None else 0
    if validation is not None and validation + overhead > gpu_memory:
        largest = 0
    result = Plan(_summary(cfg, cached_latents, device, processes), planner.source, _param_counts(mm), parts,
                  per_image, validation, gpu_memory, largest, overhead)
    if cached_latents:
        result.notes.append("VAE" + (" and text encoder" if cached_text else "") + " stay on the CPU "
                            "(latent cache); they come in only for validation grids")
    if processes > 1:
        result.notes.append(ddp_note(processes, cfg))
    if cfg.train.mode == "lora" and cfg.lora.method == "dora":
        result.notes.append(dora_note(cfg, planner, dynamic - grads))
    if suggest and not result.fits:
        result.suggestions = suggestions(cfg, gpu_memory, planner, processes)
    return result


def dora_note(cfg, planner: Planner, activations: int) -> str:
    """What DoRA adds over a LoRA of the same rank and targets: its magnitudes, and the activations of the
    weight norm it recomputes in every forward pass (simulated both ways)."""
    as_lora = with_overrides(cfg, ["lora.method=lora"])
    lora_dynamic, lora_grads = planner.step(as_lora, cfg.train.batch_size, cfg.train.gradient_checkpointing)
    extra_params = sum(p.numel() for p in planner.models(cfg).trainable) - sum(
        p.numel() for p in planner.models(as_lora).trainable)
    return (f"DoRA vs LoRA r{cfg.lora.rank} on the same layers: +{extra_params / 1e6:.2f} M trained parameters "
            f"(magnitudes), +{(activations - (lora_dynamic - lora_grads)) / GB:.2f} GB activations at batch "
            f"{cfg.train.batch_size} (the weight norm is recomputed in every forward pass)")


def _param_counts(mm: MetaModels) -> dict[str, int]:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"unet": count(mm.unet), "text_encoder": count(mm.text_encoder), "vae": count(mm.vae),
            "trained": sum(p.numel() for p in mm.trainable)}


def _summary(cfg, cached: bool, device: str, processes: int = 1) -> str:
    t = cfg.train
    lc = cfg.lora
    mode = (f"{METHOD_NAMES[lc.method]} r{lc.rank}" + (f" (conv r{lc.conv_rank})" if lc.conv_rank else "")
            + (" + text encoder" if lc.text_encoder else "")
            if t.mode == "lora" else "full UNet" + (" + EMA" if t.ema else ""))
    return (f"{mode} · {cfg.data.resolution}² · batch {t.batch_size} × {t.gradient_accumulation} accumulation"
            f" · {t.mixed_precision if t.mixed_precision != 'no' else 'fp32'}"
            f" · gradient checkpointing {'on' if t.gradient_checkpointing else 'off'} · {cfg.optim.name}"
            f" · latent cache {'on' if cached else 'off'} · {device}"
            + (f" · what each of {processes} GPUs holds (DDP)" if processes > 1 else ""))


METHOD_NAMES = {"lora": "LoRA", "dora": "DoRA", "loha": "LoHa", "lokr": "LoKr"}
# Switches in the order they are tried: those that change no result first.
SWITCHES = (
    ("speed.cache_latents=on", lambda c: c.speed.cache_latents == "off" and c.data.center_crop),
    ("train.gradient_checkpointing=true", lambda c: not c.train.gradient_checkpointing),
    ("optim.name=adamw8bit", lambda c: c.optim.name == "adamw"),
    ("train.mixed_precision=bf16", lambda c: c.train.mixed_precision == "no"),
    ("train.ema=false", lambda c: c.train.mode == "full" and c.train.ema),
    ("train.mode=lora", lambda c: c.train.mode == "full"),
)


def suggestions(cfg, gpu_memory: int, planner: Planner, processes: int = 1) -> list[str]:
    """Config overrides that make ``cfg`` fit: each switch alone, the fewest switches together (in
    ``SWITCHES`` order), and a smaller micro-batch with the same effective batch."""
    def needs(overrides: list[str]) -> Plan:
        return plan(with_overrides(cfg, overrides), gpu_memory, device=planner.device, suggest=False,
                    detail=False, planner=planner, processes=processes)

    out, chosen = [], []
    applicable = [s for s, ok in SWITCHES if ok(cfg)]
    for switch in applicable:
        if (p := needs([switch])).fits:
            out.append(f"{switch}  → needs {p.needs / GB:.2f} GB")
    for switch in applicable:
        chosen.append(switch)
        if (p := needs(chosen)).fits:
            if len(chosen) > 1:
                out.append(f"{' '.join(chosen)}  → needs {p.needs / GB:.2f} GB")
            break
    effective = cfg.train.batch_size * cfg.train.gradient_accumulation
    for b in (b for b in range(cfg.train.batch_size - 1, 0, -1) if effective % b == 0):
        batch = [f"train.batch_size={b}", f"train.gradient_accumulation={effective // b}"]
        if (p := needs(batch)).fits:
            out.append(f"{' '.join(batch)}  → needs {p.needs / GB:.2f} GB (same effective batch)")
            break
    return out or ["nothing in this config fits: use a GPU with more memory"]


def with_overrides(cfg, overrides: list[str]):
    from ..core import config

    data = copy.deepcopy(cfg.to_dict())
    for key, value in config.parse_overrides(overrides).items():
        data[key].update(value)
    return config.from_dict(data)


def format_plan(p: Plan) -> str:
    """The plan as the ``plan`` command prints it."""
    gb = lambda n: f"{n / GB:7.2f} GB"  # noqa: E731
    pc = p.params
    lines = [f"plan: {p.summary}", f"architecture: {p.architecture}",
             f"parameters: UNet {pc['unet'] / 1e6:.1f} M · text encoder {pc['text_encoder'] / 1e6:.1f} M · "
             f"VAE {pc['vae'] / 1e6:.1f} M · trained {pc['trained'] / 1e6:.2f} M", ""]
    labels = {"weights": "weights", "gradients": "gradients", "optimizer": "optimizer states",
              "ema": "EMA", "activations": "activations + temporaries", "ddp": "DDP beyond the gradients"}
    lines += [f"  {labels[k]:<26}{gb(v)}" for k, v in p.parts.items() if k != "ddp" or "DDP" in p.summary]
    lines += [f"  {'peak (max allocated)':<26}{gb(p.peak)}",
              f"  {'activations per image':<26}{gb(p.per_image['checkpointing'])} with checkpointing, "
              f"{p.per_image['no checkpointing'] / GB:.2f} GB without"]
    if p.validation is not None:
        lines.append(f"  {'validation grid':<26}{gb(p.validation)} (between steps)")
    lines.append(f"  {'+ CUDA runtime':<26}{gb(p.overhead)} (context, workspaces, allocator slack)")
    verdict = (f"fits (largest batch: about {p.largest_batch})" if p.fits
               else f"does NOT fit (short by {(p.needs - p.budget) / GB:.2f} GB)")
    lines += ["", f"needs {p.needs / GB:.2f} GB of {p.budget / GB:.2f} GB: {verdict}"]
    lines += [f"note: {n}" for n in p.notes]
    if p.suggestions:
        lines += ["to make it fit:"] + [f"  {s}" for s in p.suggestions]
    return "\n".join(lines)
