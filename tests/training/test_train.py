"""Training on tiny-random: LoRA and full modes, stock reload, EMA, resume, NaN stop."""

import json

import pytest
import torch
from conftest import make_cfg
from safetensors.torch import load_file

from dermdiff_lora.adapters import lora
from dermdiff_lora.core.errors import ConfigError, TrainingError
from dermdiff_lora.training import train


def _unet_out(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=g)
    hidden = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([500]), hidden).sample


def _stock_pipeline(base):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)


def test_lora_run_writes_adapter_config_and_summary(trained_lora, demo_data):
    summary = json.loads((trained_lora / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["images_seen"] == 8 and summary["mode"] == "lora"
    assert (trained_lora / "dermdiff_config.yaml").is_file()
    weights = load_file(trained_lora / lora.WEIGHT_NAME)
    assert weights and all(".lora_A." in k or ".lora_B." in k for k in weights)
    meta = lora.read_metadata(trained_lora)
    assert meta["rank"] == 4 and meta["alpha"] == 8 and "{skin_tone}" in meta["prompt_template"]
    assert meta["value_maps"]["skin_tone"]["2"] == "darker"


def test_stock_diffusers_reload_matches_own_and_differs_from_base(trained_lora, tiny_base):
    from diffusers import UNet2DConditionModel

    pipe = _stock_pipeline(tiny_base)
    base_out = _unet_out(pipe.unet)
    pipe.load_lora_weights(trained_lora)
    stock_out = _unet_out(pipe.unet)
    own = UNet2DConditionModel.from_pretrained(tiny_base, subfolder="unet")
    lora.load_into(own, trained_lora)
    own_out = _unet_out(own)
    assert torch.allclose(stock_out, own_out, atol=1e-5)
    assert (stock_out - base_out).abs().max() > 1e-4
    scalings = {m.scaling[k] for m in pipe.unet.modules() if hasattr(m, "scaling") for k in m.scaling}
    assert scalings == {2.0}  # alpha 8 / rank 4, not alpha = rank


TARGET_SETS = {
    "attention": ["to_q", "to_k", "to_v", "to_out.0"],
    "attention+proj": ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out"],
    "feed_forward": ["ff.net.0.proj", "ff.net.2"],
    "conv": ["conv1", "conv2", "conv_shortcut", "conv_in", "conv_out"],
    "everything": ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                   "conv1", "conv2", "conv_shortcut", "time_emb_proj", "conv_in", "conv_out"],
}


@pytest.mark.parametrize("targets", TARGET_SETS.values(), ids=TARGET_SETS.keys())
def test_every_trained_layer_present_after_stock_reload(targets, tiny_base, tmp_path):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_base, subfolder="unet")
    lora.add_lora(unet, lora.peft_config(4, 2.0, targets), "unet")
    for name, p in unet.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    expected = set(lora.touched_shapes(unet))
    own_out = _unet_out(unet)
    lora.save_adapter(tmp_path, unet)
    pipe = _stock_pipeline(tiny_base)
    pipe.load_lora_weights(tmp_path)
    assert set(lora.touched_shapes(pipe.unet)) == expected
    assert torch.allclose(_unet_out(pipe.unet), own_out, atol=1e-5)


def test_unknown_target_module_names_config_key(tiny_base, demo_data, tmp_path):
    with pytest.raises(ConfigError, match="lora.target_modules"):
        train.train(make_cfg(demo_data, tmp_path / "o", "lora.target_modules=[to_qq]"))


def test_full_output_loads_with_from_pretrained_and_holds_ema(trained_full, tiny_base):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    pipe = StableDiffusionPipeline.from_pretrained(trained_full)
    assert pipe.safety_checker is None
    base = UNet2DConditionModel.from_pretrained(tiny_base, subfolder="unet")
    assert not torch.allclose(_unet_out(pipe.unet), _unet_out(base))


def test_ema_equals_hand_computed_and_is_saved(tiny_base, demo_data, tmp_path):
    from diffusers import UNet2DConditionModel

    out = tmp_path / "full"
    train.train(make_cfg(demo_data, out, "train.mode=full", "train.ema_decay=0.9", "train.max_steps=3",
                         "train.checkpoint_every=1", "train.keep_checkpoints=5"))
    online = [load_file(out / "checkpoints" / f"step-{s:06d}" / "model.safetensors") for s in (1, 2, 3)]
    ema = {k: v.clone() for k, v in online[0].items()}  # EMAModel: decay 0 at its first step
    for step, weights in ((2, online[1]), (3, online[2])):
        decay = min(0.9, step / (9 + step))  # diffusers EMAModel: (1 + s) / (10 + s), s = step - 1
        ema = {k: decay * ema[k] + (1 - decay) * weights[k] for k in ema}
    saved = UNet2DConditionModel.from_pretrained(out, subfolder="unet").state_dict()
    worst = max((saved[k] - ema[k]).abs().max().item() for k in ema)
    assert worst < 1e-6
    assert any((saved[k] - online[2][k]).abs().max() > 1e-6 for k in ema)  # EMA, not the online weights


def test_resume_gives_same_weights_as_uninterrupted(tiny_base, demo_data, tmp_path):
    extra = ("train.max_steps=4", "train.gradient_accumulation=2", "lora.dropout=0.1")
    train.train(make_cfg(demo_data, tmp_path / "a", *extra))
    paused = train.train(make_cfg(demo_data, tmp_path / "b", *extra), stop_after=2)
    assert paused["paused_at_step"] == 2
    train.train(make_cfg(demo_data, tmp_path / "b", *extra, "train.resume=latest"))
    a = load_file(tmp_path / "a" / lora.WEIGHT_NAME)
    b = load_file(tmp_path / "b" / lora.WEIGHT_NAME)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_base, demo_data, tmp_path, monkeypatch):
    real = train.training_loss
    calls = {"n": 0}

    def flaky(run, batch):
        calls["n"] += 1
        loss = real(run, batch)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(train, "training_loss", flaky)
    out = tmp_path / "nan"
    with pytest.raises(TrainingError, match="loss became nan at step 3.*step-000002"):
        train.train(make_cfg(demo_data, out, "train.max_steps=5", "train.checkpoint_every=1"))
    assert (out / "checkpoints" / "step-000002" / "trainer_state.json").is_file()
    assert not (out / lora.WEIGHT_NAME).exists() and not (out / "summary.json").exists()


def test_finished_run_is_not_overwritten(trained_lora, demo_data):
    with pytest.raises(ConfigError, match="already holds a finished run.*output.overwrite=true"):
        train.train(make_cfg(demo_data, trained_lora))


def test_caption_dropout_rate_and_empty_prompt(tiny_base, demo_data, tmp_path):
    from dermdiff_lora.data.sampler import sample_seed

    run = train.setup(make_cfg(demo_data, tmp_path / "d", "prompts.caption_dropout=0.3"), resuming=False)
    seeds = torch.tensor([sample_seed(0, i) for i in range(2000)])
    drops = train._per_sample_randoms(seeds, (16, 16), run)["drop"]
    assert 0.25 < drops.float().mean().item() < 0.35
    assert run.parts.tokenizer.decode(run.empty_ids[0], skip_special_tokens=True) == ""


def test_lerp_ema_matches_diffusers_ema_model():
    """The fused-lerp EMA of full training gives diffusers' EMAModel's weights, decay schedule included."""
    from diffusers.training_utils import EMAModel

    from dermdiff_lora.training.modes import _lerp_ema_class

    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    ours = _lerp_ema_class(EMAModel)(net.parameters(), decay=0.9, foreach=True)
    ref = EMAModel(net.parameters(), decay=0.9, foreach=True)
    for _ in range(4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ours.step(net.parameters())
        ref.step(net.parameters())
    assert ours.cur_decay_value == ref.cur_decay_value and ours.optimization_step == 4
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours.shadow_params, ref.shadow_params))
    assert ours.state_dict()["optimization_step"] == 4
