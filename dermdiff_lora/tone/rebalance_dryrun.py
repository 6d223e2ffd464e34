"""``rebalance --dry-run``: how many images each group needs, its acceptance on a small pilot batch, and
the renders and time the run should take. Nothing is written.

The pilot renders each group's first slots at their first seeds (the run's own first renders) and checks
them as the run would. With acceptance ``p`` and ``m`` tries per slot, a slot takes
``(1 - (1 - p)^m) / p`` renders on average (``m`` when ``p = 0``) and is filled with probability
``1 - (1 - p)^m``.
"""

from __future__ import annotations

import time

from .rebalance import judge, plan_run
from .rebalance_engine import batch_fn


def expected_renders(p: float, tries: int) -> float:
    """Mean renders per slot when each try is accepted with probability ``p``, at most ``tries`` tries."""
    return float(tries) if p <= 0 else (1 - (1 - p) ** tries) / p


def _pilot_jobs(jobs, pilot: int):
    """Per group: its first ``pilot`` slots at try 0, then their next tries if it has fewer slots."""
    by_group: dict[str, list] = {}
    for job in jobs:
        by_group.setdefault(job.label, []).append(job)
    picked = []
    for group in by_group.values():
        tries = [(job, t) for t in range(pilot) for job in group][:pilot]
        picked += [(job, t) for job, t in tries]
    return picked


def dry_run(dataset_dir, generate_fn, *, pilot: int = 8, batch_size: int = 1, **plan_kw) -> dict:
    """The plan of ``rebalance(dataset_dir, ..., **plan_kw)`` with each group's pilot acceptance and the
    expected renders, acceptances and seconds (rendering and checking at the pilot's pace)."""
    rp = plan_run(dataset_dir, **plan_kw)
    render = batch_fn(generate_fn)
    picked = _pilot_jobs(rp.jobs(), pilot)
    seen: dict[str, list[int]] = {}
    start = time.perf_counter()
    for at in range(0, len(picked), batch_size):
        chunk = picked[at:at + batch_size]
        seeds = [rp.seed + 1_000_000 * job.gi + 1000 * job.index + t for job, t in chunk]
        for (job, _), image in zip(chunk, render([job.prompt for job, _ in chunk], seeds)):
            seen.setdefault(job.label, []).append(judge(image, job.wanted, rp.scheme)[0] is None)
    seconds = (time.perf_counter() - start) / max(len(picked), 1)
    groups = {}
    for key, needs in rp.plan.items():
        label = "/".join(key)
        results = seen.get(label, [])
        p = sum(results) / len(results) if results else None
        renders = needs * expected_renders(p, rp.max_tries) if p is not None else 0.0
        filled = needs * (1 - (1 - p) ** rp.max_tries) if p is not None else 0.0
        groups[label] = {"needs": needs, "pilot": len(results), "pilot_accepted": sum(results),
                         "acceptance": None if p is None else round(p, 4),
                         "expected_renders": round(renders, 1), "expected_accepted": round(filled, 1)}
    total = sum(g["expected_renders"] for g in groups.values())
    return {"groups": groups, "max_tries": rp.max_tries, "batch_size": batch_size,
            "seconds_per_render": round(seconds, 4), "expected_renders": round(total, 1),
            "expected_seconds": round(total * seconds, 1), "pilot_renders": len(picked)}


def format_dry_run(result: dict) -> str:
    """The dry run as a table, one line per group that needs images, and the totals."""
    lines = [f"{'group':<28} {'needs':>6} {'pilot ok':>9} {'accept':>7} {'renders':>8} {'filled':>7}"]
    for label, g in result["groups"].items():
        if g["needs"]:
            rate = "-" if g["acceptance"] is None else f"{g['acceptance']:.0%}"
            lines.append(f"{label:<28} {g['needs']:>6} {g['pilot_accepted']:>4}/{g['pilot']:<4} {rate:>7} "
                         f"{g['expected_renders']:>8.0f} {g['expected_accepted']:>7.0f}")
    lines.append(f"expected: {result['expected_renders']:.0f} renders (max {result['max_tries']} tries per image), "
                 f"~{_duration(result['expected_seconds'])} at {result['seconds_per_render']:.3f} s per render "
                 f"(measured on {result['pilot_renders']} pilot renders, batch {result['batch_size']}, checks in "
                 "this process)")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
