"""Progress of a pass over a dataset: a redrawn bar with ETA on a terminal, a few plain lines in a log.

``progress(...)`` is what every long loop uses. On a terminal it is a tqdm bar. When the output is not a
terminal (a log file, a pipe, a CI job) it writes one line per ``every`` per cent (default 5: at most 21
lines for a whole pass, never a carriage return) with the same counts, rate and ETA, instead of tqdm's
redraws (a 120-step run wrote ~26 KB of them into a log). ``delay`` seconds pass before anything shows, so
short passes stay quiet.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, initial: int = 0, delay: float = 0.0, every: float = 5.0,
             file: TextIO | None = None) -> Any:
    """A tqdm bar on a terminal, else a ``LineProgress``; both take ``update``, ``set_postfix``, ``close``
    and work as context managers and iterables."""
    out = file if file is not None else sys.stderr
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if not disable and _is_terminal(out):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, delay=delay, file=out,
                    dynamic_ncols=True)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial,
                        delay=delay, every=every, file=out)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


class LineProgress:
    """tqdm's counts, rate and ETA as whole lines: one each time the pass crosses another ``every`` %."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None, desc: str = "", unit: str = "it",
                 disable: bool = False, initial: int = 0, delay: float = 0.0, every: float = 5.0,
                 file: TextIO | None = None) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.disable, self.n, self.initial, self.delay = disable, initial, initial, delay
        self.every, self.file = max(every, 0.1), file if file is not None else sys.stderr
        self.postfix = ""
        self.start = time.monotonic()
        self._last_step = self._step(initial)  # a resumed pass does not repeat the lines it already wrote
        self._closed = False

    def _step(self, n: int) -> int:
        if not self.total:
            return 0
        return int(100.0 * n / self.total // self.every)

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LineProgress without an iterable is not iterable; call update()")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def update(self, n: int = 1) -> None:
        self.n += n
        step = self._step(self.n)
        if step > self._last_step:
            self._last_step = step
            self._write()

    def refresh(self) -> None:
        """tqdm's name for showing the current state; a line only at the next step (no extra lines)."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.total is None and self.n > self.initial:  # unknown length: one line at the end
            self._write()

    def _write(self) -> None:
        elapsed = time.monotonic() - self.start
        if self.disable or elapsed < self.delay:
            return
        from tqdm import tqdm

        done = self.n - self.initial
        line = tqdm.format_meter(self.n, self.total, elapsed, prefix=self.desc, unit=self.unit,
                                 rate=done / elapsed if elapsed > 0 and done else None,
                                 postfix=self.postfix or None, bar_format=LINE_FORMAT if self.total else None)
        print(line.replace("\r", ""), file=self.file, flush=True)
