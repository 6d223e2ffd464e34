"""rebalance's pipeline: the auto scheduler per base, one adapter fused (same images as unfused), several
unfused, and the batch size from the memory model."""

import json

import pytest
import torch
from adapter_helpers import make_adapter

from dermdiff_lora.core.errors import ConfigError
from dermdiff_lora.core.models import TINY_ASSET, load_pipeline
from dermdiff_lora.generation.schedulers import make_scheduler
from dermdiff_lora.tone.rebalance_pipeline import (
    CPU_BATCH,
    auto_batch_size,
    generate_peaks,
    load_render_pipeline,
)
from dermdiff_lora.training.memory import SD14_ARCHITECTURE


def test_auto_scheduler_follows_the_base_config():
    sd_like = json.loads(SD14_ARCHITECTURE.read_text())["scheduler"]  # SD v1-4's own: PNDM, epsilon
    auto = make_scheduler("auto", sd_like)
    assert type(auto).__name__ == "DPMSolverMultistepScheduler"
    assert (auto.config.algorithm_type, auto.config.use_karras_sigmas) == ("dpmsolver++", True)
    zero_snr = json.loads((TINY_ASSET / "scheduler" / "scheduler_config.json").read_text())
    auto = make_scheduler("auto", {**zero_snr, "timestep_spacing": "leading"})
    assert not auto.config.use_karras_sigmas and auto.config.prediction_type == "v_prediction"
    auto.set_timesteps(25)
    # zero terminal SNR: the first step starts from pure noise (t = 999), the last ends on sigma 0, and no
    # step is spent between the clamped sigma_max (4096) and the next Karras sigma (~3200)
    assert int(auto.timesteps[0]) == 999 and float(auto.sigmas[-1]) == 0 and float(auto.sigmas[1]) < 100
    assert make_scheduler("default", sd_like) is None
    with pytest.raises(ConfigError, match="scheduler 'fast'"):
        make_scheduler("fast", sd_like)
    with pytest.raises(ConfigError, match="predicts 'flow'"):
        make_scheduler("auto", {**sd_like, "prediction_type": "flow"})


def _render(pipe, seed=3):
    out = pipe(["malignant skin disease on darker skin tone"], num_inference_steps=3, height=32, width=32,
               generator=[torch.Generator().manual_seed(seed)], output_type="np")
    return torch.from_numpy(out.images)


def test_one_adapter_is_fused_with_its_scale_several_stay_unfused(tiny_base):
    adapter = make_adapter("fuse-me")
    fused, settings = load_render_pipeline("tiny-random", [(str(adapter), 0.7)], scheduler="ddim")
    assert settings["fused"] and settings["sampler"] == "DDIMScheduler"
    assert not any("lora" in name for name, _ in fused.unet.named_modules())
    unfused, info = load_render_pipeline("tiny-random", [(str(adapter), 0.7)], scheduler="ddim", fuse=False)
    assert any("lora" in name for name, _ in unfused.unet.named_modules())
    plain, _ = load_render_pipeline("tiny-random", scheduler="ddim")
    assert torch.allclose(_render(fused), _render(unfused), atol=1e-4)
    assert not torch.allclose(_render(plain), _render(unfused), atol=1e-3)  # the adapter changes the images
    two, settings = load_render_pipeline("tiny-random", [(str(adapter), 0.5), (str(make_adapter("other", seed=1)), 0.5)])
    assert not settings["fused"] and len(settings["adapters"]) == 2


def test_batch_size_from_the_memory_model(tiny_base):
    pipe = load_pipeline("tiny-random")
    first, per_image = generate_peaks(pipe, 32, 7.5)
    assert first > 0 and per_image > 0
    assert generate_peaks(pipe, 64, 7.5)[1] > 3 * per_image  # 4x the pixels
    assert auto_batch_size(pipe, 32, 7.5, free_bytes=first + 5 * per_image) == 6
    assert auto_batch_size(pipe, 32, 7.5, free_bytes=first + 5 * per_image - 1) == 5
    assert auto_batch_size(pipe, 32, 7.5, free_bytes=first // 2) == 1
    if not torch.cuda.is_available():
        assert auto_batch_size(pipe, 32, 7.5) == CPU_BATCH
