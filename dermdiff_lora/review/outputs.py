"""``review.md`` and ``review.png`` from a review report (``review.json``), every figure with its counts."""

from __future__ import annotations

from pathlib import Path

from ..core.fsutil import atomic_save, atomic_write


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _num(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _study_lines(study: dict, readers: bool = True) -> list[str]:
    """The study table (per reader and all readers; only all readers with ``readers=False``) and agreement."""
    lines = ["## Blinded reader study (real or synthetic?)", "",
             "| reader | images | accuracy [95 % CI] | p (binomial vs 50 %) | sensitivity (synthetic spotted) | "
             "specificity (real called real) | realism real / synthetic (median) | Mann-Whitney p | "
             "intra-reader kappa (pairs) |", "|---|---|---|---|---|---|---|---|---|"]
    rows = [*(study["readers"].items() if readers else []), (f"all {len(study['readers'])} readers", study["overall"])]
    for name, s in rows:
        rs, rz = s["real_vs_synthetic"], s["realism"]["real_vs_synthetic"]
        ci = rs["ci95"] or [None, None]
        intra = s.get("intra_reader")
        lines.append(f"| {name} | {s['n']} | {_pct(rs['accuracy'])} [{_pct(ci[0])}, {_pct(ci[1])}] | "
                     f"{_num(rs['p_value'], 3)} | {_pct(rs['sensitivity']['value'])} of {rs['sensitivity']['n']} | "
                     f"{_pct(rs['specificity']['value'])} of {rs['specificity']['n']} | "
                     f"{_num(rz['median_a'], 1)} / {_num(rz['median_b'], 1)} | {_num(rz['p_value'], 3)} | "
                     + (f"{_num(intra['cohen_kappa'])} ({intra['n_pairs']}) |" if intra else "– |"))
    lines += ["", "By tone group (all readers): " + "; ".join(
        f"{k} {_pct(v['accuracy'])} of {v['n']}" for k, v in study["overall"]["by_tone"].items()),
        "", "By diagnosis (all readers): " + "; ".join(
        f"{k} {_pct(v['accuracy'])} of {v['n']}" for k, v in study["overall"]["by_diagnosis"].items()), ""]
    inter = study["inter_reader"]
    for i, (pair, v) in enumerate(inter["pairs"].items()):
        pair = pair if readers else f"reader pair {i + 1}"
        lines.append(f"- Cohen's kappa {pair}: {_num(v['cohen_kappa'])} on {v['n']} shared images")
    if "fleiss" in inter:
        f = inter["fleiss"]
        lines.append(f"- Fleiss' kappa, {f['raters']} readers: {_num(f['fleiss_kappa'])} on {f['n']} images all saw")
    return lines + [""]


def _qc_lines(qc: dict, readers: bool = True) -> list[str]:
    """The combined QC table per cell, then (``readers``) each reader's acceptance."""
    lines = [f"## Quality control (combined by rule `{qc['rule']}`)", "",
             "| cell | images | accepted | rejected | acceptance | reasons |", "|---|---|---|---|---|---|"]
    for cell, c in qc["combined"]["cells"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in c["reasons"].items()) or "–"
        lines.append(f"| {cell} | {c['n']} | {c['accepted']} | {c['rejected']} | {_pct(c['acceptance'])} | {reasons} |")
    lines.append(f"\n{len(qc['readers'])} reader(s); rule `all`: accepted when every reader who saw an image "
                 "accepted it; `majority`: when more than half did." if not readers else "")
    for reader, cells in (qc["readers"].items() if readers else []):
        n = sum(c["n"] for c in cells.values())
        ok = sum(c["accepted"] for c in cells.values())
        lines.append(f"- {reader}: accepted {ok} of {n}")
    return lines + [""]


def card_section(report: dict) -> str:
    """The review as a model card shows it: combined figures only, no reader names and no local paths."""
    lines = ["## Clinician review", "", "Synthetic images were reviewed by clinicians with `dermdiff-lora review` "
             "(a local page; verdicts in append-only logs). Only accepted images are used downstream."]
    if report.get("qc"):
        lines += [""] + [x.replace("## ", "### ") for x in _qc_lines(report["qc"], readers=False)]
    if report.get("study"):
        lines += [""] + [x.replace("## ", "### ") for x in _study_lines(report["study"], readers=False)]
    return "\n".join(lines).strip()


def write_markdown(report: dict, path: Path) -> Path:
    lines = [f"# Review of {report['folder']}", ""]
    if report.get("study"):
        lines += _study_lines(report["study"])
    if report.get("qc"):
        lines += _qc_lines(report["qc"])
    if report.get("written_back"):
        w = report["written_back"]
        lines.append(f"Written back to {w.get('metadata')}: {w.get('accepted')} accepted, {w.get('rejected')} "
                     f"rejected, {w.get('unreviewed')} unreviewed (previous kept as {w.get('previous')})."
                     if w.get("written") else f"Not written back: {w.get('why')}.")
    return atomic_write(path, "\n".join(lines) + "\n")


def save_chart(report: dict, path: Path) -> Path:
    """Left: each reader's real/synthetic accuracy with its 95 % interval (50 % line). Right: QC acceptance
    per cell (combined verdicts)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    study = report.get("study") or {"readers": {}}
    names = list(study["readers"])
    acc = [study["readers"][r]["real_vs_synthetic"] for r in names]
    values = [a["accuracy"] or 0 for a in acc]
    errs = [[v - (a["ci95"] or [v, v])[0] for v, a in zip(values, acc)],
            [(a["ci95"] or [v, v])[1] - v for v, a in zip(values, acc)]]
    left.bar(range(len(names)), values, yerr=errs, capsize=3, color="#3b75af")
    left.axhline(0.5, color="gray", ls="--", lw=1)
    left.set_xticks(range(len(names)), [f"{r}\n(n={a['n']})" for r, a in zip(names, acc)])
    left.set_ylim(0, 1.05)
    left.set_title("study: real/synthetic accuracy (exact 95 % CI)")
    cells = (report.get("qc") or {}).get("combined", {}).get("cells", {})
    right.bar(range(len(cells)), [c["acceptance"] or 0 for c in cells.values()], color="#5a9e5a")
    right.set_xticks(range(len(cells)), [f"{k}\n(n={c['n']})" for k, c in cells.items()], fontsize="small",
                     rotation=30 if len(cells) > 4 else 0)
    right.set_ylim(0, 1.05)
    right.set_title(f"QC: accepted share per cell (rule {(report.get('qc') or {}).get('rule', '–')})")
    return atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
