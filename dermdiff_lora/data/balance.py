"""Per-sample weights that make a weighted sampler draw every group (e.g. skin tone) equally often."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

from ..core.errors import ConfigError, DataError


def group_weights(groups: Sequence[Hashable], cap: float | None = None) -> list[float]:
    """Weight per sample ∝ 1 / (its group's size), scaled to mean 1.

    Drawn with replacement in proportion to these weights, every group is expected to make up the same
    share. ``cap`` (>= 1) bounds max weight / min weight: a group with n_g samples gets weight
    ∝ min(1/n_g, cap/n_max), so groups smaller than n_max/cap are drawn only ``cap`` times as often per
    sample as the largest group, and their expected share stays below uniform (∝ n_g·cap/n_max); see
    ``expected_mix``. ``cap=1`` keeps the natural frequencies.
    """
    if not groups:
        raise DataError("group_weights: no samples; the dataset is empty")
    if cap is not None and not cap >= 1.0:
        raise ConfigError(f"balance cap={cap} must be >= 1 (the largest allowed max/min weight ratio)")
    sizes = Counter(groups)
    largest = max(sizes.values())
    per_group = {g: 1.0 / n if cap is None else min(1.0 / n, cap / largest) for g, n in sizes.items()}
    raw = [per_group[g] for g in groups]
    scale = len(raw) / sum(raw)
    return [w * scale for w in raw]


def expected_mix(groups: Sequence[Hashable], weights: Sequence[float]) -> dict[Hashable, float]:
    """Each group's expected share of the draws of a sampler using ``weights`` (shares sum to 1)."""
    if len(groups) != len(weights):
        raise DataError(f"expected_mix: {len(groups)} groups but {len(weights)} weights; pass one per sample")
    totals: dict[Hashable, float] = {}
    for g, w in zip(groups, weights):
        totals[g] = totals.get(g, 0.0) + float(w)
    whole = sum(totals.values())
    return {g: totals[g] / whole for g in sorted(totals, key=str)}


def format_mix(mix: Mapping[Hashable, float]) -> str:
    """One log line, e.g. ``expected group mix per epoch: brown 33.3% · darker 33.3% · lighter 33.3%``."""
    return "expected group mix per epoch: " + " · ".join(f"{g} {share:.1%}" for g, share in mix.items())
