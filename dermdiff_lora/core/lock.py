"""One writer per output folder: an advisory ``flock`` on ``FOLDER/.dermdiff.lock``.

The kernel drops the lock when its process dies, however it dies (kill -9 included), so a killed run
never blocks the next one; a second live writer is refused with the first one's pid and command.
Where ``fcntl`` does not exist (Windows) the lock is not taken and nothing is checked.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError

LOCK_NAME = ".dermdiff.lock"


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if needed) for the block; ConfigError when another process has it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux/macOS
        yield Path(folder)
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{folder} is in use by another {_holder(path)}: wait for it to finish, or write "
                              f"this {what} into another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[:6]}).encode())
        yield folder
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _holder(path: Path) -> str:
    """'train (pid 123 on host, since ...)' from the lock file, or 'process' when it cannot be read."""
    try:
        info = json.loads(path.read_text())
        return f"{info['what']} (pid {info['pid']} on {info['host']}, since {info['since']})"
    except (OSError, ValueError, KeyError):
        return "process"
