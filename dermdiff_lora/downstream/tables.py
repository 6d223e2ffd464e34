"""Fixed-width text tables of fairness reports: one report, or two runs side by side with the difference."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

_LABELS = {"auc": "AUC", "balanced_accuracy": "bal. acc.", "sensitivity": "sensitivity",
           "specificity": "specificity", "equalized_odds_difference": "equalized odds diff.",
           "demographic_parity_difference": "demographic parity diff.",
           "equal_opportunity_difference": "equal opportunity diff.", "auc_gap": "AUC gap",
           "worst_group_auc": "worst-group AUC", "balanced_accuracy_gap": "bal. acc. gap",
           "worst_group_balanced_accuracy": "worst-group bal. acc."}
_CELL = 22


def cell(entry: Mapping[str, Any] | None) -> str:
    """``0.812 [0.780, 0.845]``, ``0.812`` without an interval, ``0.812 ± 0.021`` (mean ± standard deviation
    over seeds, for a seed-averaged entry), or ``n/a`` when undefined."""
    if not entry or entry.get("value") is None:
        return "n/a"
    text = f"{entry['value']:.3f}"
    if "by_seed" in entry:
        sd = entry.get("sd_over_seeds")
        return text + (f" ± {sd:.3f}" if sd is not None else f" ({entry.get('n_seeds', 1)} seed)")
    if entry.get("low") is not None:
        text += f" [{entry['low']:.3f}, {entry['high']:.3f}]"
    return text


def header(report: Mapping[str, Any]) -> list[str]:
    """Lines naming the task, decision rule/threshold, bootstrap settings and sample counts."""
    boot, overall = report["bootstrap"], report["overall"]
    if report["task"] == "binary":
        first = f"binary (malignant = positive); {_rule(report['threshold'])}"
        counts = f"{overall['n_positive']} malignant, {overall['n_negative']} benign"
    else:
        first = f"{len(report['classes'])} classes ({', '.join(report['classes'])}); prediction = argmax"
        counts = ", ".join(f"{c} {n}" for c, n in overall["class_counts"].items())
    intervals = (f"{boot['level']:.0%} percentile intervals, B={boot['n_boot']} resamples within each group, "
                 f"seed {boot['seed']}" if boot["n_boot"] else "no bootstrap intervals (B=0)")
    if "seeds" in report:
        seeds = ", ".join(map(str, report["seeds"]))
        intervals = (f"figures are mean ± standard deviation over {len(report['seeds'])} training seeds ({seeds}); "
                     f"each seed's own {intervals} are in its report (per_seed)")
    return [f"Task: {first}", f"{'Seeds' if 'seeds' in report else 'Bootstrap'}: {intervals}",
            f"Samples: {overall['n']} ({counts}) in {len(report['groups'])} groups"]


def _rule(th: Mapping[str, Any]) -> str:
    """The decision rule: one threshold, or each seed's own (a seed-averaged report)."""
    if "value_by_seed" in th:
        values = ", ".join(f"{v:.4f}" for v in th["value_by_seed"])
        js = th.get("youden_j_by_seed") or [th.get("youden_j")] * len(th["value_by_seed"])
        how = th["method"] + (f", J={'/'.join(f'{j:.3f}' for j in js)} on {th['n']} validation samples"
                              if th["method"] == "youden" else "")
        return f"malignant if score >= the threshold chosen for each seed: {values} ({how})"
    how = th["method"] + (f", J={th['youden_j']:.3f} on {th['n']} validation samples"
                          if th["method"] == "youden" else "")
    return f"malignant if score >= {th['value']:.4f} ({how})"


def entries(report: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """Every (scope, metric label, entry) of a report: each group, then overall, then the gaps."""
    for scope in [*report["groups"], "overall"]:
        block = report["overall"] if scope == "overall" else report["per_group"][scope]
        for name, entry in block["metrics"].items():
            if name == "auc_ovr":
                for cls, sub in entry.items():
                    yield scope, f"AUC {cls} vs rest", sub
            else:
                yield scope, _LABELS.get(name, name), entry
    for name, entry in report["gaps"].items():
        if name == "auc_ovr":
            for cls, sub in entry.items():
                yield "gap", f"worst-group AUC {cls}", sub["worst_group"]
                yield "gap", f"AUC gap {cls}", sub["gap"]
        elif isinstance(entry, Mapping) and "value" in entry:
            yield "gap", _LABELS.get(name, name), entry


def _notes(report: Mapping[str, Any]) -> list[str]:
    """Why each undefined cell is undefined, and which group is the worst."""
    notes = [f"  {scope} {label}: {e['reason']}" for scope, label, e in entries(report)
             if e.get("value") is None and e.get("reason")]
    worst = [f"  {label}: {e['group']}" for _, label, e in entries(report)
             if e.get("group") is not None]
    return (["Worst groups:", *worst] if worst else []) + (["n/a because:", *notes] if notes else [])


def _binary_rows(report: Mapping[str, Any]) -> list[str]:
    """The wide per-group table of a binary report."""
    metrics = ("auc", "balanced_accuracy", "sensitivity", "specificity")
    width = max(8, *(len(g) for g in report["groups"]))
    head = (f"{'group':<{width}} {'n':>6} {'mal.':>5}  "
            + "".join(f"{_LABELS[m]:<{_CELL}}" for m in metrics).rstrip())
    rows = [head, "-" * len(head)]
    for scope in [*report["groups"], "overall"]:
        block = report["overall"] if scope == "overall" else report["per_group"][scope]
        rows.append(f"{scope:<{width}} {block['n']:>6} {block['n_positive']:>5}  "
                    + "".join(f"{cell(block['metrics'][m]):<{_CELL}}" for m in metrics).rstrip())
    return rows


def format_table(report: Mapping[str, Any]) -> str:
    """A fixed-width table of one report (binary: one row per group; multi-class: one row per metric)."""
    lines = header(report) + [""]
    if report["task"] == "binary":
        lines += _binary_rows(report) + ["", f"Gaps across groups with both classes "
                                             f"({', '.join(report['gaps']['groups_used']) or 'none'}):"]
        lines += [f"  {label:<28}{cell(e)}" for scope, label, e in entries(report) if scope == "gap"]
    else:
        width = max(8, *(len(g) for g in report["groups"]))
        lines += [f"{scope:<{width}} {label:<28}{cell(e)}" for scope, label, e in entries(report)]
    return "\n".join(lines + [""] + _notes(report)).rstrip()


def _mismatch(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Warnings when two reports were not measured on the same test set in the same way."""
    warn = []
    counts = [{g: r["per_group"][g]["n"] for g in r["groups"]} for r in (a, b)]
    if counts[0] != counts[1]:
        warn.append(f"WARNING: the runs have different test sets (n per group {counts[0]} vs {counts[1]}); "
                    "compare runs on the same test split")
    keys = ("n_boot", "seed", "level")
    if [a["bootstrap"][k] for k in keys] != [b["bootstrap"][k] for k in keys]:
        warn.append("WARNING: the runs use different bootstrap settings")
    if a["task"] != b["task"]:
        warn.append(f"WARNING: comparing a {a['task']} report with a {b['task']} report")
    return warn


def compare_table(real_only: Mapping[str, Any], real_plus_synthetic: Mapping[str, Any],
                  names: tuple[str, str] = ("real only", "real + synthetic")) -> str:
    """Two reports side by side, one row per (group, metric), with the difference second - first."""
    lines = []
    for name, report in zip(names, (real_only, real_plus_synthetic)):
        lines += [f"[{name}]", *(f"  {line}" for line in header(report))]
    lines += _mismatch(real_only, real_plus_synthetic) + [""]
    second = {(s, m): e for s, m, e in entries(real_plus_synthetic)}
    keys = [(s, m) for s, m, _ in entries(real_only)]
    keys += [k for k in second if k not in set(keys)]
    first = {(s, m): e for s, m, e in entries(real_only)}
    width = max(8, *(len(s) for s, _ in keys))
    head = f"{'group':<{width}} {'metric':<28}{names[0]:<{_CELL}}{names[1]:<{_CELL}}{'difference':>10}"
    lines += [head, "-" * len(head)]
    for key in keys:
        a, b = first.get(key), second.get(key)
        defined = a and b and a.get("value") is not None and b.get("value") is not None
        diff = f"{b['value'] - a['value']:+.3f}" if defined else "n/a"
        lines.append(f"{key[0]:<{width}} {key[1]:<28}{cell(a):<{_CELL}}{cell(b):<{_CELL}}{diff:>10}")
    for name, report in zip(names, (real_only, real_plus_synthetic)):
        worst = [f"{label} {e['group']}" for _, label, e in entries(report) if e.get("group") is not None]
        lines += [f"worst groups, {name}: {'; '.join(worst)}"] if worst else []
    lines += ["", f"difference = {names[1]} - {names[0]}; for gaps a negative difference is fairer, "
                  "for the other metrics a positive one is better."]
    return "\n".join(lines)
