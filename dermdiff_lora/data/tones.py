"""Each row's skin-tone group: given by the metadata, else estimated by the ITA audit, else left out.

A tone in the metadata (``data.tone_column``; a preset's Fitzpatrick type already mapped to a group) wins.
Rows without one take the group the audit measured (``data.tones``: the audit's ``tones.csv``, joined on
the metadata's file value, with or without its image suffix), unless ``data.unknown_tone=drop``. Rows whose
tone stays unknown (undetermined by ITA, or not in the audit) are left out and counted. Every kept row gets
``tone_source``: ``given`` or ``estimated``. The audit (a higher layer) writes the file; this module only
reads it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from ..core.config import TONE_GROUPS
from ..core.errors import DataError
from .tables import Table, file_stem, read_table

ITA_GROUPS = "ITA of the skin around the lesion (paper scheme: darker < -30°, brown -30° to 28°, lighter >= 28°)"


def read_tones(path: Path) -> dict[str, str]:
    """``{file: category}`` from the audit's per-image file (category ``""``: undetermined); the file must
    use the paper's three groups."""
    if not path.is_file():
        raise DataError(f"data.tones: {path} does not exist; run `dermdiff-lora audit` first (it writes "
                        "<dataset>_audit/tones.csv)")
    rows = read_table(path)
    if not {"file", "category"} <= set(rows[0]):
        raise DataError(f"{path} is not the audit's tones file (needs columns file and category; found "
                        f"{', '.join(rows[0])})")
    summary = path.with_name(f"{path.stem}_summary.json")
    scheme = json.loads(summary.read_text()).get("scheme") if summary.is_file() else None
    other = sorted({r["category"] for r in rows} - {*TONE_GROUPS, ""})
    if (scheme and scheme != "paper") or other:
        raise DataError(f"{path} holds tone categories of scheme {scheme or ', '.join(other)!s}, not the paper's "
                        f"{', '.join(TONE_GROUPS)}: rerun the audit with --scheme paper")
    return {r["file"]: r["category"] for r in rows}


def _lookup(tones: Mapping[str, str], stems: Mapping[str, str], key: str) -> str | None:
    if key in tones:
        return tones[key]
    return stems.get(file_stem(key))


def resolve_tones(table: Table, data_cfg, value_map: Mapping[str, str] | None, source: str) -> None:
    """Fill ``data.tone_column`` and ``tone_source`` of every row; drop (and count) rows without a tone.

    Tones are written in the column's own codes where its value map has one (``lighter`` → ``0``), so
    given, preset and estimated tones form the same groups."""
    column = data_cfg.tone_column
    code = {word: key for key, word in (value_map or {}).items()}  # estimates in the metadata's own codes
    given = [code.get(v, v) for v in (r.get(column, "") for r in table.rows)]
    unknown = [i for i, g in enumerate(given) if not g]
    report = {"column": column, "given": len(given) - len(unknown), "estimated": 0, "left_out": {},
              "given_by": table.origin.get("tone_given_by", f"the metadata's {column} column")}
    estimates: list[str | None] = [None] * len(given)
    if unknown and data_cfg.unknown_tone == "estimate":
        if not data_cfg.tones:
            raise DataError(_needs_audit(table, data_cfg, source, len(unknown)))
        path = Path(data_cfg.tones).expanduser()
        tones = read_tones(path)
        stems = {file_stem(k): v for k, v in tones.items()}
        for i in unknown:
            estimates[i] = _lookup(tones, stems, table.keys[i])
        if all(estimates[i] is None for i in unknown):
            raise DataError(f"{path} lists none of the {len(unknown)} images without a given tone (first: "
                            f"{table.keys[unknown[0]]}): was the audit run on this dataset?")
        report.update(tones_file=path.name, estimated_by=ITA_GROUPS)
    reasons = []
    for i, row in enumerate(table.rows):
        if given[i]:
            row[column], row["tone_source"] = given[i], "given"
        elif estimates[i]:
            row[column], row["tone_source"] = code.get(estimates[i], estimates[i]), "estimated"
        reasons.append(None if (given[i] or estimates[i]) else _why(data_cfg, estimates[i]))
    for reason, n in Counter(r for r in reasons if r).items():
        table.keep([r != reason for r in reasons], reason)
        reasons = [r for r in reasons if r != reason]
        report["left_out"][reason] = n
    report["estimated"] = sum(r.get("tone_source") == "estimated" for r in table.rows)
    table.tone = report


def _why(data_cfg, estimate: str | None) -> str:
    if data_cfg.unknown_tone == "drop":
        return "no tone in the metadata (data.unknown_tone=drop)"
    return "tone undetermined by the ITA audit" if estimate == "" else "not in the audit's tones file"


def _needs_audit(table: Table, data_cfg, source: str, n: int) -> str:
    absent = all(data_cfg.tone_column not in r for r in table.rows)
    what = f"no column {data_cfg.tone_column!r}" if absent else f"{n} of {len(table.rows)} rows without a tone in {data_cfg.tone_column!r}"
    preset = f" --preset {data_cfg.preset}" if data_cfg.preset else ""
    where = data_cfg.dir or data_cfg.dataset or "DATASET"
    return (f"{source} has {what} (the prompt template or data.balance needs a skin tone): estimate them "
            f"with `dermdiff-lora audit {where}{preset}` and pass data.tones=<its tones.csv>, or set "
            "data.unknown_tone=drop to leave them out")
