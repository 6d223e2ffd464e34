"""Diversity of an image set: mean pairwise MS-SSIM (lower = more diverse).

Computed with torchmetrics' ``multiscale_structural_similarity_index_measure`` (11-px Gaussian kernel,
sigma 1.5, data range 1, its default ``normalize="relu"``) on RGB images resized to one common square
size. Five scales (the standard, paper-comparable MS-SSIM) need sides of at least 176 px: after four
halvings the side must still exceed kernel - 1 = 10 px. Smaller images use the most scales that fit,
with the first standard weights renormalised to sum 1, and are flagged ``comparable_with_paper: False``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..core.errors import ConfigError
from .features import prepare

MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
KERNEL_SIZE = 11
MAX_PAIRS = 1000


def ms_ssim_scales(size: int, kernel_size: int = KERNEL_SIZE) -> int:
    """Most scales (1-5) an image side of ``size`` px allows.

    k scales need size // 2**(k-1) > kernel_size - 1, and torchmetrics' own checks (size >= 2**k and
    size // max(1, k-1)**2 > kernel_size - 1) to pass; the latter is stricter only for k = 4 (88-98 px).
    """
    for k in range(len(MS_SSIM_BETAS), 0, -1):
        limit = kernel_size - 1
        if size >= 2 ** k and size // 2 ** (k - 1) > limit and size // max(1, k - 1) ** 2 > limit:
            return k
    raise ConfigError(f"images of {size} px are too small for MS-SSIM with a {kernel_size}-px kernel; "
                      f"need more than {kernel_size - 1} px a side")


def ms_ssim_betas(scales: int) -> tuple[float, ...]:
    """The standard weights for 5 scales; for fewer, the first ``scales`` weights renormalised to sum 1."""
    if scales == len(MS_SSIM_BETAS):
        return MS_SSIM_BETAS
    head = MS_SSIM_BETAS[:scales]
    return tuple(b / sum(head) for b in head)


def sample_pairs(n: int, max_pairs: int = MAX_PAIRS, seed: int = 0) -> np.ndarray:
    """(P, 2) index pairs i < j: all of them when n(n-1)/2 <= max_pairs, else ``max_pairs`` distinct pairs
    drawn at random (seeded), sorted."""
    total = n * (n - 1) // 2
    if total <= max_pairs:
        return np.stack(np.triu_indices(n, 1), axis=1)
    rng, chosen = np.random.default_rng(seed), set()
    while len(chosen) < max_pairs:
        i, j = (int(v) for v in rng.integers(0, n, size=2))
        if i != j:
            chosen.add((min(i, j), max(i, j)))
    return np.array(sorted(chosen))


def common_size(images: Sequence[Image.Image]) -> int:
    """The smallest side among the images (the size they are all resized to by default)."""
    return min(min(image.size) for image in images)


def pairwise_ms_ssim(images: torch.Tensor, pairs: np.ndarray, scales: int,
                     batch_size: int = 64) -> np.ndarray:
    """MS-SSIM of each pair of ``images`` (uint8 or 0-1 float, N x 3 x S x S), as a (P,) array."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms_ssim

    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = torch.as_tensor(pairs[start:start + batch_size])
        values = ms_ssim(x[chunk[:, 0]], x[chunk[:, 1]], kernel_size=KERNEL_SIZE, data_range=1.0,
                         betas=ms_ssim_betas(scales), reduction="none")
        out.append(values.double().reshape(-1).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def mean_ms_ssim(images: Sequence[Image.Image], *, size: int | None = None, max_pairs: int = MAX_PAIRS,
                 seed: int = 0) -> dict:
    """Mean pairwise MS-SSIM of ``images`` resized (PIL bicubic) to ``size`` (default: smallest side).

    Returns ``ms_ssim`` (None for fewer than 2 images), ``scales``, ``comparable_with_paper``, ``size``,
    ``pairs`` used and ``pairs_total``.
    """
    if max_pairs < 1:
        raise ConfigError(f"max_pairs must be at least 1, got {max_pairs}")
    n = len(images)
    if n == 0:
        return {"ms_ssim": None, "scales": None, "comparable_with_paper": False, "size": size,
                "pairs": 0, "pairs_total": 0}
    size = common_size(images) if size is None else int(size)
    scales = ms_ssim_scales(size)
    pairs = sample_pairs(n, max_pairs, seed)
    values = pairwise_ms_ssim(prepare(images, size), pairs, scales) if len(pairs) else np.zeros(0)
    return {"ms_ssim": float(values.mean()) if len(values) else None, "scales": scales,
            "comparable_with_paper": scales == len(MS_SSIM_BETAS), "size": size,
            "pairs": int(len(pairs)), "pairs_total": n * (n - 1) // 2}
