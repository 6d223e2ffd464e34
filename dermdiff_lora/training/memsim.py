"""One training micro-step on the ``meta`` device, counting the bytes of live tensors: the dynamic part of
``plan``'s memory estimate (activations, temporaries and gradients as they appear), with no weights, data
or FLOPs.

The real diffusers/transformers modules run; CUDA behaviour is emulated where it differs from the meta
kernels: autocast (matmuls and convolutions in the compute dtype, norms in fp32, fp32 weights cast once per
forward) and SDPA (a fused kernel that saves q, k, v, output and log-sum-exp, not the attention matrix).
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveBytes(TorchDispatchMode):
    """Bytes of tensor storages created while active and still alive, and their peak.

    Views share their base's storage and count once; the storages of ``modules``' parameters and buffers
    (views of weights appear as op outputs) are never counted.
    """

    def __init__(self, *modules) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._storages: dict[int, list[int]] = {}  # storage id -> [live tensors, nbytes]
        self._ignore = {t.untyped_storage()._cdata for m in modules
                        for t in (*m.parameters(), *m.buffers())}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._hold(t)
        return out

    def _hold(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._ignore:
            return
        entry = self._storages.get(key)
        if entry is None:
            entry = self._storages[key] = [0, storage.nbytes()]
            self.live += entry[1]
            self.peak = max(self.peak, self.live)
        entry[0] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._storages[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._storages[key]

    def reset_peak(self) -> None:
        self.peak = self.live


class Autocast:
    """CUDA autocast, emulated on meta tensors by patching ``torch.nn.functional`` for the duration.

    ``policy="cuda"``: linear/conv/SDPA in ``dtype``, group/layer norm in fp32 (CUDA's autocast lists);
    ``policy="cpu"``: norms keep their input dtype (CPU's lists). ``dtype=None``: no autocast, SDPA only.
    Casts of fp32 leaf weights are cached until ``clear_cache`` (autocast holds them until the forward
    returns).
    """

    def __init__(self, dtype: torch.dtype | None, policy: str = "cuda") -> None:
        self.dtype, self.policy = dtype, policy
        self.caching = True
        self._cache: dict[int, torch.Tensor] = {}

    def cast(self, t, dtype):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dtype == dtype:
            return t
        if self.caching and t.is_leaf and t.requires_grad:
            key = id(t)
            if key not in self._cache or self._cache[key].dtype != dtype:
                self._cache[key] = t.to(dtype)
            return self._cache[key]
        return t.to(dtype)

    def clear_cache(self) -> None:
        self._cache.clear()

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        names = ("linear", "conv2d", "group_norm", "layer_norm", "scaled_dot_product_attention")
        originals = {name: getattr(F, name) for name in names}
        replacements = {"linear": self._low(originals["linear"]), "conv2d": self._low(originals["conv2d"]),
                        "group_norm": self._fp32(originals["group_norm"]),
                        "layer_norm": self._fp32(originals["layer_norm"]),
                        "scaled_dot_product_attention": self._sdpa}
        try:
            for name, fn in replacements.items():
                setattr(F, name, fn)
            yield
        finally:
            for name, fn in originals.items():
                setattr(F, name, fn)

    def _low(self, fn):
        def wrapped(x, weight, bias=None, *args, **kwargs):
            d = self.dtype
            if d is None:
                return fn(x, weight, bias, *args, **kwargs)
            return fn(self.cast(x, d), self.cast(weight, d), self.cast(bias, d), *args, **kwargs)
        return wrapped

    def _fp32(self, fn):
        def wrapped(x, shape_or_groups, weight=None, bias=None, eps=1e-5):
            if self.dtype is None or self.policy != "cuda":
                return fn(x, shape_or_groups, weight, bias, eps)
            f = torch.float32
            return fn(self.cast(x, f), shape_or_groups, self.cast(weight, f), self.cast(bias, f), eps)
        return wrapped

    def _sdpa(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
        if self.dtype is not None:
            q, k, v = (self.cast(t, self.dtype) for t in (q, k, v))
        if attn_mask is not None:  # the fused CPU kernel takes no mask: same saved tensors, so mask-free
            is_causal = False
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, dropout_p, is_causal, scale=scale)[0]


@dataclass(frozen=True)
class StepSpec:
    """One micro-step as ``train.training_loss`` runs it (models built as ``train.setup`` builds them)."""

    batch: int
    resolution: int
    weight_dtype: torch.dtype
    autocast_dtype: torch.dtype | None
    train_text_encoder: bool = False
    grads_exist: bool = False  # gradient accumulation: the previous micro-step's gradients are alive
    policy: str = "cuda"


def _meta(*shape, dtype=torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def _ids(text_encoder, batch: int) -> torch.Tensor:
    return torch.zeros(batch, text_encoder.config.max_position_embeddings, dtype=torch.long, device="meta")


def latent_shape(vae, batch: int, resolution: int) -> tuple[int, int, int, int]:
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    return batch, vae.config.latent_channels, resolution // f, resolution // f


def simulate_encode(vae, text_encoder, spec: StepSpec, *, encode_text: bool) -> int:
    """Peak bytes of the no-grad VAE encode (and frozen text encoder) at the start of an uncached step."""
    tracker = LiveBytes(vae, text_encoder)
    with Autocast(None).patched(), tracker, torch.no_grad():
        pixels = _meta(spec.batch, 3, spec.resolution, spec.resolution, dtype=spec.weight_dtype)
        dist = vae.encode(pixels).latent_dist
        del pixels
        latents = ((dist.mean + dist.std * torch.randn_like(dist.mean)) * 0.18215).float()
        del dist
        if encode_text:
            hidden = text_encoder(_ids(text_encoder, spec.batch), return_dict=False)[0]
            del hidden
        del latents
    return tracker.peak


def simulate_unet(unet, vae, text_encoder, spec: StepSpec) -> dict[str, int]:
    """Peak live bytes of the UNet forward + backward of one micro-step (text encoder too when trained).

    Returns ``{"peak", "after_forward", "grads"}`` in bytes, relative to the memory held before the step
    (the latents and text embeddings it starts from are counted; gradients count once they exist).
    """
    tracker, amp = LiveBytes(unet, text_encoder), Autocast(spec.autocast_dtype, spec.policy)
    models = (unet, text_encoder) if spec.train_text_encoder else (unet,)
    trained = [p for m in models for p in m.parameters() if p.requires_grad]
    with amp.patched(), tracker:
        if spec.grads_exist:
            for p in trained:
                p.grad = torch.empty_like(p)
        latents = _meta(*latent_shape(vae, spec.batch, spec.resolution))
        if spec.train_text_encoder:
            hidden = text_encoder(_ids(text_encoder, spec.batch), return_dict=False)[0]
        else:
            hidden = _meta(spec.batch, text_encoder.config.max_position_embeddings,
                           text_encoder.config.hidden_size, dtype=spec.weight_dtype)
        noisy = latents + torch.randn_like(latents)
        timesteps = torch.zeros(spec.batch, dtype=torch.long, device="meta")
        pred = unet(noisy, timesteps, hidden, return_dict=False)[0]
        amp.clear_cache()  # autocast drops its weight casts when the prepared forward returns
        after_forward = tracker.live
        amp.caching = False  # recomputation (checkpointing) casts afresh, one block at a time
        loss = F.mse_loss(pred.float(), latents.float())
        del pred, noisy, hidden
        loss.backward()
        del loss, latents
    grads = sum(p.numel() * p.element_size() for p in trained)
    for p in trained:
        p.grad = None
    return {"peak": tracker.peak, "after_forward": after_forward, "grads": grads}


def simulate_generate(unet, vae, text_encoder, spec: StepSpec, *, prompts: int, cfg_scale: bool) -> int:
    """Peak live bytes of rendering ``prompts`` images at once: one denoising step + the VAE decode."""
    tracker, amp = LiveBytes(unet, vae, text_encoder), Autocast(spec.autocast_dtype, spec.policy)
    rows = prompts * (2 if cfg_scale else 1)
    shape = latent_shape(vae, prompts, spec.resolution)
    with amp.patched(), tracker, torch.no_grad():
        hidden = text_encoder(_ids(text_encoder, rows), return_dict=False)[0]
        latents = _meta(rows, *shape[1:], dtype=spec.weight_dtype)
        pred = unet(latents, torch.zeros(rows, dtype=torch.long, device="meta"), hidden, return_dict=False)[0]
        amp.clear_cache()
        del pred, hidden, latents
        image = vae.decode(_meta(*shape, dtype=spec.weight_dtype), return_dict=False)[0]
        del image
    return tracker.peak


def profiled_peak(fn) -> int:
    """Peak bytes of tensor memory allocated on the CPU while ``fn`` runs, above what was allocated before
    (torch profiler memory events: tensor allocations, not process RSS): the measurement ``plan`` is
    checked against."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    return max(itertools.accumulate(b for _, b in events), default=0)


@dataclass
class MetaModels:
    unet: Any
    vae: Any
    text_encoder: Any
    trainable: list


def build_meta(arch: dict, cfg, weight_dtype) -> MetaModels:
    """The three models on ``meta``, with the dtypes, adapters and trainable flags ``train.setup`` gives."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..adapters import lora, methods

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(arch["unet"])
        vae = AutoencoderKL.from_config(arch["vae"])
        te = CLIPTextModel(CLIPTextConfig.from_dict(arch["text_encoder"]))
    vae.requires_grad_(False).to(dtype=weight_dtype)
    te.requires_grad_(False).to(dtype=weight_dtype)
    lc, trained = cfg.lora, [unet]
    if cfg.train.mode == "full":
        unet.train().requires_grad_(True)
    else:
        unet.requires_grad_(False).to(dtype=weight_dtype)
        lora.add_lora(unet, methods.build_config(lc, lc.target_modules, unet), "unet")
        if lc.text_encoder:
            te_cfg = methods.build_config(lc, lc.text_encoder_target_modules, te)
            lora.add_lora(te, te_cfg, "text_encoder")
            trained.append(te)
        for p in (p for m in trained for p in m.parameters() if p.requires_grad):
            p.data = p.data.to(torch.float32)
    params = [p for m in trained for p in m.parameters() if p.requires_grad]
    return MetaModels(unet, vae, te, params)
