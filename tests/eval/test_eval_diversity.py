"""MS-SSIM diversity: torchmetrics' value at 192 px, 1 for identical images, the right number of scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_synth import lesion_set

from dermdiff_lora.core.errors import ConfigError
from dermdiff_lora.eval.diversity import (
    MS_SSIM_BETAS,
    mean_ms_ssim,
    ms_ssim_betas,
    ms_ssim_scales,
    sample_pairs,
)
from dermdiff_lora.eval.features import prepare


@pytest.mark.parametrize(("size", "scales"), [(11, 1), (32, 2), (64, 3), (160, 4), (175, 4), (176, 5), (512, 5)])
def test_scale_count_fits_the_image_size(size, scales):
    assert ms_ssim_scales(size) == scales


def test_too_small_images_are_refused():
    with pytest.raises(ConfigError, match="too small"):
        ms_ssim_scales(10)


def test_fewer_scales_use_the_first_weights_renormalised():
    assert ms_ssim_betas(5) == MS_SSIM_BETAS
    betas = ms_ssim_betas(3)
    assert sum(betas) == pytest.approx(1.0)
    np.testing.assert_allclose(np.array(betas) / betas[0], np.array(MS_SSIM_BETAS[:3]) / MS_SSIM_BETAS[0])


def test_mean_equals_torchmetrics_at_192_px():
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    images = lesion_set(0, 4, size=192)
    x = prepare(images, 192).float() / 255
    expected = np.mean([float(multiscale_structural_similarity_index_measure(x[i:i + 1], x[j:j + 1],
                                                                             data_range=1.0))
                        for i in range(4) for j in range(i + 1, 4)])
    out = mean_ms_ssim(images)
    assert out["ms_ssim"] == pytest.approx(expected, rel=1e-6)
    assert (out["scales"], out["comparable_with_paper"], out["size"], out["pairs"]) == (5, True, 192, 6)


def test_identical_images_give_one_and_small_ones_are_flagged():
    image = lesion_set(1, 1, size=64)[0]
    out = mean_ms_ssim([image, image.copy(), image.copy()])
    assert out["ms_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert (out["scales"], out["comparable_with_paper"]) == (3, False)
    assert mean_ms_ssim(lesion_set(2, 3, size=64))["ms_ssim"] < 0.9
    assert mean_ms_ssim([image])["ms_ssim"] is None


def test_images_are_resized_to_the_common_size():
    images = lesion_set(3, 2, size=64) + lesion_set(4, 1, size=48)
    out = mean_ms_ssim(images)
    assert out["size"] == 48 and out["scales"] == 3
    x = prepare(images, 48).float() / 255
    assert torch.isfinite(x).all()


def test_pairs_beyond_the_cap_are_a_seeded_sample():
    assert len(sample_pairs(20, max_pairs=190)) == 190
    a, b, c = sample_pairs(20, 50, seed=1), sample_pairs(20, 50, seed=1), sample_pairs(20, 50, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len({tuple(p) for p in a}) == 50 and np.all(a[:, 0] < a[:, 1])
    out = mean_ms_ssim(lesion_set(5, 8, size=32), max_pairs=5, seed=1)
    assert (out["pairs"], out["pairs_total"]) == (5, 28)
