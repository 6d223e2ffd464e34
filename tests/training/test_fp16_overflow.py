"""fp16 overflow with a real loss scaler (torch's CPU GradScaler in place of accelerate's GPU one): a skipped
step changes nothing and is counted; K in a row stop the run. Without a scaler, non-finite gradients stop it
before the optimizer step, naming the last good checkpoint."""

import json

import pytest
import torch
from accelerate import Accelerator
from conftest import make_cfg
from safetensors.torch import load_file

from dermdiff_lora.core import config
from dermdiff_lora.core.errors import ConfigError, TrainingError
from dermdiff_lora.data.sampler import sample_seed
from dermdiff_lora.training import train

INIT_SCALE = 2.0**8
# lr 1e-3, linear schedule, 2 warm-up steps of 4: the LR after each applied step
LRS = [5e-4, 1e-3, 5e-4, 0.0]
FP16 = ("train.mixed_precision=fp16", "train.mode=full", "train.ema_decay=0.9", "train.max_steps=4",
        "optim.scheduler=linear", "optim.warmup_steps=2", "train.checkpoint_every=1", "train.max_skipped_steps=3")


@pytest.fixture
def cpu_scaler(monkeypatch) -> list:
    """Give fp16 runs on the CPU the loss scaler accelerate gives them on a GPU (accelerate makes none there)."""
    real, scalers = Accelerator.prepare, []

    def prepare(self, *args, **kwargs):
        if self.mixed_precision == "fp16":
            self.scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)
            scalers.append(self.scaler)
        out = real(self, *args, **kwargs)
        self.native_amp = self.scaler is not None  # unscale before clipping, as on a GPU (forward stays fp32)
        return out

    monkeypatch.setattr(Accelerator, "prepare", prepare)
    return scalers


def _inject_inf_gradients(monkeypatch, bad_calls: set[int], inf_loss_calls: frozenset[int] = frozenset()) -> list:
    """Inf gradients at the given micro-steps (1-based): with a finite loss, or from an inf loss at
    ``inf_loss_calls``; returns the sample seeds drawn."""
    real, calls, seeds = train.training_loss, [0], []

    def loss_with_inf_grads(run, batch):
        calls[0] += 1
        seeds.extend(batch["seed"].tolist())
        loss = real(run, batch)
        if calls[0] in inf_loss_calls:
            return loss * float("inf")
        if calls[0] in bad_calls:
            loss.register_hook(lambda g: torch.full_like(g, float("inf")))
        return loss

    monkeypatch.setattr(train, "training_loss", loss_with_inf_grads)
    return seeds


def _record_steps(monkeypatch) -> list:
    real, seen = train.after_step, []

    def record(run, state, bar):
        seen.append((state.step, run.lr_scheduler.get_last_lr()[0], run.ema.optimization_step))
        real(run, state, bar)

    monkeypatch.setattr(train, "after_step", record)
    return seen


def test_overflowed_steps_are_skipped_and_counted(cpu_scaler, tiny_base, demo_data, tmp_path, monkeypatch):
    seeds = _inject_inf_gradients(monkeypatch, {2, 3, 6}, inf_loss_calls={5})  # 4 overflows, never 3 in a row
    steps = _record_steps(monkeypatch)
    summary = train.train(make_cfg(demo_data, tmp_path / "fp16", *FP16))
    assert summary["steps"] == 4 and summary["skipped_steps"] == 4 and summary["images_seen"] == 16
    # Applied steps at micro-steps 1, 4, 7, 8: the LR schedule and the EMA advanced only with them.
    assert steps == [(s + 1, pytest.approx(lr), s + 1) for s, lr in enumerate(LRS)]
    assert cpu_scaler[0].get_scale() == INIT_SCALE / 2**4  # the scaler saw each overflow
    assert seeds == [sample_seed(0, p) for p in range(16)]  # every micro-batch once, in order
    saved = json.loads((tmp_path / "fp16" / "checkpoints" / "step-000004" / "trainer_state.json").read_text())
    assert (saved["step"], saved["micro_step"], saved["skipped_steps"]) == (4, 8, 4)


def test_overflows_in_a_row_stop_the_run(cpu_scaler, tiny_base, demo_data, tmp_path, monkeypatch):
    _inject_inf_gradients(monkeypatch, {2, 3, 4})
    with pytest.raises(TrainingError, match=r"3 optimizer steps in a row overflowed in fp16 \(train.max_skipped_"
                                            r"steps=3\) at step 2; stopped. Last good checkpoint: .*step-000001"):
        train.train(make_cfg(demo_data, tmp_path / "fp16", *FP16))


def test_inf_gradients_without_a_scaler_stop_before_the_step(tiny_base, demo_data, tmp_path, monkeypatch):
    _inject_inf_gradients(monkeypatch, {2})
    out = tmp_path / "fp32"
    with pytest.raises(TrainingError, match="gradient norm became (inf|nan) at step 2; stopped. Last good checkpoint: "
                                            ".*step-000001"):
        train.train(make_cfg(demo_data, out, "train.mode=full", "train.checkpoint_every=1"))
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000001"]
    assert all(torch.isfinite(t).all() for t in load_file(out / "checkpoints" / "step-000001" /
                                                          "model.safetensors").values())


def test_max_skipped_steps_is_validated():
    with pytest.raises(ConfigError, match=r"train.max_skipped_steps: 0 is out of range"):
        config.load(None, ["train.max_skipped_steps=0"])
    assert config.load(None, []).train.max_skipped_steps == 20
