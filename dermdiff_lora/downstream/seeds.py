"""Average fairness reports of several training seeds into one report of the same schema.

Every metric ENTRY becomes ``{"value": mean over seeds, "sd_over_seeds", "by_seed", "n_seeds", "n_valid",
"reason"}``: the spread from training randomness. It has no ``low``/``high``: a mean of per-seed interval
ends is not an interval of anything, so each seed's own bootstrap intervals stay in that seed's report. A
worst-group entry names the group that was worst in most seeds. A threshold chosen per seed (Youden on each
seed's validation predictions) is kept per seed (``value_by_seed``), never averaged into a rule no seed
used; other numbers equal in every seed stay as they are, differing ones become their mean with ``by_seed``;
differing strings and lists become the list of per-seed values. ``format_table``, ``compare_table`` and
``save_chart`` print such a report as mean ± standard deviation over seeds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..core.errors import DataError


def _number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _mean(values: Sequence[Any]) -> float | None:
    defined = [float(v) for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _entry(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The mean of one metric ENTRY over seeds, with the per-seed values and their standard deviation."""
    values = [e.get("value") for e in entries]
    defined = [v for v in values if v is not None]
    out = {"value": _mean(values), "n_seeds": len(defined),
           "n_valid": min(int(e.get("n_valid") or 0) for e in entries),
           "reason": next((e.get("reason") for e in entries if e.get("reason")), None) if not defined else None,
           "by_seed": values,
           "sd_over_seeds": float(np.std(defined, ddof=1)) if len(defined) > 1 else None}
    if any("group" in e for e in entries):
        groups = [e.get("group") for e in entries if e.get("group") is not None]
        out["group"] = Counter(groups).most_common(1)[0][0] if groups else None
        out["group_by_seed"] = [e.get("group") for e in entries]
    return out


def _merge(items: Sequence[Any]) -> Any:
    first = items[0]
    if all(isinstance(x, Mapping) for x in items):
        if "value" in first and ("low" in first or "reason" in first):
            return _entry(items)
        keys = list(dict.fromkeys(k for x in items for k in x))
        return {k: _merge([x.get(k) for x in items]) for k in keys}
    if all(x == first for x in items):
        return first
    if all(_number(x) for x in items):
        return {"mean": _mean(items), "by_seed": list(items)}
    return {"by_seed": list(items)}


def average_reports(reports: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """One report: the mean over ``reports`` (one per seed, same test set, same schema)."""
    if not reports or len(reports) != len(seeds):
        raise DataError(f"got {len(reports)} report(s) for {len(seeds)} seed(s); give one report per seed")
    if len({r.get("schema") for r in reports}) != 1:
        raise DataError("the reports have different schemas; average reports of one task only")
    out = _merge(list(reports))
    if "threshold" in out:  # each seed applied its own threshold: keep them, no mean
        th = dict(out["threshold"])
        for key in ("value", "youden_j"):
            if isinstance(th.get(key), dict):
                th[f"{key}_by_seed"] = th.pop(key)["by_seed"]
        out["threshold"] = th
    out["seeds"] = [int(s) for s in seeds]
    out["averaged"] = ("mean and standard deviation over seeds of each value (training randomness); each "
                       "seed's bootstrap intervals (test-set sampling) are in its own report")
    return out
