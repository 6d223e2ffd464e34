"""Base models: tiny-random through the same loader as a Hub id or folder; clear errors for bad bases."""

import shutil

import pytest

from dermdiff_lora.core import models
from dermdiff_lora.core.errors import HubError, ModelError


def test_tiny_random_is_a_saved_pipeline_loaded_by_the_folder_path(tiny_base):
    assert (tiny_base / "model_index.json").is_file()
    parts = models.load_parts(str(tiny_base))  # the same code path as any local folder or Hub snapshot
    assert parts.unet.config.cross_attention_dim == parts.text_encoder.config.hidden_size
    ids = parts.tokenizer("malignant skin disease on darker skin tone").input_ids
    assert len(ids) == 9  # whole-word tokens: start + 7 words + end
    pipe = models.load_pipeline("tiny-random")
    assert pipe.safety_checker is None


def test_not_a_pipeline_folder(tmp_path):
    with pytest.raises(ModelError, match="not a diffusers pipeline folder"):
        models.resolve_base(str(tmp_path))


def test_pickle_only_weights_refused_without_opt_in(tiny_base, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_base, folder)
    for f in (folder / "unet").glob("*.safetensors"):
        f.rename(f.with_name("diffusion_pytorch_model.bin"))
    with pytest.raises(ModelError, match="pickle.*model.allow_pickle=true"):
        models.resolve_base(str(folder))
    assert models.resolve_base(str(folder), allow_pickle=True) == folder


def test_bad_name_and_uncached_hub_id_offline():
    with pytest.raises(ModelError, match="neither a local folder nor a Hub id"):
        models.resolve_base("no/such/thing")
    with pytest.raises(HubError, match="not \\(fully\\) in the local Hugging Face cache"):
        models.resolve_base("someone/not-cached-model")


def test_building_tiny_random_leaves_the_callers_random_stream_alone(tmp_path):
    """A run that builds the tiny base must train exactly like one that loads it (found by the kill soak)."""
    import torch

    from dermdiff_lora.core.models import build_tiny_random

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_random(tmp_path / "tiny")
    assert torch.equal(torch.rand(3), expected)
