"""kohya/LyCORIS key names against ComfyUI's own SD 1.x mapping (a fixture of its key names, not its code).

``fixtures/comfyui_sd1_lora_keys.json`` lists every ``lora_unet_…`` / ``lora_te_…`` key stem ComfyUI's
``model_lora_keys_unet`` / ``model_lora_keys_clip`` map for an SD 1.x checkpoint, with the weight each one
lands on (commits in the file). The model here has SD v1-4's block structure with small widths.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dermdiff_lora.adapters import io, kohya

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "comfyui_sd1_lora_keys.json").read_text())
ARCH = Path(kohya.__file__).parent.parent / "assets" / "sd-v1-4-architecture.json"


@functools.cache
def sd14_shaped():
    """UNet and text encoder with SD v1-4's blocks (2 resnets per block, 3 cross-attention levels, 12 CLIP layers)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    arch = json.loads(ARCH.read_text())
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config({**arch["unet"], "block_out_channels": [16, 32, 64, 64],
                                             "norm_num_groups": 8, "cross_attention_dim": 16})
    te = CLIPTextModel(CLIPTextConfig.from_dict({**arch["text_encoder"], "hidden_size": 16,
                                                 "intermediate_size": 32, "num_attention_heads": 2,
                                                 "projection_dim": 16, "vocab_size": 1000}))
    return unet, te


def _weighted(model) -> dict[str, tuple[int, ...]]:
    """Every Linear / Conv2d (what an adapter can target) with its weight shape."""
    return {name: tuple(m.weight.shape) for name, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}


def test_every_unet_and_text_encoder_layer_has_the_name_comfyui_maps():
    unet, te = sd14_shaped()
    unet_layers, te_layers = _weighted(unet), _weighted(te)
    assert len(te_layers) == 72 and any(len(s) == 4 for s in unet_layers.values())
    for component, layers, table, key in (("unet", unet_layers, FIXTURE["unet"], "diffusers"),
                                          ("text_encoder", te_layers, FIXTURE["text_encoder"], "transformers")):
        for module in layers:
            stem = kohya.kohya_name(f"{component}.{module}")
            assert stem in table, f"{component}.{module} -> {stem} is not a key ComfyUI maps"
            assert table[stem][key].removeprefix(kohya.TEXT_MODEL) == f"{module}.weight"
            assert kohya.layer_name(stem) == f"{component}.{module}"


def test_old_text_encoder_spelling_is_read():
    assert kohya.layer_name("lora_te_encoder_layers_3_mlp_fc1") == "text_encoder.encoder.layers.3.mlp.fc1"
    assert kohya.layer_name("lora_te_text_model_encoder_layers_3_mlp_fc1") == "text_encoder.encoder.layers.3.mlp.fc1"


@pytest.fixture(scope="module")
def kohya_file(tmp_path_factory):
    """A LoRA on every linear and conv layer of both models, written by `convert --to kohya`."""
    from peft import LoraConfig

    from dermdiff_lora.adapters import lora
    from dermdiff_lora.adapters.convert import convert

    unet, te = (copy.deepcopy(m) for m in sd14_shaped())
    for model in (unet, te):
        model.add_adapter(LoraConfig(r=2, lora_alpha=3, init_lora_weights=False,
                                     target_modules=sorted(_weighted(model))))
    folder = tmp_path_factory.mktemp("sd14") / "adapter"
    lora.save_adapter(folder, unet, te, meta={"base_model": "sd14-shaped"})
    out = folder.parent / "kohya.safetensors"
    convert(folder, out, to="kohya")
    return out


def test_a_kohya_file_loads_fully_in_comfyui_onto_the_right_weights(kohya_file):
    unet, te = sd14_shaped()
    shapes = {"unet": _weighted(unet), "text_encoder": _weighted(te)}
    tensors = load_file(str(kohya_file))
    stems: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        stem, _, part = key.partition(".")
        stems.setdefault(stem, {})[part] = value
    table = {**FIXTURE["unet"], **FIXTURE["text_encoder"]}
    unloaded = [s for s in stems if s not in table]
    assert not unloaded, f"{len(unloaded)} layers ComfyUI would leave unloaded, e.g. {unloaded[:3]}"
    assert len(stems) == len(shapes["unet"]) + len(shapes["text_encoder"])
    for stem, parts in stems.items():
        assert set(parts) == {"lora_up.weight", "lora_down.weight", "alpha"}
        component = "unet" if stem.startswith("lora_unet_") else "text_encoder"
        target = (table[stem].get("diffusers") or table[stem]["transformers"]).removeprefix(kohya.TEXT_MODEL)
        up, down = parts["lora_up.weight"], parts["lora_down.weight"]
        assert (up.shape[0], *down.shape[1:]) == shapes[component][target.removesuffix(".weight")]
    assert {k for k in stems if ".conv" in table[k].get("diffusers", "")} and len(
        [k for k in stems if k.startswith("lora_te_")]) == 72
    assert set(io.load(kohya_file).layers) == {f"{c}.{m}" for c, s in shapes.items() for m in s}
