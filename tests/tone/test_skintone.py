"""ITA estimation: accuracy on synthetic skin with lesions and hair, categories, masks, refusals."""

import math

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab

from dermdiff_lora.core.errors import ConfigError, DataError
from dermdiff_lora.tone.skintone import SCHEMES, STRATEGIES, categorize, estimate_ita, lesion_mask
from dermdiff_lora.tone.synthetic import draw_skin, lab_for_ita

ITAS = [-60.0, -50.0, -40.0, -30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 28.0, 40.0, 50.0, 60.0, 70.0]
CASES = [  # (diagnosis, lesion fraction, seed offset): small to 40 % lesions, both shapes
    ("benign", 0.05, 0),
    ("malignant", 0.2, 1),
    ("benign", 0.4, 2),
    ("malignant", 0.4, 3),
]


def _boundary_distance(ita: float, scheme: str) -> float:
    return min(abs(ita - b) for b in SCHEMES[scheme].boundaries)


@pytest.mark.parametrize("ita", ITAS)
def test_ita_within_3_degrees_with_large_lesions_and_dense_hair(ita):
    for diagnosis, fraction, offset in CASES:
        img, _ = draw_skin(
            128, ita, diagnosis, seed=1000 + int(ita) + offset, lesion_fraction=fraction, hair=30
        )
        for strategy in STRATEGIES:
            scheme = ("paper", "del_bino")[offset % 2]
            est = estimate_ita(img, strategy, scheme)
            assert est.ita is not None, est.undetermined_reason
            assert abs(est.ita - ita) <= 3.0, (strategy, diagnosis, fraction, est)
            if _boundary_distance(ita, scheme) >= 3.0:
                assert est.category == categorize(ita, scheme)


def test_masking_matters_a_naive_mean_is_far_off():
    img, _ = draw_skin(128, 10.0, "malignant", seed=3, lesion_fraction=0.4, hair=30)
    lab = rgb2lab(np.asarray(img))
    naive = math.degrees(math.atan((lab[..., 0].mean() - 50) / lab[..., 2].mean()))
    assert abs(naive - 10.0) > 10.0
    assert abs(estimate_ita(img, "whole").ita - 10.0) <= 3.0


@pytest.mark.parametrize(
    ("ita", "paper", "del_bino"),
    [
        (-30.0, "brown", "brown"),
        (-30.000001, "darker", "dark"),
        (10.0, "brown", "tan"),
        (9.999999, "brown", "brown"),
        (28.0, "lighter", "intermediate"),
        (27.999999, "brown", "tan"),
        (41.0, "lighter", "light"),
        (55.0, "lighter", "very light"),
        (54.999999, "lighter", "light"),
        (-90.0, "darker", "dark"),
        (90.0, "lighter", "very light"),
    ],
)
def test_boundaries_follow_half_open_intervals(ita, paper, del_bino):
    assert categorize(ita) == categorize(ita, "paper") == paper
    assert categorize(ita, "del_bino") == del_bino


def test_custom_scheme_and_bad_schemes():
    scheme = ([0.0, 30.0], ["low", "mid", "high"])
    assert [categorize(x, scheme) for x in (-1.0, 0.0, 29.9, 30.0)] == ["low", "mid", "mid", "high"]
    with pytest.raises(ConfigError, match="strictly increasing"):
        categorize(5.0, ([30.0, 0.0], ["a", "b", "c"]))
    with pytest.raises(ConfigError, match="one more name"):
        categorize(5.0, ([0.0], ["a"]))
    with pytest.raises(ConfigError, match="del_bino"):
        categorize(5.0, "fitzpatrick")


@pytest.mark.parametrize("ita", [-60.0, -30.0, 10.0, 28.0, 41.0, 55.0, 70.0])
def test_uniform_skin_patch_measures_its_colour(ita):
    est = estimate_ita(_uniform(*lab_for_ita(ita)), "whole")
    assert abs(est.ita - ita) < 0.5 and est.lesion_fraction == 0.0 and est.spread < 0.5


def _uniform(lightness, a, b, size=32):
    from skimage.color import lab2rgb

    rgb = lab2rgb(np.full((size, size, 3), (lightness, a, b)))
    return (rgb * 255 + 0.5).astype(np.uint8)


def test_estimate_fields_and_inputs(tmp_path):
    img, mask = draw_skin(96, 35.0, "benign", seed=2, lesion_fraction=0.2)
    path = tmp_path / "x.jpg"
    img.save(path, quality=95)
    for source in (img, np.asarray(img), np.asarray(img) / 255.0, path, str(path)):
        est = estimate_ita(source)
        assert abs(est.ita - 35.0) <= 3.0 and est.category == "lighter" and est.scheme == "paper"
        assert est.undetermined_reason is None and est.spread >= 0.0
        assert est.lesion_fraction == pytest.approx(mask.mean(), abs=0.05)
        assert 0.5 < est.skin_fraction < 0.85 and est.method.startswith("border")


def test_large_images_work_on_a_small_copy():
    img, mask = draw_skin((1024, 768), -45.0, "malignant", seed=4, lesion_fraction=0.25, hair=40)
    est = estimate_ita(img, "center_excluded")
    assert "256x192" in est.method and abs(est.ita + 45.0) <= 3.0
    found = lesion_mask(img)
    assert found.shape == (768, 1024)
    assert (found & mask).sum() / (found | mask).sum() > 0.85


@pytest.mark.parametrize("hair", [0, 30])
def test_lesion_mask_matches_truth(hair):
    for seed, ita in enumerate((-55.0, -5.0, 45.0)):
        img, mask = draw_skin(128, ita, "malignant", seed=seed, lesion_fraction=0.15, hair=hair)
        found = lesion_mask(img)
        assert found.shape == mask.shape
        assert (found & mask).sum() / (found | mask).sum() > 0.75


def test_no_lesion_on_plain_or_hairy_skin():
    for seed, ita in enumerate((-55.0, -5.0, 45.0)):
        img, _ = draw_skin(128, ita, seed=seed, lesion_fraction=0.0, hair=30)
        assert lesion_mask(img).mean() < 0.01
        assert estimate_ita(img).lesion_fraction < 0.01


def test_no_usable_skin_gives_none_and_a_reason():
    lesion = np.asarray(draw_skin(64, -40.0, seed=1, lesion_fraction=0.0, texture=False)[0]).copy()
    lesion[:, 2:] = _uniform(*lab_for_ita(-40.0))[0, 0] // 3  # 97 % dark lesion, a 2 px skin strip
    est = estimate_ita(lesion, "whole")
    assert est.ita is None and est.category is None and math.isnan(est.spread)
    assert "no usable skin" in est.undetermined_reason
    black = estimate_ita(np.zeros((32, 32, 3), np.uint8) + np.uint8([0, 0, 1]))
    assert black.ita is None and "b*" in black.undetermined_reason


@pytest.mark.parametrize("mode", ["L", "LA", "I", "I;16", "1"])
def test_grayscale_modes_are_refused(mode):
    with pytest.raises(DataError, match="colour"):
        estimate_ita(Image.new(mode, (16, 16)))


def test_gray_rgb_and_2d_arrays_are_refused(tmp_path):
    gray = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16)[..., None], 3, axis=2)
    with pytest.raises(DataError, match="R == G == B"):
        estimate_ita(gray)
    with pytest.raises(DataError, match="colour"):
        estimate_ita(gray[..., 0])
    Image.fromarray(gray[..., 0]).save(tmp_path / "g.png")
    with pytest.raises(DataError, match=r"g\.png.*colour"):
        estimate_ita(tmp_path / "g.png")


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.jpg"):
        estimate_ita(bad)
    with pytest.raises(DataError, match="missing.png"):
        estimate_ita(tmp_path / "missing.png")
    with pytest.raises(ConfigError, match="strategy"):
        estimate_ita(np.zeros((8, 8, 3), np.uint8), "corners")
