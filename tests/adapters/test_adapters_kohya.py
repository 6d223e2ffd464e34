"""convert: diffusers ↔ kohya keys, bit-exact both ways, and the kohya file works in stock diffusers."""

from __future__ import annotations

import pytest
import torch
from adapter_helpers import make_adapter, text_out, unet_out
from safetensors.torch import load_file

from dermdiff_lora.adapters import io, kohya, lora
from dermdiff_lora.adapters.convert import convert
from dermdiff_lora.core.models import load_pipeline


def _lora_modules(model) -> set[str]:
    return {name for name, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")}


@pytest.mark.parametrize("name", [
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
    "down_blocks.1.resnets.0.conv_shortcut", "mid_block.resnets.1.time_emb_proj",
    "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj", "up_blocks.0.upsamplers.0.conv",
    "time_embedding.linear_1", "conv_in", "text_model.encoder.layers.11.self_attn.q_proj",
    "text_model.encoder.layers.0.mlp.fc2"])
def test_module_names_survive_underscores(name):
    assert kohya.module_name(name.replace(".", "_")) == name


def test_round_trip_is_bit_exact_both_ways(tiny_base, tmp_path):
    src = make_adapter("broad-te", text_encoder=True)
    original = load_file(str(io.weights_file(src)))
    convert(src, tmp_path / "k.safetensors", to="kohya")
    as_kohya = load_file(str(tmp_path / "k.safetensors"))
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in as_kohya)
    assert len(as_kohya) == len(original) // 2 * 3  # down, up, alpha per layer
    convert(tmp_path / "k.safetensors", tmp_path / "back", to="diffusers")
    back = load_file(str(tmp_path / "back" / lora.WEIGHT_NAME))
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) and back[k].dtype == original[k].dtype for k in original)
    assert lora.read_header(tmp_path / "back") == lora.read_header(src)
    convert(tmp_path / "back", tmp_path / "k2.safetensors", to="kohya")
    again = load_file(str(tmp_path / "k2.safetensors"))
    assert again.keys() == as_kohya.keys() and all(torch.equal(again[k], as_kohya[k]) for k in as_kohya)


def test_kohya_file_loads_in_stock_diffusers_with_every_layer(tiny_base, tmp_path):
    src = make_adapter("broad-te", text_encoder=True)
    adapter = io.load(src)
    convert(src, tmp_path / "k.safetensors", to="kohya")
    outputs = []
    for folder, weight_name in ((src, lora.WEIGHT_NAME), (tmp_path, "k.safetensors")):
        pipe = load_pipeline("tiny-random")
        pipe.load_lora_weights(str(folder), weight_name=weight_name, adapter_name="x")
        assert {f"unet.{n}" for n in _lora_modules(pipe.unet)} | {
            f"text_encoder.{n}" for n in _lora_modules(pipe.text_encoder)} == set(adapter.layers)
        outputs.append((unet_out(pipe.unet), text_out(pipe.text_encoder)))
    (u_ref, t_ref), (u_k, t_k) = outputs
    assert torch.allclose(u_k, u_ref, atol=1e-5) and torch.allclose(t_k, t_ref, atol=1e-5)
    assert not torch.allclose(u_ref, unet_out(load_pipeline("tiny-random").unet), atol=1e-3)


def test_kohya_file_is_described_by_inspect_and_used_by_our_loader(tiny_base, tmp_path):
    from dermdiff_lora.adapters.inspect import inspect_adapter

    src = make_adapter("broad")
    convert(src, tmp_path / "k.safetensors", to="kohya")
    info = inspect_adapter(tmp_path / "k.safetensors")
    assert info["format"] == "kohya" and info["components"]["unet"]["rank"] == 4
    assert info["components"]["unet"]["alpha"] == 8.0 and info["base_model"] == "tiny-random"
    assert "ff.net.0.proj" in info["components"]["unet"]["layer_kinds"]


def test_varying_attention_alphas_are_kept_and_flagged(tiny_base, tmp_path):
    adapter = io.load(make_adapter("broad"))
    for i, (_, layer) in enumerate(sorted(adapter.layers.items())):
        layer.alpha = float(1 + i % 3)
    adapter.configs = {}
    io.save(adapter, tmp_path / "var")
    result = convert(tmp_path / "var", tmp_path / "k.safetensors", to="kohya")
    assert result["notes"] and "alpha" in result["notes"][0]
    alphas = {k: float(v) for k, v in load_file(str(tmp_path / "k.safetensors")).items() if k.endswith(".alpha")}
    assert sorted(set(alphas.values())) == [1.0, 2.0, 3.0]


def test_kohya_file_without_alphas_means_alpha_equals_rank(tiny_base, tmp_path):
    from safetensors.torch import save_file

    convert(make_adapter("broad"), tmp_path / "k.safetensors", to="kohya")
    tensors = {k: v for k, v in load_file(str(tmp_path / "k.safetensors")).items() if not k.endswith(".alpha")}
    save_file(tensors, str(tmp_path / "noalpha.safetensors"))
    adapter = io.load(tmp_path / "noalpha.safetensors")
    assert {layer.alpha for layer in adapter.layers.values()} == {4.0} and adapter.fmt == "kohya"
    stock = load_pipeline("tiny-random")
    stock.load_lora_weights(str(tmp_path), weight_name="noalpha.safetensors")
    ours = load_pipeline("tiny-random")
    from dermdiff_lora.adapters.apply import attach

    attach(ours, [(tmp_path / "noalpha.safetensors", 1.0)], base_label="tiny-random")
    assert torch.allclose(unet_out(stock.unet), unet_out(ours.unet), atol=1e-5)
