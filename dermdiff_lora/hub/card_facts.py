"""What an output folder records for its model card: kind, base, config, summary, tone counts, grid, evaluations.

Front matter the Hub reads (base model, library, pipeline tag, tags, license, prompts), then: what it is,
how to load it with plain diffusers, the prompt template and tone words, the training settings, the
training data's skin tone × diagnosis counts, the sample grid, evaluation results, intended use,
limitations and bias. No local paths and no token are ever written into a card.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapters import lora
from ..core import config
from ..core.errors import DataError, ModelError
from ..core.prompts import PromptBuilder, normalize_value
from ..core.version import __version__
from ..training.checkpoint import SUMMARY_FILE

AUDIT_FILE = "audit.json"
AUDIT_SUMMARY = "tones_summary.json"  # written by the skin-tone audit next to <data>_audit/tones.csv
DOWNSTREAM_FILE = "downstream.json"  # `dermdiff-lora downstream --out` this folder, or `card --downstream`
EVAL_FILES = ("eval.json", "eval_results.json")  # `evaluate` output first, then a hand-made results file
REVIEW_FILE = "review/review.json"  # `dermdiff-lora review --report` in the rebalance folder evaluated or used
PAPER = "[DermDiff](https://arxiv.org/abs/2503.17536)"
SD1_IDS = {"compvis/stable-diffusion-v1-1", "compvis/stable-diffusion-v1-2", "compvis/stable-diffusion-v1-3",
           "compvis/stable-diffusion-v1-4", "runwayml/stable-diffusion-v1-5",
           "stable-diffusion-v1-5/stable-diffusion-v1-5"}
TINY_BASES = ("tiny", "tiny-random")
TAGS = ["stable-diffusion", "stable-diffusion-diffusers", "text-to-image", "diffusers", "diffusers-training",
        "dermatology", "skin-tone", "medical-imaging", "synthetic-data", "dermdiff"]


@dataclass
class Facts:
    """What a folder records about its adapter or model."""

    kind: str  # "lora" or "full"
    base: str
    revision: str | None
    meta: dict
    cfg: Any  # config.Config or None
    summary: dict
    builder: PromptBuilder | None
    counts: dict[str, dict[str, int]] | None
    counts_source: str
    evals: dict[str, Any] | None
    downstream: dict[str, Any] | None
    grid: str | None  # path relative to the folder
    data: dict | None = None  # what training read (summary.json "data": source, tone sources, licence)
    review: dict | None = None  # the clinician review of the synthetic images evaluated or used downstream


def find_grid(folder: str | os.PathLike) -> Path | None:
    """The latest ``validation/step-*.png``, else ``grid.png``, else None."""
    folder = Path(folder)
    steps = sorted((folder / "validation").glob("step-*.png"))
    if steps:
        return steps[-1]
    return folder / "grid.png" if (folder / "grid.png").is_file() else None


def find_audit(folder: Path, cfg) -> Path | None:
    """``FOLDER/audit.json``, else the audit's default summary beside the training data, else None."""
    found = [folder / AUDIT_FILE]
    if cfg and cfg.data.dir:
        found.append(Path(f"{Path(cfg.data.dir).resolve()}_audit") / AUDIT_SUMMARY)
    return next((p for p in found if p.is_file()), None)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from None


def read_facts(folder: str | os.PathLike, *, audit: str | os.PathLike | None = None,
               eval_results: str | os.PathLike | None = None,
               downstream: str | os.PathLike | None = None) -> Facts:
    """Gather metadata, saved config, summary, audit/eval JSON (given or found in the folder) and the grid."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder} is not a folder: pass a training output folder (adapter or pipeline)")
    if (folder / "model_index.json").is_file():
        kind, meta = "full", {}
    else:
        kind, meta = "lora", lora.read_metadata(lora.adapter_file(folder))
    cfg = config.load_saved(folder)
    template = meta.get("prompt_template") or (cfg.prompts.template if cfg else None)
    maps = meta.get("value_maps") or (cfg.prompts.value_maps if cfg else {})
    builder = PromptBuilder(template, maps) if template else None
    summary = _read_json(folder / SUMMARY_FILE) if (folder / SUMMARY_FILE).is_file() else {}
    data = summary.get("data") or None
    explicit = Path(audit) if audit else (folder / AUDIT_FILE if (folder / AUDIT_FILE).is_file() else None)
    if explicit is None and data and data.get("tone_x_diagnosis"):
        counts, source = run_counts(data, builder, cfg), run_source(data)
    else:
        counts, source = tone_counts(cfg, builder, explicit or find_audit(folder, cfg))
    evals = Path(eval_results) if eval_results else next(
        (folder / name for name in EVAL_FILES if (folder / name).is_file()), folder / EVAL_FILES[0])
    grid = find_grid(folder)
    evals = _read_json(evals) if evals.is_file() or eval_results else None
    down = Path(downstream or folder / DOWNSTREAM_FILE)
    down = _read_json(down) if down.is_file() or downstream else None
    return Facts(kind=kind, base=meta.get("base_model") or (cfg.model.base if cfg else "") or "unknown",
                 revision=meta.get("base_revision") or (cfg.model.revision if cfg else None), meta=meta, cfg=cfg,
                 summary=summary, builder=builder, counts=counts, counts_source=source, evals=evals,
                 downstream=down, grid=grid.relative_to(folder).as_posix() if grid else None, data=data,
                 review=find_review(folder, evals, down))


def find_review(folder: Path, evals: Any, downstream: Any) -> dict | None:
    """``review.json`` of FOLDER, else of the rebalance folder ``eval.json`` (generated) or ``downstream.json``
    (synthetic) names; None when no review was reported."""
    found = [folder / REVIEW_FILE]
    for record, key in ((evals, "generated"), (downstream, "synthetic")):
        where = (record.get("inputs") or {}).get(key) if isinstance(record, dict) else None
        if where:
            found.append(Path(where) / REVIEW_FILE)
    path = next((p for p in found if p.is_file()), None)
    return _read_json(path) if path else None


# -------------------------------------------------------------------------------------------- counts
def _word_fn(builder: PromptBuilder | None):
    def word(column: str, value: object) -> str:
        key = normalize_value(value)
        return str((builder.value_maps.get(column) or {}).get(key, key) if builder else key) or "missing"

    return word


def run_counts(data: dict, builder: PromptBuilder | None, cfg) -> dict[str, dict[str, int]]:
    """``{tone word: {diagnosis word: n}}`` of the images training used (its summary's ``data``)."""
    tone_col = cfg.data.tone_column if cfg else "skin_tone"
    diag_col = data.get("diagnosis_column") or (cfg.data.diagnosis_column if cfg else "benign_malignant")
    word = _word_fn(builder)
    table: dict[str, Counter] = defaultdict(Counter)
    for tone, row in data["tone_x_diagnosis"].items():
        for diag, n in row.items():
            table[word(tone_col, tone)][word(diag_col, diag)] += int(n)
    known = ([list(dict.fromkeys((builder.value_maps.get(c) or {}).values())) for c in (tone_col, diag_col)]
             if builder else [[], []])
    return _ordered(table, *known)


def run_source(data: dict) -> str:
    """Where the counts and each image's tone came from, in words (no local paths)."""
    src = data.get("source") or {}
    what = {"preset": f"the {src.get('title', src.get('preset'))} preset",
            "datasets": f"the dataset {src.get('dataset')}" + (f" at commit {src['sha'][:12]}" if src.get("sha") else ""),
            }.get(src.get("kind"), f"the training metadata ({src.get('metadata', 'metadata')})")
    text = f"of the {data.get('images')} images training used, read from {what}"
    if src.get("kind") == "preset" and src.get("malignancy"):
        text += f" (benign/malignant from {src['malignancy']})"
    tone = data.get("tone") or {}
    parts = []
    if tone.get("given"):
        parts.append(f"{tone['given']} given by {tone.get('given_by')}")
    if tone.get("estimated"):
        parts.append(f"{tone['estimated']} estimated by the {tone.get('estimated_by')}")
    parts += [f"{n} left out ({why})" for why, n in (data.get("left_out") or {}).items()]
    return text + (f"; skin tone: {'; '.join(parts)}" if parts else "")


def tone_counts(cfg, builder: PromptBuilder | None, audit: Path | None) -> tuple[dict | None, str]:
    """``{tone word: {diagnosis word: n}}`` from an audit JSON, else from the training metadata."""
    tone_col = cfg.data.tone_column if cfg else "skin_tone"
    diag_col = cfg.data.diagnosis_column if cfg else "benign_malignant"
    word = _word_fn(builder)
    known = ([list(dict.fromkeys((builder.value_maps.get(c) or {}).values())) for c in (tone_col, diag_col)]
             if builder else [[], []])
    if audit is not None:
        data = _read_json(audit)
        return _ordered(_audit_table(data, tone_col, diag_col, word, audit), *known), _audit_source(data, audit)
    if not (cfg and cfg.data.dir):
        return None, ""
    from ..data.dataset import read_metadata

    try:
        rows, source = read_metadata(cfg.data.dir)
    except DataError:
        return None, ""
    if tone_col not in rows[0] or diag_col not in rows[0]:
        return None, ""
    table: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        table[word(tone_col, row[tone_col])][word(diag_col, row[diag_col])] += 1
    return _ordered(table, *known), f"counted from the training metadata ({source.name}, {len(rows)} rows)"


def _audit_table(data: Any, tone_col: str, diag_col: str, word, path: Path) -> dict[str, Counter]:
    """Counts from the audit summary (``table`` rows with tone, diagnosis, count) or a mapping
    ``{tone: {diagnosis: n}}``, optionally under ``tone_x_diagnosis`` or ``counts``."""
    for key in ("table", "tone_x_diagnosis", "counts"):
        if isinstance(data, dict) and key in data:
            data = data[key]
            break
    table: dict[str, Counter] = defaultdict(Counter)
    try:
        if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
            for tone, row in data.items():
                for diag, n in row.items():
                    if str(diag).lower() not in ("total", "all"):
                        table[word(tone_col, tone)][word(diag_col, diag)] += int(n)
        elif isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
            for r in data:
                tone = next(r[k] for k in (tone_col, "tone", "skin_tone") if k in r)
                diag = next(r[k] for k in (diag_col, "diagnosis", "benign_malignant") if k in r)
                table[word(tone_col, tone)][word(diag_col, diag)] += int(r.get("count", r.get("n")))
        else:
            raise ValueError
    except (ValueError, TypeError, StopIteration):
        raise DataError(f"{path}: expected tone × diagnosis counts (the audit's summary JSON, or "
                        f"{{tone: {{diagnosis: n}}}})") from None
    return table


def _audit_source(data: Any, path: Path) -> str:
    text = f"from the skin-tone audit ({path.name}"
    if isinstance(data, dict) and data.get("scheme"):
        bounds = ", ".join(f"{b:g}°" for b in data.get("scheme_boundaries") or [])
        text += f"; ITA scheme '{data['scheme']}'" + (f" with boundaries {bounds}" if bounds else "")
    if isinstance(data, dict) and data.get("undetermined"):
        text += f"; {data['undetermined']} image(s) of undetermined tone"
    return text + ")"


def _ordered(table: dict[str, Counter], tones: list[str], diags: list[str]) -> dict[str, dict[str, int]]:
    """Known words first (value-map order), then the others in order of appearance."""
    found_diags = list(dict.fromkeys(d for row in table.values() for d in row))
    tones = [t for t in tones if t in table] + [t for t in table if t not in tones]
    diags = [d for d in diags if d in found_diags] + [d for d in found_diags if d not in diags]
    return {t: {d: int(table[t][d]) for d in diags} for t in tones}


# ------------------------------------------------------------------------------------- front matter
def is_hub_base(base: str) -> bool:
    from ..core.hubio import is_hub_id

    return base not in TINY_BASES and is_hub_id(base)


def grid_prompts(builder: PromptBuilder | None) -> list[str]:
    """Every prompt of the diagnosis × tone grid ([] without a template or value maps)."""
    try:
        return [prompt for _, prompt in builder.grid()] if builder else []
    except DataError:
        return []


def package_version(facts: Facts) -> str:
    return str(facts.meta.get("package_version") or __version__)
