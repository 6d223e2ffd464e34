"""Which synthetic rows a clinician review accepted: the ``review`` columns ``dermdiff-lora review`` writes.

A reviewed ``rebalance`` folder's metadata has ``review`` (accepted / rejected / empty when no reader saw
the image), ``review_reasons``, ``reviewers`` and ``review_rule``. Commands that read synthetic rows
(``evaluate --generated``, ``downstream --synthetic``) keep the accepted ones only when those columns
exist; ``include_unreviewed`` also keeps rows no reader saw. Rejected rows are never kept. This module
reads the file format only: it imports nothing of the review app.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

REVIEW_COLUMNS = ("review", "review_reasons", "reviewers", "review_rule")
ACCEPTED, REJECTED = "accepted", "rejected"

log = logging.getLogger(__name__)


def has_review(rows: Sequence[Mapping]) -> bool:
    """True when the rows carry a ``review`` column (a review was written back into the metadata)."""
    return any("review" in row for row in rows)


def review_state(row: Mapping) -> str:
    """"accepted", "rejected" or "unreviewed" for one metadata row."""
    value = str(row.get("review") or "").strip().lower()
    return value if value in (ACCEPTED, REJECTED) else "unreviewed"


def filter_reviewed(items: Sequence[Any], *, row: Callable[[Any], Mapping] = lambda item: item,
                    include_unreviewed: bool = False, where: str = "") -> tuple[list, dict | None]:
    """(the items to use, what was kept) — every item and None when their rows have no ``review`` column.

    ``row(item)`` is the item's metadata row. The summary holds the counts per state, the rule the review
    used and what was kept; the choice is logged so the command says which images it used.
    """
    items = list(items)
    rows = [row(item) for item in items]
    if not has_review(rows):
        return items, None
    states = [review_state(r) for r in rows]
    keep = {ACCEPTED, "unreviewed"} if include_unreviewed else {ACCEPTED}
    kept = [item for item, s in zip(items, states) if s in keep]
    rules = sorted({str(r.get("review_rule") or "") for r in rows} - {""})
    summary = {"counts": dict(sorted(Counter(states).items())), "used": sorted(keep), "n_used": len(kept),
               "rule": rules[0] if len(rules) == 1 else rules, "include_unreviewed": include_unreviewed}
    log.warning("%s: clinician review found: using %d %s synthetic image(s) of %d (%s)%s", where or "synthetic rows",
                len(kept), " or ".join(sorted(keep)), len(items),
                ", ".join(f"{k} {v}" for k, v in summary["counts"].items()),
                "" if include_unreviewed else "; --include-unreviewed also uses images no reader saw")
    return kept, summary


def keep_reviewed(records: Sequence[Any], include_unreviewed: bool | None, where: str,
                  review: dict | None = None) -> list:
    """Dataset index records (``.row``) that a clinician review let in, as ``filter_reviewed`` keeps them
    (``include_unreviewed`` None: all of them, unfiltered); ``review`` (a dict) receives the summary."""
    if include_unreviewed is None:
        return list(records)
    kept, summary = filter_reviewed(records, row=lambda r: r.row, include_unreviewed=include_unreviewed,
                                    where=where)
    if review is not None:
        review.update(summary or {})
    return kept


def summary_line(summary: Mapping) -> str:
    """One line naming what a clinician review let in (``filter_reviewed``'s summary), for printed tables."""
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    rule = summary["rule"] if isinstance(summary["rule"], str) else " / ".join(summary["rule"]) or "unknown"
    return (f"clinician review (rule {rule}): synthetic images used: {summary['n_used']} "
            f"{' or '.join(summary['used'])} of {sum(summary['counts'].values())} ({counts})")
