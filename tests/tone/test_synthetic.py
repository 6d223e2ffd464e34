"""Synthetic skin images: exact tone, deterministic, lesion as asked; the ISIC-style dataset writer."""

import csv
import math

import numpy as np
import pytest
from PIL import Image
from skimage.color import lab2rgb, rgb2lab

from dermdiff_lora.core.errors import ConfigError, DataError
from dermdiff_lora.tone.synthetic import (
    METADATA_COLUMNS,
    TONE_GROUPS,
    TONE_ITA_RANGES,
    draw_skin,
    lab_for_ita,
    make_dataset,
)


def _ita(lightness: float, b: float) -> float:
    return math.degrees(math.atan((lightness - 50.0) / b))


@pytest.mark.parametrize("ita", np.linspace(-70, 80, 31))
def test_lab_for_ita_is_exact_and_inside_srgb(ita):
    rng = np.random.default_rng(int(ita) + 100)
    for generator in (None, rng):
        lightness, a, b = lab_for_ita(float(ita), generator)
        assert b > 0 and 8 <= lightness <= 92
        assert _ita(lightness, b) == pytest.approx(ita, abs=1e-9)
        rgb = lab2rgb(np.array([[[lightness, a, b]]]))
        assert (rgb > 0).all() and (rgb < 1).all()  # in gamut: no clipping changes the tone


def test_lab_for_ita_refuses_out_of_range():
    with pytest.raises(ConfigError, match="-70..80"):
        lab_for_ita(89.0)


@pytest.mark.parametrize("diagnosis", ["benign", "malignant"])
@pytest.mark.parametrize("ita", [-60.0, -30.0, 0.0, 28.0, 55.0, 70.0])
def test_healthy_skin_keeps_the_target_ita(ita, diagnosis):
    img, mask = draw_skin(96, ita, diagnosis, seed=int(ita) + 70)
    lab = rgb2lab(np.asarray(img))
    skin = ~mask
    assert abs(_ita(lab[..., 0][skin].mean(), lab[..., 2][skin].mean()) - ita) <= 1.0
    assert lab[..., 0][mask].mean() < lab[..., 0][skin].mean() - 8  # the lesion is darker


def test_draw_skin_is_deterministic_and_sized():
    a, mask_a = draw_skin((80, 48), 20.0, "malignant", seed=3, hair=5)
    b, mask_b = draw_skin((80, 48), 20.0, "malignant", seed=3, hair=5)
    c, _ = draw_skin((80, 48), 20.0, "malignant", seed=4, hair=5)
    assert a.size == (80, 48) and a.mode == "RGB" and mask_a.shape == (48, 80) and mask_a.dtype == bool
    assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(mask_a, mask_b)
    assert not np.array_equal(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.4])
def test_lesion_fraction_is_honoured(fraction):
    for diagnosis in ("benign", "malignant"):
        _, mask = draw_skin(128, 10.0, diagnosis, seed=11, lesion_fraction=fraction)
        assert mask.mean() == pytest.approx(fraction, abs=0.02)


def test_no_lesion_and_all_lesion():
    assert not draw_skin(64, 10.0, seed=1, lesion_fraction=0.0)[1].any()
    assert draw_skin(64, 10.0, seed=1, lesion_fraction=1.0)[1].all()


def test_default_lesion_size_and_position_vary_and_melanomas_are_larger():
    benign = [draw_skin(64, 30.0, "benign", seed=s)[1] for s in range(12)]
    malignant = [draw_skin(64, 30.0, "malignant", seed=s)[1] for s in range(12)]
    small, large = [m.mean() for m in benign], [m.mean() for m in malignant]
    assert 0.06 <= min(small) and max(small) <= 0.2 and max(small) - min(small) > 0.05
    assert 0.16 <= min(large) and max(large) <= 0.36 and max(large) - min(large) > 0.08
    centres = {tuple(np.round(np.argwhere(m).mean(axis=0) / 8)) for m in benign + malignant}
    assert len(centres) > 8


def test_malignant_has_several_colours_benign_one():
    def lesion_colours(diagnosis, seed):
        img, mask = draw_skin(128, 40.0, diagnosis, seed=seed, lesion_fraction=0.3, texture=False)
        inner = mask & np.roll(mask, 3, 0) & np.roll(mask, -3, 0) & np.roll(mask, 3, 1) & np.roll(mask, -3, 1)
        return len({tuple(c) for c in np.asarray(img)[inner] // 8})

    assert all(lesion_colours("benign", s) == 1 for s in range(3))
    assert all(lesion_colours("malignant", s) >= 2 for s in range(3))


@pytest.mark.parametrize("ita", [50.0, 0.0, -45.0])
def test_every_melanoma_has_a_black_brown_patch_darker_than_any_benign_lesion(ita):
    def darkest(diagnosis, seed):
        img, mask = draw_skin(96, ita, diagnosis, seed=seed, lesion_fraction=0.3, texture=False)
        return rgb2lab(np.asarray(img))[..., 0][mask].min()

    skin_l = lab_for_ita(ita)[0]
    assert max(darkest("malignant", s) for s in range(4)) < 0.32 * skin_l
    assert min(darkest("benign", s) for s in range(4)) > 0.36 * skin_l


def test_hair_adds_thin_dark_strokes_outside_the_lesion():
    plain, mask = draw_skin(128, 40.0, seed=5)
    hairy, mask_h = draw_skin(128, 40.0, seed=5, hair=10)
    assert np.array_equal(mask, mask_h)
    changed = (np.asarray(plain) != np.asarray(hairy)).any(axis=2) & ~mask
    assert 0.01 < changed.mean() < 0.3
    lightness = rgb2lab(np.asarray(hairy))[..., 0]
    assert lightness[changed].mean() < lightness[~mask & ~changed].mean() - 20


def _rows(folder):
    with open(folder / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_make_dataset_writes_isic_style_folder(tmp_path):
    out = make_dataset(tmp_path / "data", 12, size=32, seed=1, malignant_fraction=0.5)
    rows = _rows(out)
    assert list(rows[0]) == list(METADATA_COLUMNS) and len(rows) == 12
    assert [r["image_name"] for r in rows] == [f"SYN_{i:07d}" for i in range(1, 13)]
    for row in rows:
        with Image.open(out / f"{row['image_name']}.png") as img:
            assert img.size == (32, 32) and img.text["synthetic"] == "true"
        group = TONE_GROUPS[int(row["skin_tone"])]
        lo, hi = TONE_ITA_RANGES[group]
        assert lo <= float(row["ita_true"]) <= hi
        assert row["target"] == str(int(row["benign_malignant"] == "malignant"))
        assert (row["diagnosis"] == "melanoma") == (row["benign_malignant"] == "malignant")
    per_tone = [sum(r["skin_tone"] == str(c) for r in rows) for c in range(3)]
    assert per_tone == [4, 4, 4]
    assert sum(r["benign_malignant"] == "malignant" for r in rows) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temp folder left behind


def test_patients_repeat_within_a_dataset_never_across_seeds(tmp_path):
    a, a_again, b = (_rows(make_dataset(tmp_path / name, 24, size=16, seed=seed))
                     for name, seed in (("a", 3), ("a2", 3), ("b", 4)))
    patients = [r["patient_id"] for r in a]
    assert len(set(patients)) < len(patients)  # several images of one patient, as in ISIC
    assert patients == [r["patient_id"] for r in a_again]
    assert not set(patients) & {r["patient_id"] for r in b}


def test_make_dataset_tone_counts_and_jpg(tmp_path):
    out = make_dataset(tmp_path / "d", size=24, tone_counts={"lighter": 5, "darker": 2}, image_format="jpg")
    rows = _rows(out)
    assert [sum(r["skin_tone"] == str(c) for r in rows) for c in range(3)] == [5, 0, 2]
    assert all((out / f"{r['image_name']}.jpg").is_file() for r in rows)


def test_make_dataset_refuses_non_empty_folder_unless_overwrite(tmp_path):
    out = make_dataset(tmp_path / "d", 3, size=16)
    (out / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="overwrite=True or pick a new folder"):
        make_dataset(out, 3, size=16)
    make_dataset(out, 4, size=16, overwrite=True)
    assert len(_rows(out)) == 4 and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_make_dataset_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="tone_counts"):
        make_dataset(tmp_path / "a", tone_counts={"pale": 3})
    with pytest.raises(ConfigError, match="image_format"):
        make_dataset(tmp_path / "b", image_format="gif")
