"""``review --report``: what the readers answered, per reader and overall, with every figure's counts.

Study: real/synthetic accuracy (exact binomial test against 50 %), sensitivity (synthetic images called
synthetic) and specificity (real images called real), by tone group and diagnosis; realism of real vs
synthetic images (Mann-Whitney); agreement between readers on real/synthetic (Cohen's kappa per pair of
readers, Fleiss' kappa over the images every reader saw when there are three or more) and within a reader
(Cohen's kappa of first vs repeated showing). QC: acceptance and reasons per cell, per reader and combined
by the stated rule. Images are matched across readers by sha256.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping

from .stats import binomial, category_table, cohen_kappa, fleiss_kappa, mann_whitney

RULES = ("all", "majority")


def _cell(answer: dict) -> list[str]:
    return [str(v) for v in answer.get("cell") or []]


def _spotting(answers: list[dict]) -> dict:
    """Accuracy (binomial vs 50 %), sensitivity and specificity of real/synthetic calls, with counts."""
    syn = [a for a in answers if a["synthetic"]]
    real = [a for a in answers if not a["synthetic"]]
    hits = sum(a["source"] == "synthetic" for a in syn)
    correct_real = sum(a["source"] == "real" for a in real)
    return {**binomial(hits + correct_real, len(answers)),
            "sensitivity": {"n": len(syn), "called_synthetic": hits, "value": hits / len(syn) if syn else None},
            "specificity": {"n": len(real), "called_real": correct_real,
                            "value": correct_real / len(real) if real else None}}


def _by(answers: list[dict], position: int) -> dict:
    groups: dict[str, list] = {}
    for a in answers:
        cell = _cell(a)
        if cell:
            groups.setdefault(cell[position], []).append(a)
    return {k: _spotting(v) for k, v in sorted(groups.items())}


def _labels(answers: list[dict]) -> dict:
    """How often the reader's diagnosis and tone group match the image's own (its prompt or metadata)."""
    out = {}
    for key, position in (("diagnosis", 0), ("tone", -1)):
        known = [a for a in answers if _cell(a)]
        same = sum(str(a.get(key)) == _cell(a)[position] for a in known)
        out[key] = {"n": len(known), "agree": same, "share": same / len(known) if known else None}
    return out


def study_summary(answers: list[dict]) -> dict:
    """Every study figure for one reader's (or all readers') first showings."""
    realism = {side: [a["realism"] for a in answers if a["synthetic"] == flag]
               for side, flag in (("real", False), ("synthetic", True))}
    realism_test = mann_whitney(realism["real"], realism["synthetic"])
    return {"n": len(answers), "real_vs_synthetic": _spotting(answers), "by_tone": _by(answers, -1),
            "by_diagnosis": _by(answers, 0), "realism": {"real_vs_synthetic": realism_test,
                                                         "a": "real", "b": "synthetic", "test": "Mann-Whitney U"},
            "reader_labels": _labels(answers)}


def _intra(standing: Mapping[int, dict]) -> dict:
    """Cohen's kappa of a reader's first vs repeated call on the images shown twice."""
    first = {a["sha256"]: a["source"] for a in standing.values() if not a.get("repeat")}
    pairs = [(first[a["sha256"]], a["source"]) for a in standing.values()
             if a.get("repeat") and a["sha256"] in first]
    return {"n_pairs": len(pairs), "same": sum(x == y for x, y in pairs),
            "cohen_kappa": cohen_kappa([p[0] for p in pairs], [p[1] for p in pairs])}


def _inter(calls: dict[str, dict[str, str]]) -> dict:
    """Cohen's kappa per pair of readers; Fleiss' kappa over images every reader saw (3+ readers)."""
    pairs = {}
    for a, b in itertools.combinations(sorted(calls), 2):
        shared = sorted(calls[a].keys() & calls[b].keys())
        pairs[f"{a} vs {b}"] = {"n": len(shared), "cohen_kappa": cohen_kappa([calls[a][s] for s in shared],
                                                                             [calls[b][s] for s in shared])}
    out: dict = {"readers": sorted(calls), "pairs": pairs}
    if len(calls) >= 3:
        common = sorted(set.intersection(*(set(c) for c in calls.values())))
        ratings = [[calls[r][s] for r in calls] for s in common]
        table = category_table(ratings, ["real", "synthetic"])
        out["fleiss"] = {"n": len(common), "raters": len(calls), "fleiss_kappa": fleiss_kappa(table) if common else None}
    return out


def study_report(logs: Mapping[str, Mapping[int, dict]]) -> dict:
    """Per reader, overall (every reader's first showings together) and agreement."""
    per_reader, everyone, calls = {}, [], {}
    for reader, standing in sorted(logs.items()):
        first = [a for a in standing.values() if not a.get("repeat")]
        per_reader[reader] = {**study_summary(first), "intra_reader": _intra(standing)}
        everyone += first
        calls[reader] = {a["sha256"]: a["source"] for a in first}
    return {"readers": per_reader, "overall": study_summary(everyone), "inter_reader": _inter(calls)}


def combine(verdicts: list[dict], rule: str) -> str:
    """"accepted" or "rejected" from several readers' QC verdicts: ``all`` — accepted when every reader who
    saw it accepted; ``majority`` — accepted when more than half did (a tie is rejected)."""
    accepts = sum(v["verdict"] == "accept" for v in verdicts)
    ok = accepts == len(verdicts) if rule == "all" else accepts * 2 > len(verdicts)
    return "accepted" if ok else "rejected"


def qc_verdicts(logs: Mapping[str, Mapping[int, dict]], rule: str) -> dict[str, dict]:
    """sha256 -> {review, review_reasons, reviewers, cell} combining every reader's standing verdict."""
    by_image: dict[str, list] = {}
    for reader, standing in sorted(logs.items()):
        for a in standing.values():
            by_image.setdefault(a["sha256"], []).append({**a, "reader": reader})
    out = {}
    for sha, verdicts in by_image.items():
        reasons = sorted({r for v in verdicts for r in v.get("reasons") or []})
        out[sha] = {"review": combine(verdicts, rule), "review_reasons": ";".join(reasons),
                    "reviewers": ";".join(sorted(v["reader"] for v in verdicts)), "cell": _cell(verdicts[0])}
    return out


def _acceptance(rows: list[tuple[list[str], str, list[str]]]) -> dict:
    """Per cell: images, accepted, rejected, acceptance share, reasons counted."""
    cells: dict[str, dict] = {}
    for cell, verdict, reasons in rows:
        c = cells.setdefault(" / ".join(cell), {"n": 0, "accepted": 0, "rejected": 0, "reasons": Counter()})
        c["n"] += 1
        c["accepted" if verdict.startswith("accept") else "rejected"] += 1
        c["reasons"].update(reasons)
    for c in cells.values():
        c["acceptance"] = c["accepted"] / c["n"] if c["n"] else None
        c["reasons"] = dict(sorted(c["reasons"].items()))
    return dict(sorted(cells.items()))


def qc_report(logs: Mapping[str, Mapping[int, dict]], rule: str) -> dict:
    """Acceptance and reasons per cell, per reader and combined by ``rule``."""
    readers = {r: _acceptance([(_cell(a), a["verdict"], a.get("reasons") or []) for a in s.values()])
               for r, s in sorted(logs.items())}
    combined = qc_verdicts(logs, rule)
    rows = [(v["cell"], v["review"], [x for x in v["review_reasons"].split(";") if x]) for v in combined.values()]
    return {"rule": rule, "readers": readers, "combined": {"n_images": len(combined), "cells": _acceptance(rows)}}
