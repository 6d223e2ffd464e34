"""A rebalance output folder's bookkeeping: its run file, metadata rows and the journal of tries.

Everything here is append-only or written atomically, so a stopped run resumes exactly.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import DataError
from ..core.fsutil import atomic_write
from ..core.lock import LOCK_NAME
from ..data.tables import open_image

EXTRA_COLUMNS = ("synthetic", "seed", "prompt", "ita_estimated")
RUN_FILE, TRIES_FILE, REPORT_FILE = "rebalance_run.json", "rebalance_tries.jsonl", "rebalance_report.json"
PARTS_DIR, SPEED_FILE = "rebalance_parts", "speed.json"


def _repair_tail(path: Path) -> None:
    """Cut a half-written last line (a run stopped while appending) off an append-only file."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _csv_line(fieldnames: list[str], row: Mapping[str, object]) -> str:
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n").writerow(row)
    return buf.getvalue()


def _prepare_out(folder: Path | None, out: Path, settings: dict) -> None:
    """Create ``out`` with its run file, or check that an existing ``out`` holds the same run."""
    if folder is not None and (out.resolve() == folder.resolve() or out.resolve().is_relative_to(folder.resolve())):
        raise DataError(f"rebalance output {out} is the input folder or inside it; pick a new folder")
    if out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()):
        run = out / RUN_FILE
        if not run.is_file():
            raise DataError(f"{out} is not empty and holds no {RUN_FILE}; pick a new or empty folder")
        stored = json.loads(run.read_text(encoding="utf-8"))
        changed = sorted(k for k in settings if stored.get(k) != settings[k] and (k != "render" or k in stored))
        if changed:
            raise DataError(
                f"{out} holds a rebalance run with other {', '.join(changed)}; rerun with the "
                "same settings to resume it, or pick a new folder"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / RUN_FILE, json.dumps(settings, indent=2))


def _copy_real(out: Path, images: list[tuple[object, str]], link: bool) -> None:
    """Copy (or hard-link) every real image into ``out`` under its name there; skip done ones. Images
    stored inside a dataset table are saved as files."""
    for src, name in images:
        dst = out / name
        if dst.is_file() and (not isinstance(src, Path) or dst.stat().st_size == src.stat().st_size):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp{dst.suffix}")
        tmp.unlink(missing_ok=True)
        if not isinstance(src, Path):
            open_image(src).save(tmp)
        else:
            try:
                os.link(src, tmp) if link else shutil.copy2(src, tmp)
            except OSError:  # another file system: copy instead
                shutil.copy2(src, tmp)
        os.replace(tmp, dst)


def _init_metadata(out: Path, columns: list[str], rows: list[dict]) -> tuple[list[str], list[dict]]:
    """(columns, synthetic rows so far) of ``out/metadata.csv``, writing it with the real rows first."""
    path = out / "metadata.csv"
    if path.is_file():
        _repair_tail(path)
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            synthetic = [r for r in reader if r.get("synthetic") == "true"]
            return list(reader.fieldnames or []), synthetic
    fieldnames = columns + [c for c in EXTRA_COLUMNS if c not in columns]
    lines = [_csv_line(fieldnames, dict(zip(fieldnames, fieldnames)))]
    lines += [_csv_line(fieldnames, {**row, "synthetic": row.get("synthetic") or "false"}) for row in rows]
    atomic_write(path, "".join(lines))
    return fieldnames, []


@dataclass
class _Slot:
    """Where one missing image stands: tries so far and whether one was accepted."""

    tries: int = 0
    accepted: bool = False


def _read_journal(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    _repair_tail(path)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _read_rows(path: Path) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a metadata file another run may have stopped while appending to."""
    if not path.is_file():
        return [], []
    _repair_tail(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def part_dirs(out: Path) -> list[Path]:
    """The per-process folders (``rebalance_parts/rank<r>``) of a multi-process run, any world size."""
    return sorted((out / PARTS_DIR).glob("rank*")) if (out / PARTS_DIR).is_dir() else []


def _all_tries(out: Path, synthetic: list[dict]) -> tuple[list[dict], list[dict]]:
    """(journal records, synthetic metadata rows) of the output and of every process's part, each once."""
    records, seen = [], set()
    for path in [out / TRIES_FILE, *(d / TRIES_FILE for d in part_dirs(out))]:
        for rec in _read_journal(path):
            key = (rec["group"], rec["slot"], rec["try"])
            if key not in seen:
                seen.add(key)
                records.append(rec)
    rows = list(synthetic)
    for d in part_dirs(out):
        rows += _read_rows(d / "metadata.csv")[1]
    return records, rows


class Writer:
    """Appends one process's accepted rows and journal lines: into the output itself (one process), or
    into its own ``rebalance_parts/rank<r>`` folder (several; merged at the end)."""

    def __init__(self, out: Path, fieldnames: list[str], rank: int | None) -> None:
        self.folder = out if rank is None else out / PARTS_DIR / f"rank{rank}"
        self.fieldnames = fieldnames
        self.folder.mkdir(parents=True, exist_ok=True)
        if rank is not None and not (self.folder / "metadata.csv").is_file():
            atomic_write(self.folder / "metadata.csv", _csv_line(fieldnames, dict(zip(fieldnames, fieldnames))))

    def row(self, row: Mapping) -> None:
        _append_line(self.folder / "metadata.csv", _csv_line(self.fieldnames, row))

    def journal(self, record: Mapping) -> None:
        _append_line(self.folder / TRIES_FILE, json.dumps(record) + "\n")


def gather_speed(out: Path, mine: dict, world: int) -> dict:
    """One run's speed over all its processes: counts summed, time the slowest process's."""
    if world == 1:
        return mine
    files = [out / PARTS_DIR / f"rank{rank}" / SPEED_FILE for rank in range(world)]
    parts = [json.loads(f.read_text()) for f in files if f.is_file()]
    total = {k: sum(p[k] for p in parts) for k in ("renders", "accepted")}
    seconds = max(p["seconds"] for p in parts)
    return {**total, "seconds": seconds, "render_seconds": max(p["render_seconds"] for p in parts),
            "images_per_second": round(total["accepted"] / seconds, 4) if seconds else None,
            "renders_per_second": round(total["renders"] / seconds, 4) if seconds else None,
            "processes": len(parts), "acceptance": None}


def merge_parts(out: Path, names: dict[str, tuple[str, int]], order: dict[str, int], file_column: str) -> None:
    """Rewrite the output's metadata and journal atomically with every process's rows and tries, each once,
    in slot order (the same files whatever the number of processes or batching), then drop the parts."""
    fieldnames, rows = _read_rows(out / "metadata.csv")
    others = [r for r in rows if r.get(file_column) not in names]
    records, mine = _all_tries(out, [r for r in rows if r.get(file_column) in names])
    slot_key = {name: (order[g], i) for name, (g, i) in names.items()}
    unique = {r[file_column]: r for r in reversed(mine) if r.get(file_column) in names}
    ordered = sorted(unique.values(), key=lambda r: slot_key[r[file_column]])
    lines = [_csv_line(fieldnames, dict(zip(fieldnames, fieldnames)))]
    lines += [_csv_line(fieldnames, r) for r in others + ordered]
    atomic_write(out / "metadata.csv", "".join(lines))
    records.sort(key=lambda r: (order[r["group"]], r["slot"], r["try"]))
    atomic_write(out / TRIES_FILE, "".join(json.dumps(r) + "\n" for r in records))
    shutil.rmtree(out / PARTS_DIR, ignore_errors=True)


def _load_state(out: Path, names: dict[str, tuple[str, int]], synthetic: list[dict], file_column: str):
    """(slot states by (group label, slot), journal records) from the journals and the metadata rows (of
    the output and of every process's part).

    A metadata row proves an acceptance (its journal line may be missing); a journalled acceptance without
    its row is dropped, so that try is made again with the same seed.
    """
    records, synthetic = _all_tries(out, synthetic)
    accepted = {names[r[file_column]]: int(r["seed"]) for r in synthetic if r[file_column] in names}
    records = [r for r in records if r["reason"] is not None or (r["group"], r["slot"]) in accepted]
    journalled = {(r["group"], r["slot"]) for r in records if r["reason"] is None}
    slots: dict[tuple[str, int], _Slot] = {}
    for rec in records:
        slot = slots.setdefault((rec["group"], rec["slot"]), _Slot())
        slot.tries = max(slot.tries, rec["try"] + 1)
    for key, seed in accepted.items():
        slot = slots.setdefault(key, _Slot())
        slot.accepted = True
        if key not in journalled:
            records.append({"group": key[0], "slot": key[1], "try": slot.tries, "seed": seed, "reason": None})
            slot.tries += 1
    return slots, records
