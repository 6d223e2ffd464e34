"""What rebalance reads: the input rows of any source with their tones, read as training reads them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import DataError
from ..data.sources import load_table
from ..data.tables import FILE_COLUMNS, IMAGE_SUFFIXES, Table
from ..data.tones import resolve_tones
from .audit import pick_column


def read_input(data_cfg, groups: Sequence[str], tone_column: str, value_map) -> tuple[Table, object]:
    """The input rows (any source) with their tone, given or estimated as training reads it; rows
    without a value in a group column are left out and counted."""
    data_cfg = dataclasses.replace(data_cfg, tone_column=tone_column)
    table = load_table(data_cfg)
    source = table.origin.get("metadata") or table.origin.get("dataset")
    columns = list(dict.fromkeys(k for r in table.rows for k in r))
    for column in groups:
        if column != tone_column:
            pick_column(columns, column, source)
    resolve_tones(table, data_cfg, value_map, source)
    for column in groups:
        table.keep([bool(r.get(column)) for r in table.rows], f"no {column} value")
    if not table.rows:
        raise DataError(f"{source}: no rows left to rebalance ({dict(table.left_out)})")
    return table, data_cfg


def real_names(table: Table) -> tuple[str, list[str], list[str]]:
    """(output file column, its value per real row, the file name of each real image in the output)."""
    column = table.file_column if table.file_column in FILE_COLUMNS else "file_name"
    files = []
    for ref, key in zip(table.images, table.keys):
        has_suffix = Path(key).suffix.lower() in IMAGE_SUFFIXES
        files.append(key if has_suffix else key + (ref.suffix if isinstance(ref, Path) else ".png"))
    return column, (table.keys if column == table.file_column else files), files


def input_base(data_cfg) -> Path | None:
    if data_cfg.dir:
        return Path(data_cfg.dir).expanduser()
    return Path(data_cfg.metadata).expanduser().parent if data_cfg.metadata else None
