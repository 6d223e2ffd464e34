"""Captions from templates or a text column, transforms without torchvision, and every bad-input case."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from dermdiff_lora.core import config, prompts
from dermdiff_lora.core.errors import DataError
from dermdiff_lora.data import dataset as data


def _folder(tmp_path, rows, images=True, fmt="csv"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    if images:
        for r in rows:
            Image.new("RGB", (40, 30), (200, 150, 120)).save(tmp_path / f"{r['image_name']}.png")
    if fmt == "csv":
        with (tmp_path / "metadata.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["image_name"])
            w.writeheader()
            w.writerows(rows)
    else:
        (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _index(folder, *overrides):
    cfg = config.load(None, [f"data.dir={folder}", *overrides])
    return data.index_dataset(cfg.data, prompts.from_config(cfg.prompts))


ROWS = [{"image_name": "ISIC_1", "benign_malignant": "malignant", "skin_tone": "2", "age_approx": ""},
        {"image_name": "ISIC_2", "benign_malignant": "benign", "skin_tone": "0.0", "age_approx": "45.0"}]


def test_template_captions_with_value_maps(tmp_path):
    index = _index(_folder(tmp_path, ROWS))
    assert [r.caption for r in index.records] == [
        "malignant skin disease on darker skin tone", "benign skin disease on lighter skin tone"]


def test_isic_metadata_shape_loads(shared_metadata_folder):
    index = _index(shared_metadata_folder)
    tone_words = {"0": "lighter", "1": "brown", "2": "darker"}
    assert len(index.records) == 6
    for r in index.records:
        assert r.caption == f"{r.row['benign_malignant']} skin disease on {tone_words[r.row['skin_tone']]} skin tone"
    assert any(r.caption.startswith("malignant") for r in index.records)


def test_text_column_captions_from_jsonl(tmp_path):
    rows = [{"file_name": "a.png", "text": "a lesion"}]
    Image.new("L", (16, 16), 90).save(tmp_path / "a.png")
    folder = _folder(tmp_path, rows, images=False, fmt="jsonl")
    index = _index(folder, "prompts.template=")
    assert index.records[0].caption == "a lesion"


def test_missing_column_lists_available(tmp_path):
    rows = [{"image_name": "x", "diagnosis": "nevus"}]
    with pytest.raises(DataError) as err:
        _index(_folder(tmp_path, rows))
    assert "benign_malignant" in str(err.value) and "available columns: image_name, diagnosis" in str(err.value)


def test_value_without_map_entry_is_named(tmp_path):
    rows = [{"image_name": "x", "benign_malignant": "benign", "skin_tone": "7"}]
    with pytest.raises(DataError, match="column 'skin_tone': value '7'"):
        _index(_folder(tmp_path, rows))


def test_missing_folder_and_metadata(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _index(tmp_path / "nope")
    with pytest.raises(DataError, match="no metadata.jsonl or metadata.csv"):
        _index(tmp_path)


def test_empty_dataset(tmp_path):
    (tmp_path / "metadata.csv").write_text("image_name,benign_malignant,skin_tone\n")
    with pytest.raises(DataError, match="no rows: the dataset is empty"):
        _index(tmp_path)


@pytest.mark.parametrize("parallel", [False, True])
def test_unreadable_image_errors_or_is_skipped(tmp_path, monkeypatch, parallel):
    if parallel:  # many images are checked by a pool of processes: the same answers, in the same order
        monkeypatch.setattr(data, "PARALLEL_CHECK", 1)
    folder = _folder(tmp_path, ROWS)
    (folder / "ISIC_1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    with pytest.raises(DataError, match="ISIC_1.png is unreadable.*on_bad_image=skip"):
        _index(folder)
    index = _index(folder, "data.on_bad_image=skip")
    assert len(index.records) == 1 and list(index.skipped) == ["ISIC_1"]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpeg_is_caught_by_the_check(tmp_path, monkeypatch, parallel, progressive):
    """Image.verify() passes a JPEG cut short (it reads no image data); the check decodes it."""
    if parallel:
        monkeypatch.setattr(data, "PARALLEL_CHECK", 1)
    rows = [{**r, "image_name": r["image_name"] + ".jpg"} for r in ROWS]
    folder = _folder(tmp_path, rows, images=False)
    pixels = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    for r in rows:
        Image.fromarray(pixels).save(folder / r["image_name"], quality=90, progressive=progressive)
    whole = (folder / "ISIC_1.jpg").read_bytes()
    (folder / "ISIC_1.jpg").write_bytes(whole[: len(whole) * 3 // 4])
    with Image.open(folder / "ISIC_1.jpg") as im:
        im.verify()  # what the check did before: no complaint
    with pytest.raises(DataError, match=r"ISIC_1.jpg is unreadable \(OSError: image file is truncated"):
        _index(folder)
    index = _index(folder, "data.on_bad_image=skip")
    assert [r.key for r in index.records] == ["ISIC_2.jpg"] and list(index.skipped) == ["ISIC_1.jpg"]
    assert index.records[0].open().size == (128, 96)


def test_missing_image_file_named(tmp_path):
    folder = _folder(tmp_path, ROWS)
    (folder / "ISIC_2.png").unlink()
    with pytest.raises(DataError, match="ISIC_2 not found"):
        _index(folder)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "CMYK"])
def test_image_modes_become_rgb_tensors(mode):
    img = Image.new("RGB", (50, 40), (250, 120, 10))
    if mode == "I;16":
        img = Image.fromarray((np.linspace(0, 65535, 50 * 40).reshape(40, 50)).astype(np.uint16))
    else:
        img = img.convert(mode)
    arr = data.transform(img, 32, center_crop=True, flip=False)
    assert arr.shape == (3, 32, 32) and arr.dtype == np.float32
    assert -1.0 <= arr.min() and arr.max() <= 1.0 and arr.std() >= 0 and np.isfinite(arr).all()


def test_transform_flip_and_random_crop():
    img = Image.fromarray(np.arange(64 * 32 * 3, dtype=np.uint8).reshape(32, 64, 3))
    a = data.transform(img, 32, center_crop=True, flip=False)
    b = data.transform(img, 32, center_crop=True, flip=True)
    assert np.array_equal(a[:, :, ::-1], b)
    crops = {data.transform(img, 32, False, False, np.random.default_rng(s)).sum() for s in range(6)}
    assert len(crops) > 1


def test_prompt_builder_grid_and_normalization():
    builder = prompts.PromptBuilder()
    cells = builder.grid(["benign_malignant", "skin_tone"])
    assert len(cells) == 6 and cells[0][1] == "benign skin disease on lighter skin tone"
    assert prompts.normalize_value(1.0) == "1" and prompts.normalize_value("2.0") == "2"
    assert builder.build({"benign_malignant": "malignant", "skin_tone": 1}) == \
        "malignant skin disease on brown skin tone"
