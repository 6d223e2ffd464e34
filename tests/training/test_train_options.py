"""Training switches: init adapter, 8-bit Adam state, bf16, checkpointing, min-SNR, logs and grids."""

from collections import Counter

import pytest
import torch
from conftest import count_forwards, make_cfg
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


def _on_first_loss(monkeypatch, inspect) -> list:
    """Call ``inspect(run)`` before each run's first training loss; returns [its result per run]."""
    real, runs, seen = train.training_loss, [], []

    def spy(run, batch):
        if not runs or runs[-1] is not run:
            runs.append(run)
            seen.append(inspect(run))
        return real(run, batch)

    monkeypatch.setattr(train, "training_loss", spy)
    return seen


def _output_dtypes(module) -> list:
    dtypes: list = []
    module.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    return dtypes


def test_bf16_lora_computes_in_bf16_and_keeps_fp32_adapter(tiny_base, demo_data, tmp_path, monkeypatch):
    seen = _on_first_loss(monkeypatch, lambda run: (_output_dtypes(run.parts.unet.up_blocks[-1].attentions[0]
                                                                   .transformer_blocks[0].attn1.to_q),
                                                    run.parts.text_encoder.dtype))
    bf16 = train.train(make_cfg(demo_data, tmp_path / "bf16", "train.mixed_precision=bf16", "train.max_steps=1"))
    fp32 = train.train(make_cfg(demo_data, tmp_path / "fp32", "train.max_steps=1"))
    (bf16_outputs, bf16_frozen), (fp32_outputs, fp32_frozen) = seen
    assert set(bf16_outputs) == {torch.bfloat16} and set(fp32_outputs) == {torch.float32}  # LoRA layer under autocast
    assert (bf16_frozen, fp32_frozen) == (torch.bfloat16, torch.float32)
    # Same batch, same initial weights: the first loss differs only by bf16 rounding.
    assert 0 < abs(bf16["final_loss"] - fp32["final_loss"]) < 1e-2 * fp32["final_loss"]
    weights = load_file(tmp_path / "bf16" / lora.WEIGHT_NAME)
    assert all(v.dtype == torch.float32 for v in weights.values())  # fp32 master weights of the adapter
    assert any(v.abs().max() > 0 for k, v in weights.items() if "lora_B" in k)  # and they trained


def test_gradient_checkpointing_recomputes_same_weights_and_logs_and_grids(tiny_base, demo_data, tmp_path,
                                                                           monkeypatch):
    common = ("train.max_steps=2", "logging.tensorboard=true", "validation.every=1")
    forwards = _on_first_loss(monkeypatch, lambda run: count_forwards(run.parts.unet.up_blocks[-1].resnets[-1].norm1))
    train.train(make_cfg(demo_data, tmp_path / "plain", *common))
    train.train(make_cfg(demo_data, tmp_path / "ckpt", *common, "train.gradient_checkpointing=true"))
    assert [calls[0] for calls in forwards] == [2, 4]  # 2 steps; checkpointing recomputes in each backward
    a, b = load_file(tmp_path / "plain" / lora.WEIGHT_NAME), load_file(tmp_path / "ckpt" / lora.WEIGHT_NAME)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6  # and changes no result
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


def test_balanced_training_draws_the_reported_mix(tiny_base, demo_data, tmp_path, monkeypatch):
    """demo_data: 6 benign and 2 malignant images per tone; balanced, each tone x diagnosis group is 1/6."""
    cfg = make_cfg(demo_data, tmp_path / "bal", "data.balance=tone_x_diagnosis", "train.max_steps=3")
    run = train.setup(cfg, resuming=False)
    group = {i: (r.row["skin_tone"], r.row["benign_malignant"]) for i, r in enumerate(run.index.records)}
    drawn = Counter(group[i] for batch in train.make_loader(run, 0, 600).batch_sampler for i, _ in batch)
    assert len(drawn) == 6 and all(abs(n / 1200 - 1 / 6) < 0.03 for n in drawn.values()), drawn
    run.accelerator.end_training()
    first = list(train.make_loader(run, 0, 3).batch_sampler)
    indices = []
    real = train.training_loss
    monkeypatch.setattr(train, "training_loss", lambda r, b: indices.append(b["index"].tolist()) or real(r, b))
    summary = train.train(cfg)
    assert indices == [[i for i, _ in batch] for batch in first]  # the loop trains on those draws
    assert summary["group_mix"] == {f"{t}/{d}": pytest.approx(1 / 6) for t, d in set(group.values())}
