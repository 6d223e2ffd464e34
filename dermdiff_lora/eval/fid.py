"""FID and KID from image features, overall and per cell (e.g. ("malignant", "darker")).

FID is the Fréchet distance between Gaussians fitted to the two feature sets (covariance with N-1, as
torchmetrics and pytorch-fid do). KID is the unbiased MMD² with the kernel k(x, y) = (x·y / d + 1)³,
averaged over random subsets of equal size drawn without replacement (seeded); its std is over subsets
(population std, as torchmetrics reports it).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from ..core.errors import ConfigError
from .features import ExtractorInfo

KID_MAX_SUBSET = 1000
KID_SUBSETS = 100
# FID's expectation depends on N (it is biased upwards at small N, and the covariance is rank-deficient
# when N <= D), so FIDs of cells of different sizes are not comparable; KID is unbiased at any N. A cell
# is flagged ``fid_unstable`` when its smaller side has fewer than max(FID_MIN_IMAGES, 2 * D) images.
FID_MIN_IMAGES = 50


def mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) with N-1 in the denominator, in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ConfigError(f"need a (N, D) feature matrix with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½).

    Tr((sigma1 sigma2)^½) is the sum of square roots of the eigenvalues of sigma1^½ sigma2 sigma1^½, a
    symmetric PSD matrix similar to sigma1 sigma2: its eigenvalues are real, so there is no imaginary part
    to drop (scipy's sqrtm leaves small ones), and tiny negative ones from rounding are clipped to 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ConfigError(f"shapes do not match: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}")
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fid_from_features(real: np.ndarray, generated: np.ndarray) -> float:
    """FID between two (N, D) feature matrices (each N >= 2)."""
    return frechet_distance(*mean_cov(real), *mean_cov(generated))


def poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x·y / d + 1)³ for every row pair: (len(x), len(y))."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with ``poly_kernel``: same-set means leave out the i == j terms."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ConfigError(f"unbiased MMD² needs at least 2 samples on each side, got {m} and {n}")
    kxx, kyy, kxy = poly_kernel(x, x), poly_kernel(y, y), poly_kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.sum() / (m * n))


def kid(real: np.ndarray, generated: np.ndarray, *, subset_size: int | None = None,
        subsets: int = KID_SUBSETS, seed: int = 0) -> dict:
    """KID mean and std over ``subsets`` subsets of ``subset_size`` (default min(1000, n_real, n_gen)).

    When the subset size equals both set sizes every subset is the whole set, so one is computed.
    """
    real, generated = np.asarray(real, np.float64), np.asarray(generated, np.float64)
    largest = min(len(real), len(generated))
    size = min(KID_MAX_SUBSET, largest) if subset_size is None else int(subset_size)
    if not 2 <= size <= largest:
        raise ConfigError(f"KID subset size {size} must be between 2 and the smaller set ({largest} images)")
    if subsets < 1:
        raise ConfigError(f"KID needs at least one subset, got {subsets}")
    if size == len(real) == len(generated):
        subsets = 1
    rng = np.random.default_rng(seed)
    scores = [mmd2_unbiased(real[rng.choice(len(real), size, replace=False)],
                            generated[rng.choice(len(generated), size, replace=False)])
              for _ in range(subsets)]
    return {"kid_mean": float(np.mean(scores)), "kid_std": float(np.std(scores)),
            "kid_subset_size": size, "kid_subsets": subsets}


def is_fid_unstable(n_real: int, n_generated: int, dim: int) -> bool:
    """True when the smaller set has fewer than max(FID_MIN_IMAGES, 2 * dim) images (see FID_MIN_IMAGES)."""
    return min(n_real, n_generated) < max(FID_MIN_IMAGES, 2 * dim)


def figures(real: np.ndarray, generated: np.ndarray, info: ExtractorInfo, *,
            kid_subset_size: int | None = None, kid_subsets: int = KID_SUBSETS, seed: int = 0) -> dict:
    """FID, KID and their context for one pair of sets; fid/kid are None when a side has < 2 images.

    A given ``kid_subset_size`` larger than a side is lowered to that side's size.
    """
    n_real, n_gen = len(real), len(generated)
    out: dict = {"extractor": info.name, "image_size": info.image_size, "n_real": n_real,
                 "n_generated": n_gen, "fid_unstable": is_fid_unstable(n_real, n_gen, info.dim)}
    if min(n_real, n_gen) < 2:
        out.update(fid=None, kid_mean=None, kid_std=None, kid_subset_size=None, kid_subsets=0)
        return out
    size = None if kid_subset_size is None else min(kid_subset_size, n_real, n_gen)
    out["fid"] = fid_from_features(real, generated)
    out.update(kid(real, generated, subset_size=size, subsets=kid_subsets, seed=seed))
    return out


def cell_name(cell: Sequence[str] | str) -> str:
    """``("benign", "darker")`` -> ``"benign|darker"``."""
    return cell if isinstance(cell, str) else "|".join(str(part) for part in cell)


def cell_figures(real: np.ndarray, real_cells: Sequence[Hashable], generated: np.ndarray,
                 generated_cells: Sequence[Hashable], info: ExtractorInfo, *,
                 kid_subset_size: int | None = None, kid_subsets: int = KID_SUBSETS,
                 seed: int = 0) -> dict:
    """``{"cells": {name: figures}, "overall": figures}``: one ``figures`` dict per cell seen on either side.

    ``real_cells[i]`` is the cell of ``real[i]`` (a tuple of strings); cells are in sorted order.
    """
    if len(real_cells) != len(real) or len(generated_cells) != len(generated):
        raise ConfigError("need one cell key per feature row on each side")
    real, generated = np.asarray(real, np.float64), np.asarray(generated, np.float64)
    real_keys = np.array([cell_name(c) for c in real_cells], dtype=object)
    gen_keys = np.array([cell_name(c) for c in generated_cells], dtype=object)
    kw = {"kid_subset_size": kid_subset_size, "kid_subsets": kid_subsets, "seed": seed}
    cells = {name: figures(real[real_keys == name], generated[gen_keys == name], info, **kw)
             for name in sorted(set(real_keys) | set(gen_keys))}
    return {"cells": cells, "overall": figures(real, generated, info, **kw)}
