"""Per-sample weights that make a weighted sampler draw every group (e.g. skin tone) equally often."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

from ..core.errors import ConfigError, DataError

log = logging.getLogger(__name__)


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


def sampling_weights(index, data_cfg) -> tuple[list[float] | None, dict[str, float] | None]:
    """(per-image weights, expected mix by "tone/diagnosis" label) of ``data.balance`` over the records of a
    ``dataset.DatasetIndex``, capped by ``data.balance_cap``; (None, None) without balancing. Logs the mix
    and warns about small (diagnosis, tone) groups (``small_groups``)."""
    if data_cfg.balance == "none":
        return None, None
    columns = [data_cfg.tone_column] + ([data_cfg.diagnosis_column] if data_cfg.balance == "tone_x_diagnosis" else [])
    missing = [c for c in columns if c not in index.records[0].row]
    if missing:
        raise ConfigError(f"data.balance={data_cfg.balance} needs column(s) {', '.join(missing)}; set "
                          "data.tone_column / data.diagnosis_column")
    groups = index.groups(columns)
    weights = group_weights(groups, cap=data_cfg.balance_cap)
    mix = expected_mix(groups, weights)
    log.info("balanced sampling (%s, cap %s): %s", data_cfg.balance, data_cfg.balance_cap, format_mix(mix))
    cells = [data_cfg.diagnosis_column, data_cfg.tone_column]
    cells = [c for c in cells if c in index.records[0].row]
    small = small_groups(index.groups(cells), weights, data_cfg.balance_min_group)
    if small:
        named = "; ".join(f"{' × '.join(f'{c}={v}' for c, v in zip(cells, g))}: {n} image(s), each drawn "
                          f"{w:.1f}× as often as an average image" for g, (n, w) in small.items())
        log.warning("balanced sampling repeats the images of %d small group(s) (fewer than data.balance_min_group"
                    "=%d): %s. A handful of patients' photos shown this often can be memorised: add images, "
                    "lower data.balance_cap, or check generated images against them (evaluate's memorisation "
                    "check)", len(small), data_cfg.balance_min_group, named)
    return weights, {"/".join(k): v for k, v in mix.items()}


def small_groups(groups: Sequence[Hashable], weights: Sequence[float], min_size: int) -> dict:
    """``{group: (images, largest weight of its images)}`` for every group with fewer than ``min_size``."""
    if not min_size:
        return {}
    sizes = Counter(groups)
    heaviest: dict[Hashable, float] = {}
    for g, w in zip(groups, weights):
        heaviest[g] = max(heaviest.get(g, 0.0), float(w))
    return {g: (n, heaviest[g]) for g, n in sorted(sizes.items(), key=lambda kv: (kv[1], str(kv[0])))
            if n < min_size}
