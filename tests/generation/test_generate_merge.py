"""merge (fused pipeline folder == unfused adapters) and generate (PNGs, provenance, grids, replay, blanks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from adapter_helpers import make_adapter, pipeline, text_out, unet_out
from PIL import Image
from safetensors import safe_open

from dermdiff_lora.adapters.merge import merge
from dermdiff_lora.core.errors import ConfigError, ModelError
from dermdiff_lora.generation import generate as gen
from dermdiff_lora.generation.grid import read_provenance


def test_merged_pipeline_equals_the_unfused_adapters(trained_lora, tmp_path):
    from diffusers import StableDiffusionPipeline

    sources = [(make_adapter("broad-te", text_encoder=True), 0.6), (trained_lora, 1.5)]
    merge("tiny-random", sources, tmp_path / "merged")
    merged, unfused = StableDiffusionPipeline.from_pretrained(tmp_path / "merged"), pipeline(*sources)
    assert torch.allclose(unet_out(merged.unet), unet_out(unfused.unet), atol=2e-5)
    assert torch.allclose(text_out(merged.text_encoder), text_out(unfused.text_encoder), atol=2e-5)
    assert not torch.allclose(text_out(merged.text_encoder), text_out(pipeline().text_encoder), atol=1e-3)
    with safe_open(str(tmp_path / "merged" / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if "lora" in k or "base_layer" in k]
    record = json.loads((tmp_path / "merged" / "dermdiff_merge.json").read_text())
    assert [a["scale"] for a in record["adapters"]] == [0.6, 1.5]
    with pytest.raises(ConfigError, match="already exists"):
        merge("tiny-random", sources, tmp_path / "merged")


def test_merge_casts_to_the_requested_dtype(tiny_base, tmp_path):
    merge("tiny-random", [(make_adapter("broad"), 1.0)], tmp_path / "half", dtype="fp16")
    with safe_open(str(tmp_path / "half" / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    with pytest.raises(ConfigError, match="--dtype 'fp8'"):
        merge("tiny-random", [(make_adapter("broad"), 1.0)], tmp_path / "x", dtype="fp8")


def _settings(**kw) -> gen.GenerateSettings:
    return gen.GenerateSettings(**{"steps": 2, "height": 32, "width": 32, "batch_size": 6, **kw})


def test_generate_renders_the_adapters_template_grid_with_provenance(trained_lora, tmp_path):
    settings = _settings(adapters=[(str(trained_lora), 0.8)], num_images=2, grid=["skin_tone", "benign_malignant"])
    record = gen.generate(settings, tmp_path / "g", progress=False)
    assert len(record["images"]) == 12 and record["grids"] == ["grid-seed0.png", "grid-seed1.png"]
    first = record["images"][0]
    assert first["words"] == {"skin_tone": "lighter", "benign_malignant": "benign"}
    prov = read_provenance(tmp_path / "g" / first["file"])
    assert prov["prompt"] == "benign skin disease on lighter skin tone" and prov["seed"] == 0
    assert prov["synthetic"] == "true" and prov["base_model"] == "tiny-random" and prov["steps"] == 2
    assert prov["adapters"][0]["scale"] == 0.8 and prov["package_version"]
    with Image.open(tmp_path / "g" / "grid-seed0.png") as grid:
        assert grid.width > 2 * 96 and grid.height > 3 * 96  # 3 tone rows × 2 diagnosis columns, labelled
    replay = gen.generate(gen.GenerateSettings.from_json(tmp_path / "g" / "generate.json"), tmp_path / "again",
                          progress=False)
    for a, b in zip(record["images"], replay["images"]):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "g" / a["file"])),
                              np.asarray(Image.open(tmp_path / "again" / b["file"])))


def test_adapter_scale_changes_the_images(tiny_base, tmp_path):
    broad = str(make_adapter("broad"))
    pixels = []
    for i, scale in enumerate((0.0, 1.0)):
        record = gen.generate(_settings(adapters=[(broad, scale)], prompts=["a photo of a lesion"],
                                        scheduler="ddim"), tmp_path / str(i), progress=False)
        pixels.append(np.asarray(Image.open(tmp_path / str(i) / record["images"][0]["file"]), dtype=float))
        assert record["scheduler"] == "DDIMScheduler"
    base = gen.generate(_settings(prompts=["a photo of a lesion"], scheduler="ddim"), tmp_path / "b", progress=False)
    base_px = np.asarray(Image.open(tmp_path / "b" / base["images"][0]["file"]), dtype=float)
    assert np.array_equal(pixels[0], base_px) and np.abs(pixels[1] - base_px).mean() > 1.0


def test_full_finetune_folder_as_base_brings_its_template(trained_full, tmp_path):
    record = gen.generate(_settings(base=str(trained_full)), tmp_path / "full", progress=False)
    assert len(record["images"]) == 6 and record["grids"] == ["grid.png"]


def test_blank_images_are_reported_not_saved(trained_lora, tmp_path, monkeypatch):
    monkeypatch.setattr(gen, "render", lambda pipe, prompts, seeds, **kw: [Image.new("RGB", (32, 32))] * len(prompts))
    record = gen.generate(_settings(adapters=[(str(trained_lora), 1.0)]), tmp_path / "black", progress=False)
    assert len(record["blank"]) == 6 and record["images"] == []
    assert not (tmp_path / "black" / "images").exists()
    assert json.loads((tmp_path / "black" / "generate.json").read_text())["blank"][0]["seed"] == 0


def test_generate_bad_settings_are_named(tiny_base, tmp_path):
    with pytest.raises(ConfigError, match="no prompt template"):
        gen.generate(_settings(), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="scheduler 'warp'"):
        gen.generate(_settings(prompts=["x"], scheduler="warp"), tmp_path / "b", progress=False)
    with pytest.raises(ModelError, match="no safety_checker"):
        gen.generate(_settings(prompts=["x"], safety_checker=True), tmp_path / "c", progress=False)
    assert not any(tmp_path.iterdir())  # nothing half-written
