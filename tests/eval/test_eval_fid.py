"""FID and KID against known answers: the closed form for diagonal Gaussians, torchmetrics' own FID on the
same features, and an unbiased MMD² written out with loops."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from eval_synth import lesion_set, noise_set
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dermdiff_lora.core.errors import ConfigError
from dermdiff_lora.eval.features import ExtractorInfo, extract, load_extractor, prepare
from dermdiff_lora.eval.fid import (
    FID_MIN_IMAGES,
    cell_figures,
    fid_from_features,
    frechet_distance,
    kid,
    mmd2_unbiased,
)


class Identity(nn.Module):
    """A torchmetrics ``feature=`` module whose 'images' already are the features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def torchmetrics_fid(feature: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=feature)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = np.sum((m1 - m2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_frechet_distance_equals_the_sqrtm_formula_for_full_covariances(seed, dim):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(dim, dim)), rng.normal(size=(dim, dim))
    s1, s2 = a @ a.T + 0.1 * np.eye(dim), b @ b.T + 0.1 * np.eye(dim)
    m1, m2 = rng.normal(size=dim), rng.normal(size=dim)
    expected = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-7, abs=1e-9)
    assert frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-8)


def test_fid_equals_torchmetrics_on_the_same_features():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
    fake = rng.normal(0.3, 1.2, size=(150, 16)) @ rng.normal(size=(16, 16))
    expected = torchmetrics_fid(Identity(16), torch.from_numpy(real), torch.from_numpy(fake))
    assert fid_from_features(real, fake) == pytest.approx(expected, rel=1e-6)


def test_fid_equals_torchmetrics_fed_the_tiny_extractor_itself():
    module, info = load_extractor("tiny-dinov2")
    real, fake = lesion_set(0, 40), noise_set(1, 40)
    ours = fid_from_features(extract(module, real), extract(module, fake))
    expected = torchmetrics_fid(module, prepare(real, info.image_size), prepare(fake, info.image_size))
    assert ours == pytest.approx(expected, rel=1e-6)


def hand_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(a, b) = (a·b/d + 1)³, term by term."""
    d, m, n = x.shape[1], len(x), len(y)

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_equals_the_hand_computed_unbiased_mmd2():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.5, 1.0, size=(7, 5))
    out = kid(x, y, subset_size=7)
    assert out["kid_mean"] == pytest.approx(hand_mmd2(x, y), rel=1e-12)
    assert out["kid_std"] == 0.0 and out["kid_subsets"] == 1 and out["kid_subset_size"] == 7
    z = rng.normal(size=(9, 5))
    assert mmd2_unbiased(x, z) == pytest.approx(hand_mmd2(x, z), rel=1e-12)


def test_kid_of_equal_sets_matches_torchmetrics_poly_mmd():
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(12, 8)), rng.normal(size=(12, 8))
    expected = float(poly_mmd(torch.from_numpy(x), torch.from_numpy(y)))
    assert mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-10)


def test_kid_subsets_are_seeded_and_sized():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(20, 4))
    a, b = kid(x, y, subsets=10, seed=5), kid(x, y, subsets=10, seed=5)
    assert a == b and a["kid_subset_size"] == 20 and a["kid_subsets"] == 10 and a["kid_std"] > 0
    assert kid(x, y, subsets=10, seed=6) != a
    with pytest.raises(ConfigError, match="subset size"):
        kid(x, y, subset_size=25)


def test_cell_figures_report_each_cell_with_its_context():
    rng = np.random.default_rng(5)
    info = ExtractorInfo("test", "test", 32, 4)
    real = rng.normal(size=(70, 4))
    fake = rng.normal(size=(71, 4))
    real_cells = [("benign", "darker")] * 60 + [("malignant", "darker")] * 10
    fake_cells = [("benign", "darker")] * 60 + [("malignant", "darker")] * 10 + [("malignant", "lighter")]
    out = cell_figures(real, real_cells, fake, fake_cells, info, kid_subsets=5)
    assert list(out["cells"]) == ["benign|darker", "malignant|darker", "malignant|lighter"]
    big, small, lone = (out["cells"][k] for k in out["cells"])
    for fig in (big, small, lone, out["overall"]):
        assert {"extractor", "image_size", "n_real", "n_generated", "kid_subset_size", "fid_unstable",
                "fid", "kid_mean", "kid_std"} <= set(fig)
        assert fig["extractor"] == "test" and fig["image_size"] == 32
    assert (big["n_real"], big["n_generated"], big["fid_unstable"]) == (60, 60, False)
    assert big["fid"] == pytest.approx(fid_from_features(real[:60], fake[:60]))
    assert big["kid_subset_size"] == 60
    assert (small["n_real"], small["n_generated"], small["fid_unstable"]) == (10, 10, True)
    assert small["fid"] > 0 and small["kid_subset_size"] == 10
    assert lone["n_real"] == 0 and lone["fid"] is None and lone["kid_mean"] is None and lone["fid_unstable"]
    assert out["overall"]["n_real"] == 70 and out["overall"]["n_generated"] == 71
    assert FID_MIN_IMAGES == 50  # the documented threshold the cells above were sized against
