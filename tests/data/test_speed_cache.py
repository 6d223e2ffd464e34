"""The latent / text-embedding cache: same losses as without it, reused across runs, invalidated by any
change of model, data or transforms."""

from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import pytest
import torch
from conftest import make_cfg
from safetensors.torch import load_file

from dermdiff_lora.core import config, models, prompts
from dermdiff_lora.core.errors import DataError
from dermdiff_lora.data import cache, shards
from dermdiff_lora.data import dataset as data
from dermdiff_lora.training import session, train

_ORIGINAL = train.after_step, train._text_embeddings


def _train_recording(monkeypatch, cfg) -> tuple[list[float], list[bool]]:
    """Per-step losses of a run, and whether each cached step dropped a caption."""
    losses, drops = [], []
    after, embed = _ORIGINAL

    def record_step(run, state, bar):
        losses.append(state.loss)
        after(run, state, bar)

    def record_drop(run, batch, drop):
        drops.append(bool(drop.any()) and "encoder_hidden_states" in batch)
        return embed(run, batch, drop)

    monkeypatch.setattr(train, "after_step", record_step)
    monkeypatch.setattr(train, "_text_embeddings", record_drop)
    train.train(cfg)
    return losses, drops


def test_cache_changes_no_loss(tiny_base, demo_data, tmp_path, monkeypatch):
    common = ["prompts.caption_dropout=0.5", f"speed.cache_dir={tmp_path / 'lc'}", "train.max_steps=3"]
    off, _ = _train_recording(monkeypatch, make_cfg(demo_data, tmp_path / "off", *common,
                                                    "speed.cache_latents=off"))
    on, drops = _train_recording(monkeypatch, make_cfg(demo_data, tmp_path / "on", *common,
                                                       "speed.cache_latents=on"))
    assert len(off) == 3 and on == off  # bit for bit, flips (random_flip) and dropped captions included
    assert any(drops), "no caption was dropped: the empty-prompt embedding went untested"
    a = load_file(str(tmp_path / "off" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(tmp_path / "on" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "lc").iterdir()) == ["latents", "text"]


def _index(cfg):
    return data.index_dataset(cfg.data, prompts.from_config(cfg.prompts))


def test_cache_key_follows_model_data_and_transforms(tiny_base, demo_data, tmp_path):
    model = shutil.copytree(tiny_base, tmp_path / "model")
    folder = shutil.copytree(demo_data, tmp_path / "data")
    cfg = make_cfg(folder, tmp_path / "run")
    base = cache.cache_paths(cfg, model, _index(cfg), torch.float32)

    def paths(*overrides, model_folder=model, dtype=torch.float32):
        c = make_cfg(folder, tmp_path / "run", *overrides)
        return cache.cache_paths(c, model_folder, _index(c), dtype)

    assert paths() == base  # same inputs, same files: reused across runs
    for transform in ("data.resolution=16", "data.random_flip=false"):
        assert paths(transform)["latents"] != base["latents"], transform
    assert paths(dtype=torch.bfloat16)["latents"] != base["latents"]
    other = paths("prompts.template='{skin_tone} skin, {benign_malignant}'")
    assert other["latents"] == base["latents"] and other["text"] != base["text"]  # captions: text only
    assert paths("data.max_samples=10")["latents"] != base["latents"]  # file list
    image = next(folder.glob("*.png"))
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    touched = paths()
    assert touched["latents"] != base["latents"] and touched["text"] == base["text"]  # image mtime
    weights = next((model / "vae").glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert paths()["latents"] != touched["latents"]  # VAE weights
    te_config = model / "text_encoder" / "config.json"
    te_config.write_text(te_config.read_text().replace("{", '{"note": 1, ', 1))
    assert paths()["text"] != touched["text"]  # text-encoder config
    assert "text" not in paths("lora.text_encoder=true")  # a trained text encoder is never cached


def _run_stub(cfg, parts):
    acc = SimpleNamespace(is_main_process=True, device=torch.device("cpu"), wait_for_everyone=lambda: None)
    return SimpleNamespace(cfg=cfg, accelerator=acc, parts=parts, index=_index(cfg),
                           weight_dtype=torch.float32, extra={})


def test_cache_is_reused_and_a_corrupt_file_is_named(tiny_base, demo_data, tmp_path, monkeypatch):
    cfg = make_cfg(demo_data, tmp_path / "run", f"speed.cache_dir={tmp_path / 'lc'}", "data.max_samples=5")
    run = _run_stub(cfg, models.load_parts(str(tiny_base)))
    latents, text = cache.load_or_build(run)
    captions = {r.caption for r in run.index.records}
    assert latents.shapes["mean"] == (5, 2, 4, 16, 16) and len(text) == len(captions) + 1  # + the empty prompt

    def boom(*_a, **_k):
        raise AssertionError("re-encoded although the cache exists")

    monkeypatch.setattr(cache, "encode_latents", boom)
    monkeypatch.setattr(cache, "encode_texts", boom)
    again, _ = cache.load_or_build(run)
    assert torch.equal(again.read("mean"), latents.read("mean")) and torch.equal(again.read("std"), latents.read("std"))
    path = next((tmp_path / "lc").glob("latents-*/rows-*"))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=path.name):
        cache.load_or_build(run)


def test_cached_dataset_flips_as_the_image_dataset(tiny_base, demo_data, tmp_path):
    cfg = make_cfg(demo_data, tmp_path / "run", "data.max_samples=4")
    parts = models.load_parts(str(tiny_base))
    index = _index(cfg)
    images = data.ImageCaptionDataset(index, cfg.data, parts.tokenizer)
    fake = {"mean": torch.arange(4 * 2).reshape(4, 2, 1, 1, 1).float(), "std": torch.ones(4, 2, 1, 1, 1)}
    shards.write_shard(tmp_path / "lc" / shards.shard_name(0, 4), 0, 4, [(0, fake)])
    cached = cache.CachedDataset(index, cfg.data, parts.tokenizer, shards.Rows(tmp_path / "lc", 4), None)
    flips = []
    for seed in range(40):
        a, b = images[(seed % 4, seed)], cached[(seed % 4, seed)]
        assert a["flip"] == b["flip"] and torch.equal(a["input_ids"], b["input_ids"])
        assert b["latent_mean"].item() == 2 * (seed % 4) + int(b["flip"])  # the matching flip variant
        flips.append(b["flip"])
    assert 0 < sum(flips) < 40


def test_cache_switch_defaults_and_yaml_booleans(demo_data, tmp_path):
    assert cache.cache_enabled(make_cfg(demo_data, tmp_path))  # auto + center crop
    assert not cache.cache_enabled(make_cfg(demo_data, tmp_path, "data.center_crop=false"))
    assert config.load(None, ["speed.cache_latents=off"]).speed.cache_latents == "off"  # YAML: off → False
    assert not cache.cache_enabled(make_cfg(demo_data, tmp_path, "speed.cache_latents=off"))


def test_fast_path_switches(tiny_base, demo_data, tmp_path):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    parts = models.load_parts(str(tiny_base))
    run = _run_stub(make_cfg(demo_data, tmp_path, "speed.sdpa=false", "speed.channels_last=true"), parts)
    session._fast_paths(run)
    assert all(type(p) is AttnProcessor for p in parts.unet.attn_processors.values())
    assert parts.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    run.cfg = make_cfg(demo_data, tmp_path)
    session._fast_paths(run)
    assert all(type(p) is AttnProcessor2_0 for m in (parts.unet, parts.vae) for p in m.attn_processors.values())
