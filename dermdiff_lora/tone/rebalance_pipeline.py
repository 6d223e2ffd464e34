"""The pipeline ``rebalance`` renders with: fast scheduler, one adapter fused, channels_last, optional
``torch.compile``, and the batch size ``plan``'s memory model says fits the GPU.

One adapter is fused into the UNet (and text encoder) weights for the run (``fuse_lora``: no LoRA layers
left on the forward path); several stay unfused, each at its scale (diffusers' multi-adapter API).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..core.errors import ConfigError
from ..generation.schedulers import auto_settings, set_scheduler

CPU_BATCH = 4  # generate's batch on the CPU
MAX_BATCH = 64
MEMORY_MARGIN = 0.9  # of the free GPU memory: allocator fragmentation, cuDNN workspaces


def load_render_pipeline(base: str, adapters: Sequence[tuple[str, float]] = (), *, scheduler: str = "auto",
                         dtype: str = "auto", fuse: bool = True, channels_last: bool = True,
                         compile_unet: bool = False, allow_pickle: bool = False):
    """(pipeline on the GPU if there is one, its settings for the run record)."""
    import torch

    from ..adapters.apply import attach
    from ..core.models import load_pipeline

    cuda = torch.cuda.is_available()
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    name = ("fp16" if cuda else "fp32") if dtype == "auto" else dtype
    if name not in dtypes:
        raise ConfigError(f"dtype {dtype!r}: use auto, {', '.join(dtypes)}")
    pipe = load_pipeline(base, torch_dtype=dtypes[name], allow_pickle=allow_pickle)
    info = attach(pipe, list(adapters), base_label=base, allow_pickle=allow_pickle) if adapters else []
    fused = fuse and len(info) == 1
    if fused:  # the scale set_adapters gave is in the layers' scaling; fuse at it, then drop the LoRA layers
        pipe.fuse_lora(adapter_names=[info[0]["name"]])
        pipe.unload_lora_weights()
    config = dict(pipe.scheduler.config)
    sampler = set_scheduler(pipe, scheduler)
    pipe.to("cuda" if cuda else "cpu")
    if channels_last and cuda:  # the diffusers docs' advice for the UNet and VAE convolutions on a GPU
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet)
    settings = {"base": base, "adapters": [{"path": i["path"], "scale": i["scale"], "fingerprint": i["fingerprint"]}
                                           for i in info],
                "fused": fused, "scheduler": scheduler, "sampler": sampler,
                "scheduler_settings": auto_settings(config) if scheduler == "auto" else None,
                "dtype": name, "device": "cuda" if cuda else "cpu", "channels_last": channels_last and cuda,
                "compile": compile_unet}
    return pipe, settings


def default_workers() -> int:
    """Check workers: 2 beside a GPU (it never waits for the checks); none on the CPU, where they would
    take cores from the rendering."""
    import torch

    return 2 if torch.cuda.is_available() else 0


def generate_peaks(pipe, size: int, guidance_scale: float) -> tuple[int, int]:
    """(bytes beyond the weights for a batch of 1, bytes per extra image) of rendering at ``size`` px:
    one denoising step and the VAE decode, simulated on ``meta`` copies of the pipeline's models."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from ..training.memsim import StepSpec, simulate_generate

    dtype = pipe.unet.dtype
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(pipe.unet.config)
        vae = AutoencoderKL.from_config(pipe.vae.config)
        text = CLIPTextModel(pipe.text_encoder.config)
    for model in (unet, vae, text):
        model.to(dtype=dtype) if model.dtype != dtype else None
    spec = StepSpec(1, size, dtype, None, policy="cuda")
    peaks = [simulate_generate(unet, vae, text, spec, prompts=n, cfg_scale=guidance_scale > 1) for n in (1, 2)]
    return peaks[0], peaks[1] - peaks[0]


def auto_batch_size(pipe, size: int, guidance_scale: float, free_bytes: int | None = None) -> int:
    """The most images per call that fit ``free_bytes`` (default: the GPU's free memory, weights loaded,
    times ``MEMORY_MARGIN``) by ``plan``'s memory model; ``CPU_BATCH`` without a GPU."""
    import torch

    if free_bytes is None:
        if not torch.cuda.is_available():
            return CPU_BATCH
        free_bytes = int(torch.cuda.mem_get_info()[0] * MEMORY_MARGIN)
    first, per_image = generate_peaks(pipe, size, guidance_scale)
    return max(1, min(MAX_BATCH, 1 + math.floor((free_bytes - first) / max(per_image, 1))))
