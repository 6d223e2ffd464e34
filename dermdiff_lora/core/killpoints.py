"""Test-only crash points: ``DERMDIFF_KILL_AT=NAME[:N]`` makes the process SIGKILL itself the N-th time
(default the first) it reaches the named point, so a soak can kill a run exactly where a crash hurts most
(inside a checkpoint save, during pruning, between the adapter and the summary, during a cache write).

Unset (always, outside tests) the check is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

ENV = "DERMDIFF_KILL_AT"
POINTS = ("cache.writing", "checkpoint.before_state_file", "checkpoint.pruning", "train.before_summary")
_seen: Counter = Counter()


def reached(name: str) -> None:
    """SIGKILL this process if ``DERMDIFF_KILL_AT`` names ``name`` (and this is its N-th visit)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _seen[name] += 1
    if _seen[name] == int(nth or 1):
        print(f"killpoint {name}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
