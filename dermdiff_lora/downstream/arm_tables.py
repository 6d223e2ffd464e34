"""The text of a multi-arm ``downstream`` result: every arm side by side (value and bootstrap interval per
group and metric), the paired differences from ``real`` with their verdicts, and the counterfactual flips."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .flips import flip_table
from .paired import summary
from .tables import cell, entries, header

_CELL = 22


def side_by_side(arms: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One row per (group, metric), one column per arm (``{key: {"name", "report"}}``)."""
    names = [a["name"] for a in arms.values()]
    tables = [{(s, m): e for s, m, e in entries(a["report"])} for a in arms.values()]
    keys = list(dict.fromkeys(k for t in tables for k in t))
    width = max(8, *(len(s) for s, _ in keys))
    head = f"{'group':<{width}} {'metric':<28}" + "".join(f"{n:<{_CELL}}" for n in names).rstrip()
    lines = [head, "-" * len(head)]
    for key in keys:
        lines.append((f"{key[0]:<{width}} {key[1]:<28}" + "".join(f"{cell(t.get(key)):<{_CELL}}" for t in tables))
                     .rstrip())
    for a in arms.values():
        worst = [f"{label} {e['group']}" for _, label, e in entries(a["report"]) if e.get("group") is not None]
        lines += [f"worst groups, {a['name']}: {'; '.join(worst)}"] if worst else []
    return lines


def _signed(entry: Mapping[str, Any]) -> str:
    if entry.get("value") is None:
        return "n/a"
    text = f"{entry['value']:+.3f}"
    return text + (f" [{entry['low']:+.3f}, {entry['high']:+.3f}]" if entry.get("low") is not None else "")


def paired_lines(comparison: Mapping[str, Any], arms: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The paired differences from the reference arm, one row per metric, and the verdict summary."""
    boot, diffs = comparison["bootstrap"], comparison["differences"]
    if not diffs:
        return []
    ref = arms[comparison["reference"]]["name"]
    lines = [f"Paired differences from {ref} (arm - {ref}; {boot['level']:.0%} paired percentile bootstrap, "
             f"B={boot['n_boot']}, seed {boot['seed']}; test images resampled within each tone group, every arm "
             "on the same draws, each the mean of its seeds):"]
    head = f"  {'metric':<26}" + "".join(f"{arms[a]['name']:<32}" for a in diffs).rstrip()
    lines += [head, "  " + "-" * (len(head) - 2)]
    for metric, label in comparison["metrics"].items():
        cells = []
        for arm in diffs:
            e = diffs[arm][metric]
            mark = {"better": " better", "worse": " worse"}.get(e["verdict"], "")
            cells.append(f"{_signed(e) + mark:<32}")
        lines.append((f"  {label:<26}" + "".join(cells)).rstrip())
    lower = [comparison["metrics"][m] for m in comparison["lower_is_better"]]
    lines.append(f"  (lower is fairer for {', '.join(lower)}; higher is better for the others)" if lower else
                 "  (higher is better)")
    verdicts = summary(diffs, comparison["metrics"], {k: a["name"] for k, a in arms.items()})
    lines += ["Verdict (an arm is called better or worse only where its paired interval excludes 0):",
              *(f"  {line}" for line in verdicts)]
    return lines


def flip_lines(result: Mapping[str, Any]) -> list[str]:
    """The counterfactual flip rates of every arm."""
    flips = result.get("counterfactual") or {}
    if not flips:
        return []
    first = next(iter(flips.values()))
    boot = first["bootstrap"]
    lines = [f"Counterfactual flips: {first['definition']}; per source -> target group, n pairs, mean of "
             f"{first['n_seeds']} seeds, {boot['level']:.0%} bootstrap (B={boot['n_boot']}) over source images:"]
    for arm, report in flips.items():
        lines += flip_table(report, f"[{result['arms'][arm]['name']}]")
    return lines


def arms_text(result: Mapping[str, Any]) -> str:
    """Headers per arm, the side-by-side table, the paired verdicts and the flips."""
    arms = result["arms"]
    lines = []
    for a in arms.values():
        lines += [f"[{a['name']}]", *(f"  {line}" for line in header(a["report"]))]
    lines += ["", *side_by_side(arms)]
    if result.get("comparison"):
        lines += ["", *paired_lines(result["comparison"], arms)]
    if result.get("counterfactual"):
        lines += ["", *flip_lines(result)]
    return "\n".join(lines)
