"""Every adapter method trains through the same loop, checkpoints only its adapter and resumes bit-exactly."""

import pytest
import torch
from conftest import make_cfg
from safetensors.torch import load_file

from dermdiff_lora.adapters import io, lora
from dermdiff_lora.core.errors import ConfigError
from dermdiff_lora.training import train

COMMON = ("train.max_steps=2", "train.checkpoint_every=1", "lora.text_encoder=true",
          "lora.target_modules=[attention,resnet_convs]", "lora.conv_rank=2", "lora.conv_alpha=1")
METHOD = {"lora": ("lora.dropout=0.1",), "dora": ("lora.dropout=0.1",),
          "loha": ("lora.rank_dropout=0.2", "lora.module_dropout=0.2"),
          "lokr": ("lora.rank=2", "lora.factor=4", "lora.module_dropout=0.2")}


@pytest.mark.parametrize("method", list(METHOD))
def test_each_method_trains_and_resumes_bit_exact(tiny_base, demo_data, tmp_path, method):
    args = (*COMMON, f"lora.method={method}", *METHOD[method])
    train.train(make_cfg(demo_data, tmp_path / "a", *args, "validation.at_end=true"))
    assert list((tmp_path / "a" / "validation").glob("*.png"))  # the grid renders through the adapter
    assert train.train(make_cfg(demo_data, tmp_path / "b", *args), stop_after=1)["paused_at_step"] == 1
    ckpt = tmp_path / "b" / "checkpoints" / "step-000001"
    assert {"unet_lora.safetensors", "text_encoder_lora.safetensors"} <= {f.name for f in ckpt.iterdir()}
    train.train(make_cfg(demo_data, tmp_path / "b", *args, "train.resume=latest"))
    a, b = (load_file(tmp_path / d / lora.WEIGHT_NAME) for d in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    adapter = io.load(tmp_path / "b")
    assert adapter.method == method and adapter.meta["method"] == method
    assert set(adapter.components()) == {"unet", "text_encoder"}
    conv = [n for n in adapter.layers if n.endswith("resnets.0.conv1")]
    attn = [n for n in adapter.layers if n.endswith("attn1.to_q")]
    assert conv and attn
    if method in ("lora", "dora", "loha"):  # conv_rank / conv_alpha on the 3x3 convolutions only
        assert adapter.layers[conv[0]].rank == 2 and adapter.layers[attn[0]].rank == 4
        assert adapter.layers[conv[0]].alpha == 1.0 and adapter.layers[attn[0]].alpha == 4.0


def test_old_lora_config_still_means_lora(tiny_base, demo_data, tmp_path):
    cfg = make_cfg(demo_data, tmp_path / "x")
    assert cfg.lora.method == "lora" and cfg.lora.conv_rank is None


def test_method_options_are_checked_against_the_method(demo_data, tmp_path):
    with pytest.raises(ConfigError) as err:
        make_cfg(demo_data, tmp_path / "x", "lora.method=loha", "lora.dropout=0.1", "lora.factor=4",
                 "model.init_adapter=somewhere")
    text = str(err.value)
    assert "rank_dropout" in text and "lokr options" in text and "starts a fresh adapter" in text
    with pytest.raises(ConfigError, match="not one of lora, dora, loha, lokr"):
        make_cfg(demo_data, tmp_path / "x", "lora.method=ia3")


def test_plan_counts_each_method_and_what_dora_adds(tiny_base, demo_data, tmp_path):
    from dermdiff_lora.training import memory

    plans = {m: memory.plan(make_cfg(demo_data, tmp_path / "x", f"lora.method={m}", "model.base=tiny-random",
                                     "lora.target_modules=[attention,resnet_convs]"),
                            device="cpu", suggest=False, detail=False) for m in ("lora", "dora", "loha")}
    trained = {m: p.params["trained"] for m, p in plans.items()}
    assert trained["loha"] == 2 * trained["lora"] and trained["dora"] > trained["lora"]
    assert plans["dora"].parts["optimizer"] > plans["lora"].parts["optimizer"]
    assert plans["dora"].parts["activations"] > plans["lora"].parts["activations"]
    note = next(n for n in plans["dora"].notes if n.startswith("DoRA vs LoRA"))
    assert f"+{(trained['dora'] - trained['lora']) / 1e6:.2f} M trained parameters" in note
    assert plans["loha"].summary.startswith("LoHa r4")


def test_a_dora_adapter_seeds_a_run_with_its_magnitudes(tiny_base, demo_data, tmp_path):
    from adapter_helpers import make_method_adapter

    folder, unet, te = make_method_adapter("dora", conv_rank=None)
    run, _ = train.start(make_cfg(demo_data, tmp_path / "x", f"model.init_adapter={folder}",
                                  "lora.text_encoder=true", "lora.method=dora"))
    try:
        for live, trained in ((run.parts.unet, unet), (run.parts.text_encoder, te)):
            live = run.accelerator.unwrap_model(live)
            got = {n: p for n, p in live.named_parameters() if "magnitude" in n}
            want = {n: p for n, p in trained.named_parameters() if "magnitude" in n}
            assert got.keys() == want.keys() and got
            assert all(torch.equal(got[k].cpu(), want[k]) for k in got)
    finally:
        run.accelerator.end_training()
