"""How many images ``rebalance`` adds per group, and what that does to each tone group's label prior.

Groups are tuples of group-column values, one of which is the tone (``tone_index``); the rest of a key is
its "label" (for the default columns: the diagnosis). Targets:

- ``"equal_keep_prior"`` (the default): every tone group brought to the same size N, each with the label
  mix (e.g. the malignant share) of the whole input, so no tone group's label prior moves. Cell counts are
  N × share rounded by largest remainders (they sum to N); N is the smallest size at which no cell would
  need fewer images than it already has (rebalance only adds).
- ``"equal"``: every group up to the largest group's count (each tone group's label prior becomes uniform).
- a mapping ``group -> count``: those counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..core.errors import ConfigError

TARGETS = ("equal_keep_prior", "equal")
DEFAULT_TARGET = "equal_keep_prior"


def normalise_target(target: str | Mapping, n_columns: int) -> str | dict:
    """A target name, or a mapping with tuple-of-strings keys (one value per group column) and int counts."""
    if isinstance(target, str):
        if target not in TARGETS:
            raise ConfigError(f"rebalance target {target!r} must be 'equal_keep_prior', 'equal' or a "
                              "mapping group -> count")
        return target
    out = {}
    for key, count in target.items():
        key = tuple(str(k) for k in key) if isinstance(key, tuple) else (str(key),)
        if len(key) != n_columns:
            raise ConfigError(f"rebalance target key {key} must have one value per group column ({n_columns})")
        out[key] = int(count)
    return out


def _split(key, tone_index: int) -> tuple[object, object]:
    """(label part, tone) of a group key; a one-column key is its own tone."""
    if not isinstance(key, tuple):
        return (), key
    return key[:tone_index] + key[tone_index + 1:], key[tone_index]


def _join(label, tone, tone_index: int):
    return label[:tone_index] + (tone,) + label[tone_index:] if isinstance(label, tuple) and label else tone


def apportion(n: int, shares: Mapping) -> dict:
    """``n`` split by ``shares`` (summing to 1) with largest remainders: whole counts summing to ``n``."""
    raw = {k: n * s for k, s in shares.items()}
    out = {k: math.floor(v) for k, v in raw.items()}
    order = sorted(raw, key=lambda k: (-(raw[k] - out[k]), str(k)))
    for k in order[: n - sum(out.values())]:
        out[k] += 1
    return out


def keep_prior_goal(existing: Mapping, tone_index: int) -> dict:
    """Per group, the count of ``"equal_keep_prior"``: N per tone group with the input's label shares."""
    labels: dict = {}
    tones: dict = {}
    for key, n in existing.items():
        label, tone = _split(key, tone_index)
        labels[label] = labels.get(label, 0) + int(n)
        tones[tone] = tones.get(tone, 0) + int(n)
    total = sum(labels.values())
    if total == 0:
        return dict.fromkeys(existing, 0)
    shares = {label: n / total for label, n in labels.items() if n > 0}
    need = {label: max((int(n) for k, n in existing.items() if _split(k, tone_index)[0] == label), default=0)
            for label in shares}
    # a lower bound: rounding gives a cell at most ceil(N * share), so N * share > need - 1
    size = max(max(tones.values()), *(math.floor((need[lb] - 1) / s) + 1 for lb, s in shares.items()))
    while True:
        counts = apportion(size, shares)
        if all(counts[label] >= need[label] for label in shares):
            break
        size += 1
    goal = {_join(label, tone, tone_index): counts[label] for label in shares for tone in tones}
    return {**dict.fromkeys(existing, 0), **goal}


def plan_counts(existing: Mapping, target: str | Mapping = "equal", tone_index: int = -1) -> dict:
    """How many images each group lacks under ``target`` (see the module doc). ``tone_index`` is where
    the tone sits in a group key (``"equal_keep_prior"`` only)."""
    if isinstance(target, str):
        target = normalise_target(target, 0)
        if target == "equal":
            goal = dict.fromkeys(existing, max(existing.values(), default=0))
        else:
            size = len(next(iter(existing))) if existing and isinstance(next(iter(existing)), tuple) else 1
            goal = keep_prior_goal(existing, tone_index % size)
    else:
        goal = dict(target)
    if any(int(n) < 0 for n in [*goal.values(), *existing.values()]):
        raise ConfigError(f"rebalance counts must be >= 0: existing {dict(existing)}, target {goal}")
    return {g: max(0, int(goal.get(g, 0)) - int(existing.get(g, 0))) for g in {**existing, **goal}}


def label_priors(counts: Mapping, tone_index: int) -> dict[str, dict[str, float]]:
    """Per tone group, each label's share of that group's images (``"label" -> share``, 4 decimals)."""
    by_tone: dict[str, dict[str, int]] = {}
    for key, n in counts.items():
        label, tone = _split(key, tone_index)
        name = "/".join(map(str, label)) if isinstance(label, tuple) else str(label)
        by_tone.setdefault(str(tone), {})
        by_tone[str(tone)][name] = by_tone[str(tone)].get(name, 0) + int(n)
    return {tone: {label: round(n / total, 4) if (total := sum(c.values())) else 0.0 for label, n in c.items()}
            for tone, c in by_tone.items()}


def prior_change(existing: Mapping, added: Mapping, tone_index: int) -> dict:
    """Each tone group's label shares before rebalancing and after it (existing + added images)."""
    after = {k: int(existing.get(k, 0)) + int(added.get(k, 0)) for k in {**existing, **added}}
    return {"before": label_priors(existing, tone_index), "after": label_priors(after, tone_index)}


def prior_report(rows: list[Mapping], groups: list[str], tone_column: str, accepted: Mapping,
                 target: str | Mapping) -> dict:
    """The report's ``label_prior`` block: the target, and each tone group's label shares before and after
    (real + accepted synthetic images)."""
    index = list(groups).index(tone_column)
    existing: dict = {}
    for row in rows:
        key = tuple(str(row[c]) for c in groups)
        existing[key] = existing.get(key, 0) + 1
    name = target if isinstance(target, str) else "explicit counts"
    note = {"equal_keep_prior": "every tone group keeps the whole input's label shares",
            "equal": "every group filled to the largest: each tone group's label shares become equal"}
    return {"target": name, "note": note.get(name, "counts given per group"), "tone_column": tone_column,
            **prior_change(existing, accepted, index)}
