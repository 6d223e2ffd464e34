"""``plan``: exact static arithmetic on known configs, a simulated step that matches a measured one, the
fit verdict and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_cfg

from dermdiff_lora.cli import app as cli
from dermdiff_lora.core import config, models
from dermdiff_lora.core.errors import ConfigError
from dermdiff_lora.training import memory

TINY_UNET = 792_964  # parameters of the tiny-random UNet (32/64 channels, one cross-attention per level)
# LoRA r4 on to_q/to_k/to_v/to_out.0, r·(in + out) per layer: down block (32 ch) 8·4·64 = 2048; mid block
# (64 ch, 32-d text) self 4·4·128 + cross 4·128 + 2·4·96 + 4·128 = 3840; up block 2 × 2048 → 9984.
TINY_LORA = 9_984
LORA_TENSORS = 64  # 32 adapted layers × (lora_A, lora_B)


def test_tiny_static_arithmetic(tiny_base, demo_data, tmp_path):
    full = make_cfg(demo_data, tmp_path, "train.mode=full")
    arch, _ = memory.load_architecture(full.model)
    mm = memory.build_meta(arch, full, torch.float32)
    assert memory._param_counts(mm)["unet"] == TINY_UNET
    n_tensors = len(mm.trainable)
    assert memory.static_parts(full, mm) == {"weights": 4 * TINY_UNET, "gradients": 4 * TINY_UNET,
                                             "optimizer": 8 * TINY_UNET + 4 * n_tensors,
                                             "ema": 4 * TINY_UNET}
    lora = make_cfg(demo_data, tmp_path, "train.mixed_precision=bf16")
    mm = memory.build_meta(arch, lora, torch.bfloat16)
    assert memory._param_counts(mm)["trained"] == TINY_LORA and len(mm.trainable) == LORA_TENSORS
    assert memory.static_parts(lora, mm) == {"weights": 2 * TINY_UNET + 4 * TINY_LORA,
                                             "gradients": 4 * TINY_LORA,
                                             "optimizer": 8 * TINY_LORA + 4 * LORA_TENSORS, "ema": 0}
    uncached = make_cfg(demo_data, tmp_path, "train.mixed_precision=bf16", "speed.cache_latents=off")
    vae_te = 2 * (658_375 + 39_040) + 77 * 8  # VAE + text encoder in bf16, + CLIP's int64 position ids
    assert memory.static_parts(uncached, mm)["weights"] == 2 * TINY_UNET + 4 * TINY_LORA + vae_te


def test_optimizer_bytes_match_the_real_optimizers(tiny_base, demo_data, tmp_path):
    from dermdiff_lora.training.optim import make_optimizer, optimizer_state_bytes

    params = list(models.load_parts(str(tiny_base)).unet.parameters())
    for name in ("adamw", "adamw8bit"):
        cfg = make_cfg(demo_data, tmp_path, f"optim.name={name}", "optim.min_8bit_size=1024")
        opt = make_optimizer(params, cfg.optim)
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        assert memory.optimizer_bytes(params, cfg.optim) == optimizer_state_bytes(opt), name


def test_sd14_reference_figures(demo_data, tmp_path):
    arch = json.loads(memory.SD14_ARCHITECTURE.read_text())
    cfg = make_cfg(demo_data, tmp_path, "train.mode=full", "train.mixed_precision=fp16")
    mm = memory.build_meta(arch, cfg, torch.float16)
    counts = memory._param_counts(mm)
    assert counts["unet"] == 859_520_964 and counts["text_encoder"] == 123_060_480
    s = memory.static_parts(cfg, mm)
    gb = memory.GB
    assert s["weights"] / gb == pytest.approx(3.44, abs=0.005) and s["ema"] == s["weights"]
    assert (s["weights"] + s["gradients"] + s["optimizer"]) / gb == pytest.approx(13.75, abs=0.01)
    eight = make_cfg(demo_data, tmp_path, "train.mode=full", "optim.name=adamw8bit")
    s8 = memory.static_parts(eight, mm)
    assert (s8["weights"] + s8["gradients"] + s8["optimizer"]) / gb == pytest.approx(8.6, abs=0.05)


def test_plan_matches_a_measured_cpu_step(tiny_base, demo_data, tmp_path):
    from dermdiff_lora.training import train
    from dermdiff_lora.training.memsim import profiled_peak
    from dermdiff_lora.training.optim import optimizer_state_bytes

    cfg = make_cfg(demo_data, tmp_path / "run", "train.mode=full", "train.batch_size=4",
                   f"speed.cache_dir={tmp_path / 'lc'}")
    planned = memory.plan(cfg, device="cpu", suggest=False, detail=False)
    run = train.setup(cfg, resuming=False)
    batches = iter(train.make_loader(run, 0, 2))

    def step():
        loss = train.training_loss(run, next(batches))
        run.accelerator.backward(loss)
        run.accelerator.clip_grad_norm_(run.params, 1.0)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)

    step()  # optimizer states exist from here on
    static = (memory.tensor_bytes(run.parts.unet) + optimizer_state_bytes(run.optimizer)
              + memory.tensor_bytes(run.ema.shadow_params))  # the VAE and text encoder are offloaded
    measured = static + profiled_peak(step)
    run.accelerator.end_training()
    assert planned.peak == pytest.approx(measured, rel=0.03)


def test_suggestions_make_it_fit(tiny_base, demo_data, tmp_path):
    cfg = make_cfg(demo_data, tmp_path, "train.mode=full", "train.batch_size=4", "validation.at_end=false")
    planner = memory.Planner(cfg, "cpu")
    first = memory.plan(cfg, device="cpu", planner=planner)
    assert first.fits and first.largest_batch >= 4
    assert 0 < first.per_image["checkpointing"] < first.per_image["no checkpointing"]
    tight = memory.plan(cfg, first.needs - 1, device="cpu", planner=planner)
    assert not tight.fits and tight.suggestions
    switch = tight.suggestions[0].split()[0]
    assert memory.plan(memory.with_overrides(cfg, [switch]), first.needs - 1, device="cpu",
                       planner=planner, suggest=False).fits


def test_plan_cli(tiny_base, capsys):
    assert cli.main(["plan", "demo", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] and out["peak"] == sum(out["parts"].values())
    assert cli.main(["plan", "demo", "--gpu-memory", "0.5GB"]) == 3
    text = capsys.readouterr().out
    assert "does NOT fit" in text and "nothing in this config fits" in text
    assert cli.main(["plan", "demo", "--gpu-memory", "lots"]) == 1
    assert "--gpu-memory 'lots'" in capsys.readouterr().err


def test_parse_size():
    assert memory.parse_size("24GB") == 24 * 10**9
    assert memory.parse_size("24") == 24 * 10**9
    assert memory.parse_size("22.5GiB") == int(22.5 * 2**30)
    assert memory.parse_size("512 MB") == 512 * 10**6
    with pytest.raises(ConfigError, match="--gpu-memory"):
        memory.parse_size("24XB")


def test_architecture_of_an_unknown_hub_id_is_sd14():
    cfg = config.load(None, ["model.base=someone/some-model"])
    arch, source = memory.load_architecture(cfg.model)
    assert arch["unet"]["block_out_channels"] == [320, 640, 1280, 1280] and "packaged" in source


def test_plan_counts_what_each_ddp_process_holds(tiny_base, demo_data, tmp_path, monkeypatch, capsys):
    from dermdiff_lora.training import ddp

    cfg = make_cfg(demo_data, tmp_path, "train.mode=full", "validation.at_end=true")
    planner = memory.Planner(cfg)
    grads = [p.numel() * p.element_size() for p in planner.models(cfg).trainable]
    one = memory.plan(cfg, planner=planner)
    two = memory.plan(cfg, planner=planner, processes=2)
    assert one.parts["ddp"] == 0 and two.parts["ddp"] == max(grads)  # bucket views: one copy, plus the
    assert two.peak - one.peak == max(grads)                          # largest gradient before bucketing
    assert two.validation - one.validation == sum(grads)  # the buckets stay allocated between steps
    assert "each of the 2 GPUs" in two.notes[-1] and "what each of 2 GPUs holds" in two.summary
    monkeypatch.setattr(ddp, "GRADIENT_AS_BUCKET_VIEW", False)  # accelerate's default: a 2nd gradient copy
    copies = memory.plan(cfg, planner=planner, processes=2)
    assert copies.parts["ddp"] == sum(grads) == copies.parts["gradients"]
    assert ddp.ddp_handlers()[0].gradient_as_bucket_view is False
    monkeypatch.undo()
    assert ddp.ddp_handlers()[0].gradient_as_bucket_view is True  # what train.setup passes (test_distributed)

    accelerate_yaml = str(config.PACKAGED_CONFIGS / "accelerate" / "multi_gpu.yaml")
    assert cli.main(["plan", "demo", "--accelerate-config", accelerate_yaml, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "what each of 4 GPUs holds" in out["summary"] and out["parts"]["ddp"] > 0  # its num_processes
    assert cli.main(["plan", "demo", "--accelerate-config", accelerate_yaml, "--processes", "2"]) == 0
    text = capsys.readouterr().out
    assert "DDP beyond the gradients" in text and "each of the 2 GPUs holds all of the above" in text
