"""Resume: the EMA on the UNet's device and dtype, and bit-exact continuation of full + EMA + 8-bit Adam and of
a LoRA run killed in the middle of a gradient accumulation (caption dropout, balanced sampling, LoRA dropout)."""

import json
import logging

import accelerate.checkpointing
import pytest
import torch
from conftest import make_cfg
from safetensors.torch import load_file

from dermdiff_lora.adapters import lora
from dermdiff_lora.training import train

FULL = ("train.mode=full", "train.ema_decay=0.9", "optim.name=adamw8bit", "optim.min_8bit_size=16",
        "train.max_steps=3")
LORA = ("train.max_steps=4", "train.gradient_accumulation=2", "train.checkpoint_every=1", "lora.dropout=0.1",
        "lora.text_encoder=true", "prompts.caption_dropout=0.5", "data.balance=tone_x_diagnosis",
        "optim.name=adamw8bit", "optim.min_8bit_size=16")


class Killed(Exception):
    """Stands in for a kill of the training process."""


def _assert_8bit_optimizer_state(folder):
    """The checkpoint's optimizer holds 8-bit Adam moments (bitsandbytes nests them since 0.48)."""
    state = torch.load(folder / "optimizer.bin", weights_only=True)["state"]
    moments = [s.get("__bnb_optimizer_quant_state__", s)["state1"] for s in state.values()]
    assert moments and any(m.dtype == torch.uint8 for m in moments)


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resumed_ema_takes_the_unet_device_and_dtype(tiny_base, demo_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train.train(make_cfg(demo_data, out, "train.mode=full", "train.max_steps=2"), stop_after=1)
    real, loaded = accelerate.checkpointing.load, []

    def load_as_float64(path, *args, **kwargs):  # a custom state whose tensors are not the UNet's dtype
        state = real(path, *args, **kwargs)
        if "custom_checkpoint" in str(path) and "shadow_params" in state:
            state["shadow_params"] = [t.double() for t in state["shadow_params"]]
            loaded.append(path)
        return state

    monkeypatch.setattr(accelerate.checkpointing, "load", load_as_float64)
    run, state = train.start(make_cfg(demo_data, out, "train.mode=full", "train.max_steps=2",
                                      "train.resume=latest"))
    weight = next(run.accelerator.unwrap_model(run.parts.unet).parameters())
    assert loaded and state.step == 1 and run.resumed_from == 1 and run.ema.optimization_step == 1
    assert all(t.device == weight.device and t.dtype == weight.dtype for t in run.ema.shadow_params)
    train.fit(run, state, 2)  # the next EMA update runs
    assert run.ema.optimization_step == 2
    run.accelerator.end_training()


def _assert_resumed_from(folder, step, caplog):
    """summary.json and the log say where the run resumed (a run that ignored the checkpoint and started
    over would end with the same weights on the CPU: only this tells them apart)."""
    assert json.loads((folder / "summary.json").read_text())["resumed_from"] == step
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resumed_from=")]
    assert said and said[-1].startswith(f"resumed_from={'null' if step is None else step}:"), said


def test_full_ema_adamw8bit_resume_is_bit_exact(tiny_base, demo_data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dermdiff_lora.training.train")
    train.train(make_cfg(demo_data, tmp_path / "a", *FULL))
    _assert_resumed_from(tmp_path / "a", None, caplog)
    paused = train.train(make_cfg(demo_data, tmp_path / "b", *FULL), stop_after=2)
    assert paused["paused_at_step"] == 2 and paused["resumed_from"] is None
    _assert_8bit_optimizer_state(tmp_path / "b" / "checkpoints" / "step-000002")
    train.train(make_cfg(demo_data, tmp_path / "b", *FULL, "train.resume=latest"))
    _assert_resumed_from(tmp_path / "b", 2, caplog)
    weights = "unet/diffusion_pytorch_model.safetensors"  # the EMA weights
    _assert_same(load_file(tmp_path / "a" / weights), load_file(tmp_path / "b" / weights))


def test_lora_killed_mid_accumulation_resumes_bit_exact(tiny_base, demo_data, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="dermdiff_lora.training.train")
    summary = train.train(make_cfg(demo_data, tmp_path / "a", *LORA))
    assert summary["group_mix"] is not None
    real, calls = train.training_loss, [0]

    def killed_at_micro_step_6(run, batch):  # step 3's second micro-batch: one gradient accumulated
        calls[0] += 1
        if calls[0] == 6:
            raise Killed
        return real(run, batch)

    monkeypatch.setattr(train, "training_loss", killed_at_micro_step_6)
    with pytest.raises(Killed):
        train.train(make_cfg(demo_data, tmp_path / "b", *LORA))
    monkeypatch.setattr(train, "training_loss", real)
    _assert_8bit_optimizer_state(tmp_path / "b" / "checkpoints" / "step-000002")
    train.train(make_cfg(demo_data, tmp_path / "b", *LORA, "train.resume=latest"))
    _assert_resumed_from(tmp_path / "b", 2, caplog)  # the last checkpoint before the kill
    adapter = load_file(tmp_path / "b" / lora.WEIGHT_NAME)
    _assert_same(load_file(tmp_path / "a" / lora.WEIGHT_NAME), adapter)
    assert any(k.startswith("text_encoder.") for k in adapter) and any(k.startswith("unet.") for k in adapter)
    checkpoints = sorted((tmp_path / "b" / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-000003", "step-000004"]  # train.keep_checkpoints=2
    files = {f.name for f in checkpoints[-1].iterdir()}  # LoRA checkpoints hold the adapters, not the base
    assert {"unet_lora.safetensors", "text_encoder_lora.safetensors"} <= files and "model.safetensors" not in files
