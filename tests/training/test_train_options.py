"""Training switches: init adapter, 8-bit Adam state, bf16, checkpointing, min-SNR, logs and grids."""

import torch
from conftest import make_cfg
from PIL import Image
from safetensors.torch import load_file

from dermdiff_lora.adapters import lora
from dermdiff_lora.training import optim, train


def test_init_adapter_is_the_starting_point(trained_lora, demo_data, tmp_path):
    out = tmp_path / "cont"
    train.train(make_cfg(demo_data, out, f"model.init_adapter={trained_lora}", "optim.lr=0",
                         "optim.weight_decay=0", "train.max_steps=1", "lora.rank=2"))
    before, after = load_file(trained_lora / lora.WEIGHT_NAME), load_file(out / lora.WEIGHT_NAME)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert lora.lora_settings(out)["r"] == 4  # the adapter's own rank, not lora.rank


def test_adamw8bit_keeps_small_tensors_in_32_bit():
    from dermdiff_lora.core.config import OptimConfig

    small, big = torch.nn.Parameter(torch.randn(100)), torch.nn.Parameter(torch.randn(64, 80))
    for min_size, small_dtype in ((4096, torch.float32), (16, torch.uint8)):
        opt = optim.make_optimizer([small, big], OptimConfig(name="adamw8bit", min_8bit_size=min_size))
        (small.sum() + big.sum()).backward()
        opt.step()
        assert opt.state[big]["state1"].dtype == torch.uint8
        assert opt.state[small]["state1"].dtype == small_dtype
        assert optim.optimizer_state_bytes(opt) > 0


def test_bf16_lora_trains_fp32_adapter(tiny_base, demo_data, tmp_path):
    summary = train.train(make_cfg(demo_data, tmp_path / "bf16", "train.mixed_precision=bf16",
                                   "train.max_steps=2"))
    weights = load_file(tmp_path / "bf16" / lora.WEIGHT_NAME)
    assert summary["steps"] == 2 and all(v.dtype == torch.float32 for v in weights.values())
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_gradient_checkpointing_same_weights_and_logs_and_grids(tiny_base, demo_data, tmp_path):
    common = ("train.max_steps=2", "logging.tensorboard=true", "validation.every=1")
    train.train(make_cfg(demo_data, tmp_path / "plain", *common))
    train.train(make_cfg(demo_data, tmp_path / "ckpt", *common, "train.gradient_checkpointing=true"))
    a, b = load_file(tmp_path / "plain" / lora.WEIGHT_NAME), load_file(tmp_path / "ckpt" / lora.WEIGHT_NAME)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert list((tmp_path / "plain" / "logs").rglob("events.out.tfevents.*"))
    grid = tmp_path / "plain" / "validation" / "step-000001.png"
    with Image.open(grid) as im:
        assert im.size[0] > 3 * 32 and im.size[1] > 2 * 32 and im.convert("L").getextrema()[1] > 0


def test_min_snr_weights_match_formula():
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    t = torch.tensor([1, 100, 500, 999])
    snr = compute_snr(sched, t)
    expected = torch.minimum(snr, torch.tensor(5.0)) / snr
    assert torch.allclose(train._min_snr_weights(sched, t, 5.0), expected)
    assert train._min_snr_weights(sched, t, 5.0)[0] < 1.0 and train._min_snr_weights(sched, t, 5.0)[-1] == 1.0


def test_balanced_training_reports_its_group_mix(tiny_base, demo_data, tmp_path):
    summary = train.train(make_cfg(demo_data, tmp_path / "bal", "data.balance=tone_x_diagnosis",
                                   "train.max_steps=1"))
    mix = summary["group_mix"]
    assert len(mix) == 6 and all(abs(v - 1 / 6) < 1e-6 for v in mix.values())
