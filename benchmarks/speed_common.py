"""Shared helpers of the speed/memory benchmarks: models, data, one training micro-step, CPU peak memory."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

# A mid-size SD-1.x architecture: at 128² its VAE encode is 33 % of the VAE + UNet training FLOPs, as the
# full-size model's is at 512² (1.12 of 3.53 TFLOP per image).
MID_UNET = {"block_out_channels": [80, 160, 320, 320], "norm_num_groups": 16, "cross_attention_dim": 128}
MID_VAE = {"block_out_channels": [32, 64, 128, 128]}
MID_TEXT = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4}
MID_RESOLUTION = 128


def setup_process(threads: int) -> None:
    """Quiet libraries; pin torch's CPU threads (OpenMP threads that outnumber the free cores spin-wait:
    on a shared 2-core machine, 2 threads ran a tiny step 60x slower than 1)."""
    torch.set_num_threads(threads)
    quiet()


def quiet() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    for name in ("diffusers", "transformers", "accelerate", "peft", "bitsandbytes", "dermdiff_lora"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def workdir() -> Path:
    """A scratch folder; the model cache goes inside it so nothing touches ~/.cache."""
    root = Path(tempfile.mkdtemp(prefix="dermdiff-bench-"))
    os.environ["DERMDIFF_CACHE"] = str(root / "cache")
    return root


def sd14_architecture() -> dict:
    from dermdiff_lora.training.memory import SD14_ARCHITECTURE

    return json.loads(SD14_ARCHITECTURE.read_text())


def build_mid(folder: Path, seed: int = 0) -> Path:
    """Save the mid-size SD-architecture pipeline (seeded random weights) to ``folder``."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from dermdiff_lora.core.models import write_tiny_tokenizer_files

    arch = sd14_architecture()
    src = write_tiny_tokenizer_files(folder / ".tokenizer-src")
    tokenizer = CLIPTokenizer(str(src[0]), str(src[1]), model_max_length=77)
    torch.manual_seed(seed)
    text = {k: v for k, v in arch["text_encoder"].items() if not k.startswith("_")}
    text.update(MID_TEXT, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_config({**arch["vae"], **MID_VAE, "sample_size": MID_RESOLUTION}),
        text_encoder=CLIPTextModel(CLIPTextConfig(**text)), tokenizer=tokenizer,
        unet=UNet2DConditionModel.from_config({**arch["unet"], **MID_UNET,
                                               "sample_size": MID_RESOLUTION // 8}),
        scheduler=PNDMScheduler.from_config(arch["scheduler"]), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(folder / ".tokenizer-src")
    return folder


def make_data(folder: Path, n: int, size: int) -> Path:
    from dermdiff_lora.tone.synthetic import make_dataset

    return make_dataset(folder, n=n, size=size, seed=0)


def make_cfg(data_dir: Path, out_dir: Path, *overrides: str):
    from dermdiff_lora.core import config

    base = [f"data.dir={data_dir}", f"output.dir={out_dir}", "output.overwrite=true",
            "data.file_column=image_name", "logging.tensorboard=false", "logging.progress=false",
            "validation.at_end=false", f"speed.cache_dir={Path(out_dir).parent / 'latent-cache'}"]
    return config.load(None, base + list(overrides))


def fresh_accelerate() -> None:
    """Forget accelerate's process-wide state, so the next ``train.setup`` may pick another precision."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@contextlib.contextmanager
def cpu_loss_scaler(init_scale: float = 2.0**16) -> Iterator[None]:
    """fp16 runs on the CPU get the loss scaler accelerate gives them on a GPU (``torch.amp.GradScaler``;
    accelerate makes none on the CPU, where fp16 computes in fp32), so the scaler's code paths run."""
    from accelerate import Accelerator

    real = Accelerator.prepare

    def prepare(self, *args, **kwargs):
        if self.mixed_precision == "fp16" and self.device.type == "cpu" and self.scaler is None:
            self.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
        out = real(self, *args, **kwargs)
        self.native_amp = self.native_amp or self.scaler is not None  # unscale before clipping, as on a GPU
        return out

    Accelerator.prepare = prepare
    try:
        yield
    finally:
        Accelerator.prepare = real


def train_step(run, batch) -> float:
    """One micro-step exactly as ``train.train`` runs it (loss, backward, clip, optimizer; schedule and EMA
    unless fp16's loss scaler skipped the step)."""
    from dermdiff_lora.training.train import advance, micro_step

    out = micro_step(run, batch)
    if run.accelerator.sync_gradients and not out.skipped:
        advance(run)
    return out.loss.item()


def static_bytes(run) -> dict[str, int]:
    """Bytes the planner counts as static, read off the live run: weights on the accelerator, optimizer
    states, EMA shadow weights."""
    from dermdiff_lora.training.memory import tensor_bytes
    from dermdiff_lora.training.optim import optimizer_state_bytes

    offloaded = run.offloaded
    weights = sum(tensor_bytes(getattr(run.parts, name)) for name in ("unet", "vae", "text_encoder")
                  if name not in offloaded)
    ema = sum(t.numel() * t.element_size() for t in run.ema.shadow_params) if run.ema is not None else 0
    return {"weights": weights, "optimizer": optimizer_state_bytes(run.optimizer), "ema": ema}
