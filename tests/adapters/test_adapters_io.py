"""Adapter files: loading, metadata, fingerprints, and every kind of bad input."""

from __future__ import annotations

import json

import pytest
import torch
from adapter_helpers import make_adapter, pipeline
from safetensors.torch import load_file, save_file

from dermdiff_lora.adapters import io, lora
from dermdiff_lora.adapters.merge import merge
from dermdiff_lora.core.errors import AdapterError, ConfigError


def test_trained_adapter_reads_back_with_its_metadata(trained_lora):
    adapter = io.load(trained_lora)
    assert len(adapter.layers) == 32 and adapter.components() == ["unet"]
    layer = next(iter(adapter.layers.values()))
    assert (layer.rank, layer.alpha, layer.scale) == (4, 8.0, 2.0)
    assert adapter.meta["base_model"] == "tiny-random" and "{skin_tone}" in adapter.meta["prompt_template"]
    # the fingerprint recomputed from the tensors is the one training recorded from the live model
    assert adapter.fingerprint() == adapter.meta["fingerprint"]


def test_per_layer_rank_and_alpha_come_from_the_lora_config(tiny_base, tmp_path):
    src = make_adapter("broad")
    tensors, adapter = load_file(str(io.weights_file(src))), io.load(src)
    name = "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2"
    tensors[f"unet.{name}.lora_A.weight"] = tensors[f"unet.{name}.lora_A.weight"][:2].clone()
    tensors[f"unet.{name}.lora_B.weight"] = tensors[f"unet.{name}.lora_B.weight"][:, :2].clone()
    flat = {f"unet.{k}": v for k, v in io.lora_config(adapter.layers, "unet").items()}
    flat["unet.rank_pattern"] = {name: 2}
    flat["unet.alpha_pattern"] = {name: 3.0}
    save_file(tensors, str(tmp_path / "x.safetensors"), {"lora_adapter_metadata": json.dumps(flat)})
    layer = io.load(tmp_path / "x.safetensors").layers[f"unet.{name}"]
    assert (layer.rank, layer.alpha) == (2, 3.0)
    flat["unet.rank_pattern"] = {}
    save_file(tensors, str(tmp_path / "y.safetensors"), {"lora_adapter_metadata": json.dumps(flat)})
    with pytest.raises(AdapterError, match="rank 2 but its LoraConfig says 4"):
        io.load(tmp_path / "y.safetensors")


def test_pickle_is_refused_unless_opted_in(trained_lora, tmp_path):
    state = load_file(str(io.weights_file(trained_lora)))
    torch.save(state, tmp_path / "adapter.bin")
    with pytest.raises(AdapterError, match=r"adapter\.bin is a pickle file.*--allow-pickle"):
        io.load(tmp_path / "adapter.bin")
    with pytest.raises(AdapterError, match="pickle"):
        io.load(tmp_path)  # a folder holding only the .bin
    adapter = io.load(tmp_path / "adapter.bin", allow_pickle=True)
    assert len(adapter.layers) == 32
    assert next(iter(adapter.layers.values())).alpha == 4.0  # no LoraConfig: diffusers' alpha = rank


def test_truncated_file_is_named(trained_lora, tmp_path):
    data = io.weights_file(trained_lora).read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterError, match=r"cut\.safetensors is not a readable safetensors file"):
        io.load(tmp_path / "cut.safetensors")


@pytest.mark.parametrize("key", ["unet.down_blocks.0.attn.lora.down.weight", "base_model.model.to_q.lora_A.weight",
                                 "lora_unet_down_blocks_0_resnets_0_conv1.oft_blocks"])
def test_unknown_key_layout_names_the_key(tmp_path, key):
    save_file({key: torch.zeros(2, 2)}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(AdapterError, match="unknown key layout") as err:
        io.load(tmp_path / "odd.safetensors")
    assert key in str(err.value)


def test_sdxl_and_ldm_named_kohya_files_are_refused(tmp_path):
    save_file({"lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha": torch.tensor(1.0)}, str(tmp_path / "xl.safetensors"))
    with pytest.raises(AdapterError, match="SDXL"):
        io.load(tmp_path / "xl.safetensors")
    save_file({"lora_unet_input_blocks_1_1_proj_in.alpha": torch.tensor(1.0)}, str(tmp_path / "ldm.safetensors"))
    with pytest.raises(AdapterError, match="input_blocks"):
        io.load(tmp_path / "ldm.safetensors")


def _sdxl_shaped(src, out):
    """The adapter with one cross-attention layer shaped as in SDXL (context 2048) and an SDXL base id."""
    tensors = load_file(str(io.weights_file(src)))
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"
    tensors[key] = torch.zeros(tensors[key].shape[0], 2048)
    header = lora.read_header(src)
    meta = json.loads(header[lora.META_KEY])
    meta["base_model"] = "stabilityai/stable-diffusion-xl-base-1.0"
    save_file(tensors, str(out), {**header, lora.META_KEY: json.dumps(meta)})
    return out


def test_adapter_of_another_architecture_is_refused_naming_both(trained_lora, tmp_path):
    bad = _sdxl_shaped(trained_lora, tmp_path / "xl.safetensors")
    with pytest.raises(AdapterError) as err:
        merge("tiny-random", [(bad, 1.0)], tmp_path / "merged")
    message = str(err.value)
    assert "stable-diffusion-xl-base-1.0" in message and "base tiny-random" in message
    assert "attn2.to_k" in message and "(32, 2048)" in message
    assert not (tmp_path / "merged").exists()


def test_layer_missing_from_the_base_is_refused(trained_lora, tmp_path):
    tensors = load_file(str(io.weights_file(trained_lora)))
    tensors["unet.down_blocks.7.attentions.0.proj_in.lora_A.weight"] = torch.zeros(4, 32)
    tensors["unet.down_blocks.7.attentions.0.proj_in.lora_B.weight"] = torch.zeros(32, 4)
    save_file(tensors, str(tmp_path / "extra.safetensors"), lora.read_header(trained_lora))
    with pytest.raises(AdapterError, match=r"1 of 33 layer\(s\) have no match in base tiny-random.*down_blocks\.7"):
        pipeline((tmp_path / "extra.safetensors", 1.0))


def test_outputs_are_refused_when_present_and_inputs_never_overwritten(trained_lora, tmp_path):
    adapter = io.load(trained_lora)
    before = io.weights_file(trained_lora).read_bytes()
    with pytest.raises(ConfigError, match="is an input"):
        io.save(adapter, trained_lora, overwrite=True, inputs=[trained_lora])
    io.save(adapter, tmp_path / "out")
    with pytest.raises(ConfigError, match="already exists.*--overwrite"):
        io.save(adapter, tmp_path / "out")
    io.save(adapter, tmp_path / "out", overwrite=True)
    assert io.weights_file(trained_lora).read_bytes() == before
    assert [p.name for p in (tmp_path / "out").iterdir()] == [lora.WEIGHT_NAME]  # no temp file left


def test_a_pipeline_folder_is_not_taken_for_an_adapter(tiny_base):
    with pytest.raises(AdapterError, match="full pipeline folder"):
        io.load(tiny_base)


def test_rslora_scale_is_kept_and_dora_without_magnitudes_is_refused(trained_lora, tmp_path):
    tensors, header = load_file(str(io.weights_file(trained_lora))), lora.read_header(trained_lora)
    flat = json.loads(header[lora.DIFFUSERS_META_KEY])
    save_file(tensors, str(tmp_path / "rs.safetensors"),
              {lora.DIFFUSERS_META_KEY: json.dumps({**flat, "unet.use_rslora": True})})
    layer = next(iter(io.load(tmp_path / "rs.safetensors").layers.values()))
    assert layer.scale == pytest.approx(8.0 / 4 ** 0.5)
    save_file(tensors, str(tmp_path / "dora.safetensors"),
              {lora.DIFFUSERS_META_KEY: json.dumps({**flat, "unet.use_dora": True})})
    with pytest.raises(AdapterError, match="DoRA but layer .* has no lora_magnitude_vector"):
        io.load(tmp_path / "dora.safetensors")
