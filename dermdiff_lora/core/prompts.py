"""The one prompt builder: a template over metadata columns plus value maps.

Training captions, validation grids, generation and rebalancing all build their prompts here, from the
template and value maps saved with the adapter, so the same words are used everywhere.
"""

from __future__ import annotations

import itertools
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .errors import DataError

DEFAULT_TEMPLATE = "{benign_malignant} skin disease on {skin_tone} skin tone"
DEFAULT_VALUE_MAPS = {
    "skin_tone": {"0": "lighter", "1": "brown", "2": "darker"},
    "benign_malignant": {"benign": "benign", "malignant": "malignant"},
}


def normalize_value(value: object) -> str:
    """Metadata values as map keys: ``1``, ``1.0`` and ``"1"`` are all ``"1"``; missing is ``""``."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer():
            return str(int(value))
    text = str(value).strip()
    try:
        as_float = float(text)
    except ValueError:
        return text
    return str(int(as_float)) if as_float.is_integer() and "." in text else text


@dataclass(frozen=True)
class PromptBuilder:
    template: str = DEFAULT_TEMPLATE
    value_maps: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: DEFAULT_VALUE_MAPS)

    @property
    def columns(self) -> list[str]:
        """The metadata columns the template reads, in order."""
        names = [name for _, name, _, _ in string.Formatter().parse(self.template) if name]
        return list(dict.fromkeys(names))

    def word(self, column: str, value: object) -> str:
        """The word a column's raw value becomes in the prompt (through its value map, if any)."""
        key = normalize_value(value)
        if not key:
            raise DataError(f"column {column!r} has an empty value; fill it or drop the row")
        mapping = self.value_maps.get(column)
        if mapping is None:
            return key
        if key in mapping:
            return mapping[key]
        if key in mapping.values():
            return key
        raise DataError(f"column {column!r}: value {key!r} has no entry in prompts.value_maps.{column} "
                        f"(known: {', '.join(mapping)})")

    def build(self, row: Mapping[str, object]) -> str:
        """The caption for one metadata row (every template column must be present)."""
        missing = [c for c in self.columns if c not in row]
        if missing:
            raise DataError(f"prompt template needs column(s) {', '.join(missing)}; "
                            f"available: {', '.join(map(str, row))}")
        return self.template.format(**{c: self.word(c, row[c]) for c in self.columns})

    def choices(self, column: str) -> list[str]:
        """The distinct words a column can produce (from its value map), in map order."""
        mapping = self.value_maps.get(column)
        if not mapping:
            raise DataError(f"column {column!r} has no value map: give its values in prompts.value_maps")
        return list(dict.fromkeys(mapping.values()))

    def grid(self, columns: Sequence[str] | None = None) -> list[tuple[dict[str, str], str]]:
        """Every combination of the template columns' words with its prompt (``columns`` sets the order)."""
        columns = list(columns or self.columns)
        if sorted(columns) != sorted(self.columns):
            raise DataError(f"grid columns {', '.join(columns)} must be exactly the template's columns "
                            f"({', '.join(self.columns)}) in {self.template!r}")
        cells = []
        for combo in itertools.product(*(self.choices(c) for c in columns)):
            words = dict(zip(columns, combo))
            cells.append((words, self.template.format(**words)))
        return cells

    def to_dict(self) -> dict:
        return {"template": self.template, "value_maps": {k: dict(v) for k, v in self.value_maps.items()}}


def from_config(prompts_cfg) -> PromptBuilder:
    """A builder from the config's ``prompts`` section (template may be empty: captions come from a column)."""
    return PromptBuilder(prompts_cfg.template or "", prompts_cfg.value_maps)
