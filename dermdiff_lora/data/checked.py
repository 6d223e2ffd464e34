"""Which images decoded cleanly before: the image check's record, so a restart checks only what changed.

Indexing decodes every image once (``dataset._check_image``: ~0.07 s for a 4000x3000 JPEG, 40 min of
CPU for ISIC 2020 at every start or resume). An image that passed is remembered by its resolved path with
its size, modification and status-change times (ns) and inode; it is checked again when any of them
changes (a rewritten, truncated, replaced or moved file). Failed images are never remembered: their error is
reported again. The record lives in the package cache (``DERMDIFF_CACHE``/image-checks/), one JSON file per
dataset folder, written atomically; never beside the data. A record that cannot be read or written only
costs the checks (logged), never a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from ..core.fsutil import atomic_write

log = logging.getLogger(__name__)
VERSION = 1


def stamp(path: Path) -> list[int] | None:
    """What must stay equal for a check to stand: size, mtime_ns, ctime_ns, inode (None: no such file)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def record_path(folder: Path) -> Path:
    from ..core.models import cache_dir

    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:24]
    return cache_dir() / "image-checks" / f"{key}.json"


class CheckRecord:
    """The images of one dataset folder that passed the check, with their stamps."""

    def __init__(self, folder: Path) -> None:
        self.path = record_path(folder)
        self.passed: dict[str, list[int]] = {}
        self.changed = False
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") == VERSION and isinstance(data.get("passed"), dict):
                self.passed = data["passed"]
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("image-check record %s unreadable (%s): every image is checked again", self.path, exc)

    def known_good(self, path: Path) -> bool:
        """True when ``path`` passed before and its stamp has not changed since."""
        seen = self.passed.get(str(path.resolve()))
        return seen is not None and seen == stamp(path)

    def add(self, paths: Iterable[Path]) -> None:
        """Remember that ``paths`` passed (stamped now)."""
        for path in paths:
            now = stamp(path)
            if now is not None:
                self.passed[str(path.resolve())] = now
                self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps({"version": VERSION, "passed": self.passed}))
        except OSError as exc:
            log.warning("image-check record %s not written (%s): the next start checks every image again",
                        self.path, exc)
        self.changed = False


def folder_of(paths: list[Path]) -> Path:
    """The deepest folder holding every path (the dataset folder the record is kept for)."""
    return Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
