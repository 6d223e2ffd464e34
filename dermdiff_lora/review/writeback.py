"""Verdicts back into the data: a rebalance folder's metadata gains ``review``, ``review_reasons``,
``reviewers`` and ``review_rule`` (``data.reviewed`` reads them).

The metadata file is rewritten atomically; the version before it is kept as ``metadata.previous.csv``
(``.jsonl``). Synthetic rows no reader saw get an empty ``review``; real rows get empty review columns.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..core.fsutil import atomic_write
from ..data.dataset import read_metadata
from ..data.reviewed import REVIEW_COLUMNS
from ..data.tables import find_image, pick_file_column
from .items import TRUE_WORDS, sha256_file


def _previous_name(path: Path) -> Path:
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def _serialise(path: Path, rows: list[dict], columns: list[str]) -> str:
    if path.suffix == ".jsonl":
        return "".join(json.dumps({c: r.get(c, "") for c in columns}) + "\n" for r in rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: r.get(c, "") for c in columns} for r in rows)
    return buf.getvalue()


def write_back(folder: str | Path, verdicts: dict[str, dict], rule: str) -> dict:
    """Write the combined QC ``verdicts`` (sha256 -> review, review_reasons, reviewers) into the folder's
    metadata; return counts. A ``.parquet`` metadata is left as it is (the counts say so)."""
    folder = Path(folder)
    rows, path = read_metadata(folder)
    if path.suffix == ".parquet":
        return {"written": False, "why": f"{path.name}: parquet metadata is not rewritten"}
    file_col = pick_file_column(list(rows[0]), "auto", path)
    counts = {"accepted": 0, "rejected": 0, "unreviewed": 0}
    for row in rows:
        row.update(dict.fromkeys(REVIEW_COLUMNS, ""))
        if str(row.get("synthetic", "")).strip().lower() not in TRUE_WORDS:
            continue
        image = find_image(folder, row[file_col])
        verdict = verdicts.get(sha256_file(image)) if image is not None else None
        row["review_rule"] = rule
        if verdict is None:
            counts["unreviewed"] += 1
            continue
        row.update({k: verdict[k] for k in ("review", "review_reasons", "reviewers")})
        counts[verdict["review"]] += 1
    columns = list(dict.fromkeys([*(k for r in rows for k in r if k not in REVIEW_COLUMNS), *REVIEW_COLUMNS]))
    atomic_write(_previous_name(path), path.read_text(encoding="utf-8"))  # the version before this review
    atomic_write(path, _serialise(path, rows, columns))
    return {"written": True, "metadata": str(path), "previous": str(_previous_name(path)), "rule": rule, **counts}
