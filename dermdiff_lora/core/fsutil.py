"""Atomic writes: a file or a whole folder appears complete or not at all.

Every writer goes through ``atomic_path``: a temporary name in the target's folder (same file system, same
suffix so format-sniffing writers work), renamed onto the target only when the write succeeded; on any
error the temporary file is removed and an existing target is left as it was.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import DiskError

DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
# The same failures as other writers report them: safetensors (Rust "os error N") and torch's zip writer.
_DISK_TEXT = re.compile(r"os error (28|122|27|30)\b|No space left|Disk quota|File too large|Read-only file system"
                        r"|unexpected pos \d+ vs|PytorchStreamWriter failed")


def is_disk_error(exc: BaseException) -> bool:
    """True for a write that failed for lack of space, quota or file-size limit, or a read-only disk."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return True
    return isinstance(exc, Exception) and bool(_DISK_TEXT.search(str(exc)))


@contextmanager
def disk_errors(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn a full disk (or quota, size limit, read-only disk) inside the block into one DiskError line."""
    try:
        yield
    except DiskError:
        raise
    except Exception as exc:
        if not is_disk_error(exc):
            raise
        reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc).splitlines()[0]
        raise DiskError(f"cannot write the {what} in {folder} ({reason}): free space there or write elsewhere; "
                        f"the previous complete {what}, if any, is unchanged") from None


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        with disk_errors(path.parent, path.name):
            yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_save(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(temporary name)`` (e.g. ``image.save``, ``fig.savefig``), then move it onto ``path``."""
    with atomic_path(path) as tmp:
        write(str(tmp))
    return Path(path)


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    """``obj`` as indented JSON, atomically (NaN refused: reports hold None for undefined values)."""
    return atomic_write(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an existing ``out`` (same file system)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        shutil.rmtree(old)
    os.replace(tmp, out)
