"""The training sets ``downstream`` compares ("arms"), all on the same real train split.

- ``real``: the real train images.
- ``real+resample``: plus duplicates of real train rows of each (label, tone) cell, as many per cell as the
  rebalance added there (drawn with replacement, seeded).
- ``real+lab``: plus real train images of the same label from the other tone groups, their skin shifted into
  the cell's tone group in CIELAB (``tone.labshift``: lesion pixels kept, smallest L* shift), as many per
  cell as the rebalance added there (sources drawn without replacement while they last, seeded; a source
  whose tone cannot be shifted is skipped for the next one).
- ``real+synthetic``: plus the rebalance folder's synthetic rows.

"As many as the rebalance added": the rebalance folder's synthetic rows per (label, tone) cell, so every
added arm trains on the same number of images per cell.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.errors import ConfigError
from ..core.fsutil import atomic_path
from ..tone.labshift import ShiftError, prepare, scheme_for, shift_to
from .samples import Sample

log = logging.getLogger(__name__)
ARMS = {"real": ("real_only", "real only"), "real+resample": ("real_resample", "real + resample"),
        "real+lab": ("real_lab", "real + LAB shift"), "real+synthetic": ("real_plus_synthetic", "real + synthetic")}
KEYS = {key: name for key, name in ARMS.values()}  # JSON key -> display name
LAB_FOLDER = "lab_images"


def parse_arms(text: str | Sequence[str] | None, groups: Sequence[str]) -> tuple[list[str], list[str]]:
    """(arm JSON keys in a fixed order, warnings) from ``"real,real+lab"``; ``"all"``/None: every arm that
    can run (real+lab needs tone groups named as ITA categories)."""
    lab_ok, warnings = True, []
    try:
        scheme_for(groups)
    except ConfigError as exc:
        lab_ok = False
        warnings.append(f"arm real+lab and the counterfactual flips are skipped: {exc}")
    if text is None or text == "all":
        names = [a for a in ARMS if lab_ok or a != "real+lab"]
    else:
        names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown or not names:
        raise ConfigError(f"--arms {text!r}: unknown arm(s) {unknown}; choose from {', '.join(ARMS)} or all")
    if "real+lab" in names and not lab_ok:
        scheme_for(groups)  # raises the clear error
    names = ["real", *[a for a in ARMS if a in names and a != "real"]]  # real is the reference
    return [ARMS[n][0] for n in names], warnings


def cell_counts(samples: Sequence[Sample]) -> dict[tuple[str, str], int]:
    """Images per (label, tone group): for the synthetic rows, what the rebalance added per cell."""
    return dict(Counter((s.label, s.group) for s in samples))


def _rng(seed: int, arm: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(arm.encode())])


def resample_arm(train: Sequence[Sample], added: Mapping[tuple[str, str], int], seed: int) -> tuple[list, dict]:
    """(train + duplicated real rows per cell, shortfall per cell with no real row to duplicate)."""
    rng, extra, short = _rng(seed, "real+resample"), [], {}
    for (label, group), n in sorted(added.items()):
        pool = [s for s in train if s.label == label and s.group == group]
        if not pool:
            short[f"{label}|{group}"] = n
            continue
        extra += [pool[i] for i in rng.integers(0, len(pool), size=n)]
    return list(train) + extra, short


@dataclass
class LabShifter:
    """Shifted copies of images, written once under ``folder`` and reused across seeds and arms."""

    folder: Path
    groups: Sequence[str]
    done: dict[tuple[str, str], Path | None] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.scheme = scheme_for(self.groups)

    def path(self, sample: Sample, target: str) -> Path | None:
        """The shifted copy of ``sample`` in group ``target`` (a PNG), or None where it cannot be made."""
        key = (str(sample.path), target)
        if key not in self.done:
            self.done[key] = self._make(sample, target)
        return self.done[key]

    def _make(self, sample: Sample, target: str) -> Path | None:
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in sample.file)
        out = self.folder / f"{stem}__to_{target.replace(' ', '_')}.png"
        try:
            shifted = shift_to(prepare(sample.path, self.scheme, name=sample.file), target, self.scheme)
        except ShiftError as exc:
            self.log.append({"file": sample.file, "target": target, "error": str(exc)})
            return None
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            Image.fromarray(shifted.rgb, "RGB").save(tmp, format="PNG")
        self.log.append({"file": sample.file, "target": target, "delta_l": round(shifted.delta_l, 3),
                         "ita_before": round(shifted.ita_before, 2), "ita_after": round(shifted.ita_after, 2)})
        return out


def lab_arm(train: Sequence[Sample], added: Mapping[tuple[str, str], int], seed: int,
            shifter: LabShifter) -> tuple[list, dict]:
    """(train + shifted copies per cell, shortfall per cell where too few sources could be shifted)."""
    rng, extra, short = _rng(seed, "real+lab"), [], {}
    for (label, group), n in sorted(added.items()):
        pool = [s for s in train if s.label == label and s.group != group]
        order = [pool[i] for i in rng.permutation(len(pool))]
        made: list[Sample] = []
        while len(made) < n:  # each source once, then again (the same copies) while short
            before = len(made)
            for source in order:
                if len(made) == n:
                    break
                path = shifter.path(source, group)
                if path is not None:
                    made.append(replace(source, path=path, file=f"{source.file}->{group}", group=group,
                                        split="train", synthetic=True))
            if len(made) == before:
                break
        if len(made) < n:
            short[f"{label}|{group}"] = n - len(made)
        extra += made
    return list(train) + extra, short


def arm_training_sets(arms: Sequence[str], train: list, synthetic: list, added: Mapping, seed: int,
                      shifter: LabShifter | None) -> dict[str, tuple[list, dict]]:
    """Each arm's training set for one seed, and its shortfall per cell."""
    out = {}
    for arm in arms:
        if arm == "real_only":
            out[arm] = (list(train), {})
        elif arm == "real_resample":
            out[arm] = resample_arm(train, added, seed)
        elif arm == "real_lab":
            out[arm] = lab_arm(train, added, seed, shifter)
        else:
            out[arm] = (list(train) + list(synthetic), {})
    return out
