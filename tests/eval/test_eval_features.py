"""Feature extractors: the tiny random-weight DINOv2 says what it is, clean-fid resizing, errors that say
how to get a missing model."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from eval_synth import lesion_set
from PIL import Image

from dermdiff_lora.core.errors import ConfigError, ModelError
from dermdiff_lora.eval import features
from dermdiff_lora.eval.features import Dinov2Features, ExtractorInfo, extract, load_extractor, prepare


@pytest.fixture(scope="module")
def tiny():
    return load_extractor("tiny-dinov2")


def test_tiny_extractor_says_it_has_random_weights(tiny):
    module, info = tiny
    assert module.info is info and module.num_features == info.dim == 32
    assert "random weights" in info.name and "not comparable to FD_DINOv2" in info.name
    assert "random" in info.model_id
    assert info.random_weights is True and info.as_dict()["random_weights"] is True
    assert info.image_size == 32


def test_tiny_weights_are_fixed_and_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = features.tiny_dinov2(), features.tiny_dinov2()
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_prepare_resizes_with_pil_bicubic_before_the_tensor():
    rng = np.random.default_rng(0)
    odd = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))  # 56 wide, 40 high
    gray = Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), mode="L")
    x = prepare([odd, gray], 32)
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 32, 32)
    expected = np.asarray(odd.resize((32, 32), Image.BICUBIC))
    assert np.array_equal(x[0].permute(1, 2, 0).numpy(), expected)
    assert np.array_equal(x[1].permute(1, 2, 0).numpy(), np.asarray(gray.convert("RGB")))  # right size: untouched
    assert prepare([], 32).shape == (0, 3, 32, 32)


def test_extract_gives_float64_rows_independent_of_batching_and_input_dtype(tiny):
    module, info = tiny
    images = lesion_set(0, 5, size=40)
    a, b = extract(module, images, batch_size=2), extract(module, images, batch_size=64)
    assert a.dtype == np.float64 and a.shape == (5, info.dim)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    x = prepare(images, info.image_size)
    with torch.inference_mode():
        np.testing.assert_allclose(module(x).numpy(), module(x.float() / 255).numpy(), rtol=1e-5, atol=1e-6)


def test_dinov2_loads_a_local_folder_at_224_px(tiny, tmp_path):
    module, _ = tiny
    module.model.save_pretrained(tmp_path / "dino")
    loaded, info = load_extractor("dinov2", model_id=tmp_path / "dino")
    assert (info.image_size, info.dim, info.random_weights) == (224, 32, False)
    assert info.name.startswith("dinov2 (dinov2, width 32, 2 layers") and "not comparable" in info.name
    assert info.model_id == str(tmp_path / "dino")
    x = prepare(lesion_set(1, 2), 224)
    reference = Dinov2Features(module.model, ExtractorInfo("ref", "ref", 224, 32))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), reference(x))


@pytest.mark.parametrize("model_id", ["missing-folder", "nobody-here/no-such-dinov2"])
def test_a_missing_dinov2_says_how_to_fetch_it(model_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as err:
        load_extractor("dinov2", model_id=model_id)
    assert model_id in str(err.value) and f"hf download {model_id}" in str(err.value)
    assert "HF_HUB_OFFLINE" in str(err.value)


def test_a_missing_dinov2_folder_is_named(tmp_path):
    with pytest.raises(ModelError, match="does not exist") as err:
        load_extractor("dinov2", model_id=tmp_path / "nothing")
    assert str(tmp_path / "nothing") in str(err.value) and "hf download facebook/dinov2-large" in str(err.value)


def test_the_default_dinov2_is_fd_dinov2s_vit_l14_and_others_say_they_are_not():
    from transformers import Dinov2Config

    from dermdiff_lora.eval.features import DEFAULT_DINOV2, dinov2_name

    assert DEFAULT_DINOV2 == "facebook/dinov2-large"  # Stein et al. (2023): DINOv2 ViT-L/14
    large = Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, patch_size=14)
    base = Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, patch_size=14)
    assert dinov2_name(large) == "dinov2"
    assert dinov2_name(base).startswith("dinov2 (dinov2, width 768, 12 layers, patch 14: not the ViT-L/14")


@pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity installed")
def test_inception_without_torch_fidelity_names_the_extra():
    with pytest.raises(ModelError) as err:
        load_extractor("inception")
    assert 'pip install "dermdiff-lora[inception]"' in str(err.value) and "dinov2" in str(err.value)


def test_inception_with_a_broken_torchvision_names_the_extra(monkeypatch):
    import torchmetrics.image.fid as tm_fid

    class Broken:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(tm_fid, "NoTrainInceptionV3", Broken)
    with pytest.raises(ModelError, match=r'dermdiff-lora\[inception\]'):
        load_extractor("inception")


def test_bad_extractor_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="unknown feature extractor"):
        load_extractor("clip")
    with pytest.raises(ConfigError, match="only for the 'dinov2'"):
        load_extractor("tiny-dinov2", model_id="facebook/dinov2-base")
