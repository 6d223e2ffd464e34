"""combine, resize, extract and inspect on the tiny model: exact sums, Eckart–Young errors, full-rank extraction."""

from __future__ import annotations

import pytest
import torch
from adapter_helpers import make_adapter, pipeline, unet_out
from safetensors.torch import load_file

from dermdiff_lora.adapters import io
from dermdiff_lora.adapters.combine import combine
from dermdiff_lora.adapters.convert import convert
from dermdiff_lora.adapters.extract import extract
from dermdiff_lora.adapters.inspect import format_table, inspect_adapter
from dermdiff_lora.adapters.resize import resize
from dermdiff_lora.core.errors import AdapterError
from dermdiff_lora.core.models import load_pipeline


def _dense_error(delta: torch.Tensor, k: int) -> float:
    s = torch.linalg.svdvals(delta.reshape(delta.shape[0], -1).double())
    return float((s[k:] ** 2).sum().sqrt() / (s ** 2).sum().sqrt())


def test_combine_exact_equals_applying_both_adapters(trained_lora, tmp_path):
    broad = make_adapter("broad")
    sources = [(trained_lora, 0.7), (broad, -1.3)]
    result = combine(sources, tmp_path / "sum")
    combined = io.load(tmp_path / "sum")
    assert set(combined.layers) == set(io.load(trained_lora).layers) | set(io.load(broad).layers)
    shared = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    assert combined.layers[shared].rank == 8 and result["exact"] and result["rel_error"] == 0.0
    assert combined.meta["combined_from"][1]["weight"] == -1.3
    both, one = unet_out(pipeline(*sources).unet), unet_out(pipeline((tmp_path / "sum", 1.0)).unet)
    assert torch.allclose(both, one, atol=2e-5)
    assert not torch.allclose(both, unet_out(pipeline((broad, -1.3)).unet), atol=1e-3)
    convert(tmp_path / "sum", tmp_path / "k.safetensors", to="kohya")  # ranks 4 and 8: rank_pattern / .alpha
    for folder, weight_name in ((tmp_path / "sum", None), (tmp_path, "k.safetensors")):
        stock = load_pipeline("tiny-random")
        stock.load_lora_weights(str(folder), weight_name=weight_name)
        assert torch.allclose(unet_out(stock.unet), both, atol=2e-5)


def test_combine_to_a_rank_reports_the_best_possible_error(trained_lora, tmp_path):
    sources = [(trained_lora, 1.0), (make_adapter("broad"), 0.5)]
    exact = io.load(combine(sources, tmp_path / "sum")["output"])
    result = combine(sources, tmp_path / "r3", rank=3)
    small = io.load(tmp_path / "r3")
    assert {layer.rank for layer in small.layers.values()} == {3}
    for row in result["layers"]:
        expected = _dense_error(exact.layers[row["layer"]].delta(), 3)
        assert row["rel_error"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
        got = small.layers[row["layer"]].delta()
        want = exact.layers[row["layer"]].delta()
        assert float((got - want).norm() / want.norm()) == pytest.approx(row["rel_error"], rel=1e-3, abs=1e-5)
    assert 0.0 < result["rel_error"] < 1.0


def test_resize_to_the_same_rank_is_lossless_and_lower_ranks_are_optimal(tiny_base, tmp_path):
    src = make_adapter("broad")
    original = io.load(src)
    same = resize(src, tmp_path / "same", rank=4)
    assert same["energy"] == 1.0 and all(row["kept"] for row in same["layers"])
    copied = load_file(str(io.weights_file(tmp_path / "same")))
    assert all(torch.equal(v, load_file(str(io.weights_file(src)))[k]) for k, v in copied.items())
    full = resize(src, tmp_path / "full", energy=1.0)
    assert full["energy"] == pytest.approx(1.0, abs=1e-9)
    for name, layer in io.load(tmp_path / "full").layers.items():
        assert torch.allclose(layer.delta(), original.layers[name].delta(), atol=1e-6)
    two = resize(src, tmp_path / "two", rank=2)
    for row in two["layers"]:
        assert row["rel_error"] == pytest.approx(_dense_error(original.layers[row["layer"]].delta(), 2), rel=1e-4)
        assert row["energy"] == pytest.approx(1 - row["rel_error"] ** 2)
    kept = resize(src, tmp_path / "e", energy=0.9)
    assert all(row["energy"] >= 0.9 for row in kept["layers"]) and kept["energy"] >= 0.9
    assert set(io.load(tmp_path / "e").layers) == set(original.layers)  # conv/ff layers all still there


def test_resize_refuses_a_rank_the_layer_cannot_hold(tiny_base, tmp_path):
    with pytest.raises(AdapterError, match=r"rank 40 is larger than layer unet\..* allows \(at most 32"):
        resize(make_adapter("broad"), tmp_path / "big", rank=40)
    assert not (tmp_path / "big").exists()


def test_extract_at_full_rank_reproduces_the_targeted_layers(trained_full, tiny_base, tmp_path):
    result = extract(trained_full, "tiny-random", tmp_path / "ex", energy=1.0)
    adapter = io.load(tmp_path / "ex")
    base = load_file(str(tiny_base / "unet" / "diffusion_pytorch_model.safetensors"))
    tuned = load_file(str(trained_full / "unet" / "diffusion_pytorch_model.safetensors"))
    assert adapter.meta["prompt_template"] and adapter.meta["base_model"] == "tiny-random"
    kinds = {name.rsplit(".", 1)[-1] for name in adapter.layers}
    assert {"to_q", "conv1", "conv_shortcut", "proj_in", "time_emb_proj", "proj", "2"} <= kinds
    for name, layer in adapter.layers.items():
        key = name.removeprefix("unet.") + ".weight"
        rebuilt = base[key].double() + layer.delta()
        assert torch.allclose(rebuilt.float(), tuned[key], atol=1e-5, rtol=0), name
    not_carried = {row["param"]: row for row in result["not_carried"]}
    assert "conv_norm_out.weight" in not_carried and "conv_in.weight" in not_carried
    assert not_carried["conv_norm_out.weight"]["module_type"] == "GroupNorm"
    assert all(row["residual_norm"] > 0 for row in not_carried.values())
    assert result["rel_error"] < 1e-5 < result["total_rel_error"]


def test_extract_at_low_rank_reports_per_layer_errors_and_refuses_too_high_ranks(trained_full, tmp_path):
    result = extract(trained_full, "tiny-random", tmp_path / "r2", rank=2, targets=["to_q", "conv_in"])
    assert {row["rank"] for row in result["layers"]} == {2}
    assert {r["layer"].rsplit(".", 1)[-1] for r in result["layers"]} == {"to_q", "conv_in"}
    assert all(0.0 < row["rel_error"] < 1.0 for row in result["layers"])
    with pytest.raises(AdapterError, match=r"rank 33 is larger than layer .* allows \(at most 32"):
        extract(trained_full, "tiny-random", tmp_path / "big", rank=33)
    with pytest.raises(AdapterError, match="match no Linear/Conv2d"):
        extract(trained_full, "tiny-random", tmp_path / "none", rank=2, targets=["nonexistent"])


def test_extract_refuses_a_base_of_another_architecture(trained_full, tmp_path):
    from diffusers import UNet2DConditionModel

    other = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
                                 attention_head_dim=8, norm_num_groups=32)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(AdapterError, match=r"other/unet|different architectures .*attn2\.to_\w\.weight is "
                                           r"\(32, 64\) vs \(32, 32\)"):
        extract(tmp_path / "other", "tiny-random", tmp_path / "x", rank=2)


def test_inspect_reports_what_the_adapter_is(trained_lora):
    info = inspect_adapter(trained_lora)
    unet = info["components"]["unet"]
    assert (unet["rank"], unet["alpha"], unet["layers"]) == (4, 8.0, 32)
    assert unet["target_modules"] == ["to_q", "to_k", "to_v", "to_out.0"]
    assert info["parameters"] == sum(t.numel() for t in load_file(info["file"]).values())
    assert info["dtype"] == "float32" and info["base_model"] == "tiny-random"
    assert info["training"]["steps"] == 4 and len(info["training"]["config_digest"]) == 12
    table = format_table(info)
    assert "unet.rank" in table and "{benign_malignant} skin disease" in table
