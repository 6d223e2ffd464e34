"""Audit a dataset's skin tones: ITA per image, counts per (diagnosis × tone), a bar chart and a summary.

The input folder is only read. Results go to a new folder (default ``<dataset_dir>_audit/``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import DataConfig, data_errors
from ..core.errors import ConfigError, DataError
from ..core.fsutil import atomic_path, atomic_write
from ..core.hubio import is_hub_id
from ..core.progress import progress as progress_bar
from ..data import dataset as data
from ..data import duplicates as dup
from ..data.sources import load_table
from ..data.tables import open_image
from .skintone import STRATEGIES, WORKING_SIDE, GrayscaleError, ToneEstimate, estimate_ita, get_scheme

FILE_COLUMNS = ("file_name", "image_name")
TONE_FIELDS = (
    "file",
    "diagnosis",
    "ita",
    "category",
    "method",
    "spread",
    "skin_fraction",
    "lesion_fraction",
    "undetermined_reason",
)
UNDETERMINED = "undetermined"


def read_metadata(dataset_dir: str | os.PathLike) -> tuple[Path, list[str], list[dict]]:
    """(metadata path, columns, rows as dicts of strings) of ``metadata.csv`` or ``metadata.jsonl``."""
    rows, path = data.read_metadata(dataset_dir)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return path, columns, [{k: "" if row.get(k) is None else str(row.get(k)) for k in columns} for row in rows]


def pick_column(columns: list[str], wanted: str, path: Path | str) -> str:
    """``wanted`` if present; ``"auto"`` picks the first of FILE_COLUMNS. DataError lists the columns."""
    candidates = FILE_COLUMNS if wanted == "auto" else (wanted,)
    for name in candidates:
        if name in columns:
            return name
    raise DataError(
        f"{path} has no column {' or '.join(candidates)}; available columns: {', '.join(columns)}"
    )


def data_config(dataset: str | os.PathLike | None = None, **keys) -> DataConfig:
    """The data section for a dataset folder (or Hub id, ``dataset=``) plus data.* keys (``preset=`` ...)."""
    if dataset is not None and "dataset" not in keys and "dir" not in keys:
        local = Path(dataset).expanduser()
        keys["dataset" if not local.exists() and is_hub_id(str(dataset)) else "dir"] = str(dataset)
    errors = data_errors(DataConfig(**keys))
    if errors:
        raise ConfigError("; ".join(errors))
    return DataConfig(**keys)


@dataclass
class AuditResult:
    """Per-image tones (``rows``), counts per (diagnosis × tone) (``table``), and the files written."""

    rows: list[dict]
    table: list[dict]
    tones: list[str]
    diagnoses: list[str]
    imbalance_ratio: float | None
    empty_groups: list[str]
    settings: dict
    paths: dict[str, Path] = field(default_factory=dict)

    def to_text(self) -> str:
        """The counts as an aligned table (diagnosis rows × tone columns), then the imbalance."""
        cells = {(r["diagnosis"], r["tone"]): r for r in self.table}
        header = ["diagnosis", *self.tones, "total"]
        lines = []
        for diag in self.diagnoses:
            row = [diag]
            for tone in self.tones:
                r = cells[(diag, tone)]
                row.append(f"{r['count']} ({r['percent']:.1f}%)")
            row.append(str(sum(cells[(diag, t)]["count"] for t in self.tones)))
            lines.append(row)
        widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]
        fmt = [h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))]
        text = ["  ".join(fmt)]
        text += [
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
            for line in lines
        ]
        ratio = "n/a (no images)" if self.imbalance_ratio is None else f"{self.imbalance_ratio:.2f}"
        text.append(f"imbalance ratio (largest / smallest non-empty group): {ratio}")
        text.append(f"empty groups: {', '.join(self.empty_groups) or 'none'}")
        if self.settings.get("duplicates"):
            d = self.settings["duplicates"]
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(d["by_kind"].items())) or "none"
            text.append(f"duplicates: {d['pairs']} pair(s) ({kinds}) in {d['groups']} group(s) of "
                        f"{d['images_in_groups']} images (near: pHash <= {d['near_cutoff_bits']} of 64 bits and "
                        f"thumbnails within {d['near_pixels']} levels)")
        return "\n".join(text)

    def to_json(self) -> str:
        """The summary (settings, table, imbalance, paths) as JSON."""
        return json.dumps(
            {
                **self.settings,
                "table": self.table,
                "tones": self.tones,
                "diagnoses": self.diagnoses,
                "imbalance_ratio": self.imbalance_ratio,
                "empty_groups": self.empty_groups,
                "paths": {k: str(v) for k, v in self.paths.items()},
            },
            indent=2,
        )


def _open(ref) -> object:
    """The image as the ITA estimate reads it (a JPEG decoded at reduced scale, at least WORKING_SIDE)."""
    try:
        return open_image(ref, WORKING_SIDE, cover=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image {ref}: {exc}; check that the file exists and is a complete "
                        "image") from exc


def _estimate_one(job: tuple[object, str, str, object]) -> dict:
    """The tone row of one image, with its duplicate fingerprint under ``"fingerprint"``."""
    ref, name, strategy, scheme = job
    image = _open(ref)
    fingerprint = dup.fingerprint(image)
    try:
        est = estimate_ita(image, strategy, scheme)
    except GrayscaleError as exc:
        est = ToneEstimate(
            None, None, scheme.name, math.nan, strategy, 0.0, 0.0, undetermined_reason=str(exc)
        )
    return {
        "file": name,
        "ita": None if est.ita is None else round(est.ita, 3),
        "category": est.category,
        "method": est.method,
        "spread": None if math.isnan(est.spread) else round(est.spread, 3),
        "skin_fraction": round(est.skin_fraction, 4),
        "lesion_fraction": round(est.lesion_fraction, 4),
        "undetermined_reason": est.undetermined_reason,
        "fingerprint": fingerprint,
    }


def _estimate_all(jobs: list[tuple], workers: int, progress: bool) -> Iterator[dict]:
    bar = progress_bar(total=len(jobs), desc="audit", unit="img", disable=not progress)
    with bar:
        if workers <= 1:
            for job in jobs:
                yield _estimate_one(job)
                bar.update()
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for row in pool.map(_estimate_one, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers)))):
                yield row
                bar.update()


def count_table(rows: list[dict], tones: list[str]) -> tuple[list[dict], list[str], float | None, list[str]]:
    """(table, diagnoses, imbalance ratio, empty groups) from per-image rows with diagnosis and category.

    Undetermined images form their own tone column and take no part in the ratio or the empty groups.
    """
    diagnoses = sorted({r["diagnosis"] for r in rows})
    counts = {(d, t): 0 for d in diagnoses for t in tones}
    for r in rows:
        counts[(r["diagnosis"], r["category"] or UNDETERMINED)] += 1
    per_diag = {d: sum(counts[(d, t)] for t in tones) for d in diagnoses}
    table = [
        {
            "diagnosis": d,
            "tone": t,
            "count": c,
            "percent": round(100.0 * c / max(1, len(rows)), 2),
            "percent_of_diagnosis": round(100.0 * c / max(1, per_diag[d]), 2),
        }
        for (d, t), c in counts.items()
    ]
    groups = {k: c for k, c in counts.items() if k[1] != UNDETERMINED}
    non_empty = [c for c in groups.values() if c > 0]
    ratio = max(non_empty) / min(non_empty) if non_empty else None
    return table, diagnoses, ratio, [f"{d} × {t}" for (d, t), c in groups.items() if c == 0]


def _tone_colours(n: int) -> list[tuple[float, float, float]]:
    """Light to dark skin-like browns, one per tone column."""
    light, dark = (0.96, 0.84, 0.72), (0.33, 0.20, 0.13)
    return [tuple(lc + (dc - lc) * i / max(1, n - 1) for lc, dc in zip(light, dark)) for i in range(n)]


def save_chart(result: AuditResult, path: Path) -> None:
    """A grouped bar chart (one group per diagnosis, one bar per tone) with the counts on the bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tones = result.tones
    fig = Figure(figsize=(max(6.0, 1.2 * len(result.diagnoses) * len(tones) / 2 + 2), 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(tones))
    cells = {(r["diagnosis"], r["tone"]): r["count"] for r in result.table}
    colours = _tone_colours(len(tones))
    for i, tone in enumerate(tones):
        xs = [d + (i - (len(tones) - 1) / 2) * width for d in range(len(result.diagnoses))]
        colour = (0.7, 0.7, 0.7) if tone == UNDETERMINED else colours[i]
        bars = ax.bar(
            xs,
            [cells[(d, tone)] for d in result.diagnoses],
            width,
            label=tone,
            color=colour,
            edgecolor="black",
            linewidth=0.5,
        )
        ax.bar_label(bars, fontsize=9, padding=2)
    ax.set_xticks(range(len(result.diagnoses)), result.diagnoses, fontsize=11)
    ax.set_ylabel("images", fontsize=11)
    ax.set_title(
        f"Images per diagnosis and skin tone (ITA, scheme {result.settings['scheme']}, "
        f"strategy {result.settings['strategy']})",
        fontsize=11,
    )
    ax.legend(title="skin tone", fontsize=9)
    ax.margins(y=0.15)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp)
    os.replace(tmp, path)


def _write_rows(rows: list[dict], path: Path) -> None:
    if path.suffix == ".jsonl":
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=TONE_FIELDS)
        writer.writeheader()
        writer.writerows({k: "" if r[k] is None else r[k] for k in TONE_FIELDS} for r in rows)


def _write_duplicates(results: list[dict], keys: list[str], data_cfg: DataConfig, path: Path) -> dict:
    """Copies among the audited images (each row's fingerprint taken out of it), merged with the preset's
    own list, written to ``path``; returns their summary."""
    pairs = dup.find_duplicates(keys, [r.pop("fingerprint") for r in results])
    known = dup.known_list_path(data_cfg)
    if known is not None:
        pairs = dup.merge(pairs, dup.read_known_list(known))
    dup.write_csv(path, pairs)
    return {**dup.summary(pairs), "file": str(path), "preset_list": str(known) if known else None}


def _output_path(base: Path, out_path: str | os.PathLike | None, inputs: list[Path]) -> Path:
    out = Path(f"{base.resolve()}_audit") / "tones.csv" if out_path is None else Path(out_path).resolve()
    if out.suffix not in (".csv", ".jsonl"):
        raise ConfigError(f"audit output {out} must end in .csv or .jsonl")
    for folder in inputs:
        if out.is_relative_to(folder.resolve()):
            raise DataError(
                f"audit output {out} is inside the dataset folder {folder}; the input is never "
                "modified, pick a path outside it"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _inputs(table, data_cfg: DataConfig) -> tuple[Path, list[Path]]:
    """(the folder the default output sits beside, every input folder the output must stay out of)."""
    folders = {p.parent for p in table.images if isinstance(p, Path)}
    if data_cfg.dir:
        base = Path(data_cfg.dir).expanduser()
    elif data_cfg.metadata:
        base = Path(data_cfg.metadata).expanduser().parent
    else:
        base = Path.cwd() / Path(str(data_cfg.dataset).split("@")[0]).name
    return base, sorted(folders | ({base} if base.is_dir() else set()))


def audit_dataset(
    dataset_dir: str | os.PathLike | None,
    out_path: str | os.PathLike | None = None,
    *,
    file_column: str = "auto",
    diagnosis_column: str = "benign_malignant",
    strategy: str = "border",
    scheme: str | tuple = "paper",
    workers: int = 2,
    progress: bool = True,
    data_cfg: DataConfig | None = None,
) -> AuditResult:
    """Estimate every image's ITA and write, beside ``out_path`` (default ``<dataset_dir>_audit/tones.csv``):
    the per-image file (``.csv`` or ``.jsonl``, keyed by the metadata's file value), ``<stem>_chart.png``
    and ``<stem>_summary.json``.

    ``data_cfg`` (a preset, metadata + image folders, a ``datasets`` dataset) replaces ``dataset_dir``.
    ``workers`` > 1 estimates in that many processes. Tones are listed lightest first.
    """
    if strategy not in STRATEGIES or workers < 1:
        raise ConfigError(
            f"audit: strategy={strategy!r} must be one of {STRATEGIES} and workers={workers} >= 1"
        )
    tone_scheme = get_scheme(scheme)
    data_cfg = data_cfg or data_config(dataset_dir, file_column=file_column)
    table = load_table(data_cfg)
    source = table.origin.get("metadata") or table.origin.get("dataset")
    columns = list(dict.fromkeys(k for row in table.rows for k in row))
    diag_col = pick_column(columns, diagnosis_column, source)
    base, inputs = _inputs(table, data_cfg)
    out = _output_path(base, out_path, inputs)
    jobs = [(ref, key, strategy, tone_scheme) for ref, key in zip(table.images, table.keys)]
    results = list(_estimate_all(jobs, workers, progress))
    for result, row in zip(results, table.rows):
        result["diagnosis"] = row[diag_col] or "(missing)"
    duplicates = _write_duplicates(results, table.keys, data_cfg, out.parent / dup.FILE_NAME)
    tones = list(reversed(tone_scheme.names))
    if any(r["category"] is None for r in results):
        tones.append(UNDETERMINED)
    table_counts, diagnoses, ratio, empty = count_table(results, tones)
    settings = {"dataset_dir": str(data_cfg.dir or data_cfg.dataset or base), "metadata": str(source),
                "source": table.origin, "file_column": table.file_column, "diagnosis_column": diag_col,
                "strategy": strategy, "scheme": tone_scheme.name, "scheme_boundaries": list(tone_scheme.boundaries),
                "images": len(results), "undetermined": sum(r["ita"] is None for r in results),
                "left_out": dict(table.left_out), "duplicates": duplicates}
    audit = AuditResult(results, table_counts, tones, diagnoses, ratio, empty, settings)
    audit.paths = {
        "tones": out,
        "chart": out.with_name(f"{out.stem}_chart.png"),
        "summary": out.with_name(f"{out.stem}_summary.json"),
        "duplicates": out.parent / dup.FILE_NAME,
    }
    _write_rows(results, out)
    save_chart(audit, audit.paths["chart"])
    atomic_write(audit.paths["summary"], audit.to_json())
    return audit
