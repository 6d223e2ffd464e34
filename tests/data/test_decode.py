"""JPEGs decoded at reduced scale (libjpeg DCT scaling) in training, cache building and audit; padding to a
square for non-square images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_cfg
from PIL import Image, ImageDraw, ImageFilter, JpegImagePlugin

from dermdiff_lora.core import config, models, prompts
from dermdiff_lora.core.errors import ConfigError
from dermdiff_lora.data import cache, tables
from dermdiff_lora.data import dataset as data
from dermdiff_lora.tone import audit, skintone

W, H, RES = 2400, 1800, 256  # a 4:3 photo; 1/4 scale (600 x 450) still covers a 256 crop, 1/8 would not


def _photo(w: int = W, h: int = H, seed: int = 0) -> Image.Image:
    """Skin-like background, a dark lesion, hair lines, sensor noise: edges and texture at every scale."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 1, (h // 50, w // 50, 3))
    img = Image.fromarray(np.clip([200, 150, 120] + 15 * coarse, 0, 255).astype(np.uint8))
    img = img.resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    draw.ellipse((w * 0.35, h * 0.3, w * 0.65, h * 0.7), fill=(90, 50, 40))
    for _ in range(30):
        x = rng.uniform(0, w)
        draw.line((x, 0, x + rng.uniform(-w / 4, w / 4), h), fill=(40, 30, 25), width=max(1, w // 600))
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(2))).astype(float) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "photo.jpg"
    _photo().save(path, quality=95)
    return path


@pytest.fixture
def drafts(monkeypatch) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Every JPEG draft call as (requested size, size after the draft)."""
    calls = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        out = real(self, mode, size)
        calls.append((size, self.size))
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return calls


def test_a_large_jpeg_is_decoded_at_the_smallest_scale_that_covers_the_target(big_jpeg, tmp_path):
    assert tables.open_image(big_jpeg).size == (W, H)
    assert tables.open_image(big_jpeg, RES).size == (W // 4, H // 4)  # short side 450 >= 256; 1/8: 225 < 256
    assert tables.open_image(big_jpeg, RES, cover=False).size == (W // 8, H // 8)  # long side 300 >= 256
    assert tables.open_image(big_jpeg, 1000).size == (W, H)  # no reduction keeps 1000 px: full decode
    png = tmp_path / "photo.png"
    Image.open(big_jpeg).save(png)
    assert tables.open_image(png, RES).size == (W, H)  # PNG: nothing to draft
    with Image.open(big_jpeg) as im:
        im.load()
        assert tables.draft_jpeg(im, RES).size == (W, H)  # after load(): too late, nothing changes


def test_drafted_training_pixels_match_a_full_decode(big_jpeg):
    """Tolerance: the drafted pixels may differ from the full decode's by about as much as the full
    decode's differ between two good resampling filters (bicubic vs Lanczos), which nobody would call
    different images. Measured on this photo: mean 0.54 vs 0.65 levels of 255, 99th percentile 3 vs 4,
    max 5 vs 10 (at 4000 x 3000 -> 512: 0.63 vs 0.56, p99 4 vs 5; JPEG q95 itself moves pixels by 0.4 on
    average). The bounds leave 25 % (mean) and 50 % (p99) of room over the filters' difference."""
    record = data.Record(big_jpeg, "x", {})
    draft = data.load_pixels(record, make_cfg(Path("."), Path("."), f"data.resolution={RES}").data, False)
    full_cfg = make_cfg(Path("."), Path("."), f"data.resolution={RES}", "data.decode=full").data
    full = data.load_pixels(record, full_cfg, False)
    assert draft.shape == full.shape == (3, RES, RES)
    diff = np.abs(draft - full) * 127.5
    image = tables.open_image(big_jpeg)
    w, h = image.size
    size = (round(w * RES / h), RES)
    bicubic = np.asarray(image.resize(size, Image.Resampling.BICUBIC)).astype(float)
    lanczos = np.asarray(image.resize(size, Image.Resampling.LANCZOS)).astype(float)
    filters = np.abs(bicubic - lanczos)
    assert 0 < diff.mean() <= 1.25 * filters.mean(), (diff.mean(), filters.mean())  # 0: nothing drafted
    assert np.percentile(diff, 99) <= 1.5 * np.percentile(filters, 99)


def test_training_and_cache_building_decode_drafts_and_the_cache_key_names_the_mode(big_jpeg, drafts,
                                                                                    tiny_base, tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(big_jpeg.read_bytes())
    (folder / "metadata.csv").write_text("file_name,text\na.jpg,a skin photo\n")
    cfg = make_cfg(folder, tmp_path / "run", f"data.resolution={RES}", "data.file_column=file_name",
                   "prompts.template=", f"speed.cache_dir={tmp_path / 'lc'}")
    index = data.index_dataset(cfg.data, prompts.from_config(cfg.prompts), progress=False)
    assert [after for _, after in drafts] == [(W // 8, H // 8)]  # the image check decodes at the smallest scale
    drafts.clear()
    parts = models.load_parts(str(tiny_base))
    item = data.ImageCaptionDataset(index, cfg.data, parts.tokenizer)[(0, 0)]
    assert item["pixel_values"].shape == (3, RES, RES) and [after for _, after in drafts] == [(W // 4, H // 4)]
    chunks = cache.encode_latents(parts.vae, index, cfg.data, [(0, 1)], torch.device("cpu"), torch.float32)
    _, tensors = next(iter(chunks))
    assert tensors["mean"].shape[:2] == (1, 2) and len(drafts) == 2  # decoded once (not once per flip)
    assert drafts[1][1] == (W // 4, H // 4)
    paths = {m: cache.cache_paths(config.with_overrides(cfg, [f"data.decode={m}"]), tiny_base, index,
                                  torch.float32)["latents"] for m in ("draft", "full")}
    assert paths["draft"] != paths["full"]


def test_audit_decodes_drafts(big_jpeg, drafts):
    rgb = skintone.load_rgb(str(big_jpeg))
    assert max(rgb.shape) == skintone.WORKING_SIDE and drafts[0][1] == (W // 8, H // 8)  # 300 >= 256
    row = audit._estimate_one((big_jpeg, "photo.jpg", "border", skintone.get_scheme("paper")))
    assert row["file"] == "photo.jpg" and len(drafts) == 2


def _three_to_one() -> Image.Image:
    """90 x 30: red, green and blue thirds on a grey frame (1 px)."""
    arr = np.zeros((30, 90, 3), dtype=np.uint8)
    arr[:, :30], arr[:, 30:60], arr[:, 60:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    arr[0], arr[-1], arr[:, 0], arr[:, -1] = 128, 128, 128, 128
    return Image.fromarray(arr)


def test_crop_keeps_the_middle_of_a_three_to_one_image_and_pad_keeps_all_of_it():
    image = _three_to_one()
    crop = (data.transform(image, 30, True, False) + 1) * 127.5
    assert crop.shape == (3, 30, 30)
    inner = crop[:, 2:-2, 2:-2]  # away from the frame and bicubic's ringing at the edges
    assert (inner[1] > 200).all() and (inner[0] < 50).all() and (inner[2] < 50).all()  # only green is left
    pad = ((data.transform(image, 90, True, False, fit="pad") + 1) * 127.5).round()
    assert pad.shape == (3, 90, 90)
    band = pad[:, 30:60]  # the image, resized to 90 x 30, centred between two 30-px bands
    assert band[0, 15, 15] > 200 and band[1, 15, 45] > 200 and band[2, 15, 75] > 200  # all three thirds
    assert (pad[:, :30] == 128).all() and (pad[:, 60:] == 128).all()  # bands: the border's median (grey)
    flipped = data.transform(image, 90, True, True, fit="pad")
    assert np.array_equal(flipped, ((pad / 127.5) - 1)[:, :, ::-1].astype(np.float32))


def test_pad_fits_in_the_config_and_the_cache():
    cfg = config.load(None, ["data.fit=pad", "data.center_crop=false", "speed.cache_latents=on"])
    assert cfg.data.fit == "pad" and cache.cache_enabled(cfg)  # no random crop to freeze
    with pytest.raises(ConfigError, match="cache_latents=on"):
        config.load(None, ["data.center_crop=false", "speed.cache_latents=on"])
