"""Skin tone per cell from ITA values: share in the prompted tone group, mean/std ITA, and the 1-D
Wasserstein distance between generated and real ITA.

The ITA values and the group scheme come from the caller (``categorize(ita) -> group name``, e.g. the
package's skintone ``categorize``); nothing is measured here. ITA None or NaN counts as undetermined:
such an image is out of its prompted group in ``in_group`` (share of all images) and left out of the
ITA statistics. Standard deviations are population (ddof 0).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

from ..core.errors import ConfigError
from .fid import cell_name


def _measured(itas: Sequence[float | None]) -> np.ndarray:
    """The ITA values that are not None or NaN."""
    values = np.array([np.nan if v is None else float(v) for v in itas], dtype=np.float64)
    return values[~np.isnan(values)]


def _side(itas: Sequence[float | None], prompted: str | None, categorize: Callable[[float], str] | None) -> dict:
    """n, undetermined, mean/std ITA and (with ``categorize``) the in-group share of one side of a cell."""
    values = _measured(itas)
    out = {"n": len(itas), "undetermined": len(itas) - len(values),
           "mean_ita": float(values.mean()) if len(values) else None,
           "std_ita": float(values.std()) if len(values) else None}
    if categorize is not None and prompted is not None and len(itas):
        out["in_group"] = sum(categorize(float(v)) == prompted for v in values) / len(itas)
    return out


def tone_stats(generated_ita: Sequence[float | None], generated_cells: Sequence[Hashable],
               real_ita: Sequence[float | None] = (), real_cells: Sequence[Hashable] = (), *,
               categorize: Callable[[float], str] | None = None,
               prompted_group: Callable[[Hashable], str | None] = lambda cell: cell[-1]) -> dict:
    """``{"cells": {name: stats}}``, stats = ``{"generated": side, "real": side, "wasserstein": w}``.

    A side has n, undetermined, mean_ita, std_ita and, with ``categorize``, ``in_group``: the share of its
    images whose ITA falls in the cell's prompted group (``prompted_group(cell)``, by default its last
    element). ``wasserstein`` is None unless both sides have a measured ITA.
    """
    from scipy.stats import wasserstein_distance

    if len(generated_ita) != len(generated_cells) or len(real_ita) != len(real_cells):
        raise ConfigError("need one cell key per ITA value on each side")
    gen_by, real_by = _group(generated_ita, generated_cells), _group(real_ita, real_cells)
    cells = {}
    for name in sorted(set(gen_by) | set(real_by)):
        (cell, gen), (_, real) = gen_by.get(name, (None, [])), real_by.get(name, (None, []))
        prompted = prompted_group(cell if cell is not None else real_by[name][0])
        g, r = _measured(gen), _measured(real)
        cells[name] = {"prompted_group": prompted, "generated": _side(gen, prompted, categorize),
                       "real": _side(real, prompted, categorize),
                       "wasserstein": float(wasserstein_distance(g, r)) if len(g) and len(r) else None}
    return {"cells": cells}


def _group(itas: Sequence[float | None], cells: Sequence[Hashable]) -> dict[str, tuple[Hashable, list]]:
    """cell name -> (the cell key, its ITA values)."""
    out: dict[str, tuple[Hashable, list]] = {}
    for ita, cell in zip(itas, cells):
        out.setdefault(cell_name(cell), (cell, []))[1].append(ita)
    return out
