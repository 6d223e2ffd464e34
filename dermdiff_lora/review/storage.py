"""Verdicts that are never lost: one append-only JSONL per reader and mode, flushed and fsynced per answer.

``FOLDER/review/<mode>/<reader>/verdicts.jsonl`` holds one record per answer (position in the reader's
order, image sha256, reader, the answer, time) and an ``undo`` record for each undo. The reader's folder
is locked (``core.lock``: a ``flock`` the kernel drops when the process dies) while a server writes it, so
the same reader cannot review twice at once; two readers write to their own files.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import ConfigError
from ..core.lock import folder_lock

MODES = ("qc", "study")
LOG_NAME = "verdicts.jsonl"
READER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


def check_reader(reader: str) -> str:
    if not READER_RE.match(reader or ""):
        raise ConfigError(f"reader name {reader!r} must be 1-40 letters, digits, '_', '-' or '.' (e.g. --reader "
                          "dr_lee); it names the reader's verdict file")
    return reader


def reader_dir(folder: str | os.PathLike, mode: str, reader: str) -> Path:
    if mode not in MODES:
        raise ConfigError(f"review mode {mode!r} must be one of {', '.join(MODES)}")
    return Path(folder) / "review" / mode / check_reader(reader)


def read_records(path: Path) -> list[dict]:
    """The records of a verdict file; a half-written last line (a kill while appending) is ignored."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # only the last line can be cut short; an empty line is none
    return records


def current_answers(records: list[dict]) -> dict[int, dict]:
    """position -> the answer that stands after replaying every record (an ``undo`` removes one)."""
    answers: dict[int, dict] = {}
    for rec in records:
        if rec.get("type") == "undo":
            answers.pop(int(rec["position"]), None)
        elif rec.get("type") == "answer":
            answers[int(rec["position"])] = rec
    return answers


class VerdictLog:
    """The verdict file of one reader in one mode (open it with ``open_log`` to hold the reader's lock)."""

    def __init__(self, directory: Path, reader: str, mode: str):
        self.dir, self.reader, self.mode = directory, reader, mode
        self.path = directory / LOG_NAME
        self._repair_tail()
        self.answers = current_answers(read_records(self.path))

    def _repair_tail(self) -> None:
        """Cut a half-written last line off, so the next record starts on a line of its own."""
        if self.path.is_file():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(self.path, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
                    os.fsync(f.fileno())

    def _append(self, record: dict) -> dict:
        record = {**record, "reader": self.reader, "mode": self.mode, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        line = json.dumps(record, sort_keys=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return record

    def answer(self, position: int, sha256: str, answer: dict) -> dict:
        """Record an answer (replacing any earlier one for this position)."""
        rec = self._append({**answer, "type": "answer", "position": position, "sha256": sha256,
                            "seq": self.next_seq()})
        self.answers[position] = rec
        return rec

    def undo(self) -> int | None:
        """Withdraw the latest standing answer; its position, or None when nothing is answered."""
        if not self.answers:
            return None
        position = max(self.answers, key=lambda p: self.answers[p]["seq"])
        rec = self.answers[position]
        self._append({"type": "undo", "position": position, "sha256": rec["sha256"]})
        del self.answers[position]
        return position

    def next_seq(self) -> int:
        return 1 + max((int(a.get("seq", 0)) for a in self.answers.values()), default=0)

    def first_unanswered(self, n: int) -> int:
        """The first position without an answer (``n`` when every one is answered)."""
        return next((p for p in range(n) if p not in self.answers), n)


@contextmanager
def open_log(folder: str | os.PathLike, mode: str, reader: str) -> Iterator[VerdictLog]:
    """The reader's verdict log, locked for the block; ConfigError when this reader is reviewing already."""
    directory = reader_dir(folder, mode, reader)
    directory.mkdir(parents=True, exist_ok=True)
    with folder_lock(directory, f"review by {reader}"):
        yield VerdictLog(directory, reader, mode)


def all_logs(folder: str | os.PathLike, mode: str) -> dict[str, dict[int, dict]]:
    """reader -> standing answers, for every reader of ``mode`` in ``folder`` (read-only, no lock)."""
    root = Path(folder) / "review" / mode
    if not root.is_dir():
        return {}
    return {d.name: current_answers(read_records(d / LOG_NAME)) for d in sorted(root.iterdir())
            if (d / LOG_NAME).is_file()}
