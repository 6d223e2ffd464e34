"""Fill the under-represented (diagnosis × skin tone) groups of a dataset with checked synthetic images.

``rebalance`` writes a new imagefolder: the real images (copied or hard-linked), then, per group and per
missing image ("slot"), images from ``generate_fn`` kept only if their measured tone is the requested one,
they are not blank and a lesion is found. Seeds are a function of (group, slot, try), so a rerun picks up
exactly where a stopped one ended. Every try is journalled in ``rebalance_tries.jsonl``; an accepted image
is written atomically before its metadata row is appended.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import ConfigError, DataError
from ..core.fsutil import atomic_write, disk_errors
from ..core.lock import folder_lock
from ..core.progress import progress as progress_bar
from ..core.prompts import DEFAULT_VALUE_MAPS
from ..generation.grid import save_png
from .audit import data_config
from .rebalance_input import input_base, read_input, real_names
from .rebalance_store import (
    REPORT_FILE,
    TRIES_FILE,
    _append_line,
    _copy_real,
    _csv_line,
    _init_metadata,
    _load_state,
    _prepare_out,
    _Slot,
)
from .rebalance_targets import DEFAULT_TARGET, normalise_target, plan_counts, prior_report
from .skintone import SCHEMES, ToneScheme, estimate_ita, get_scheme
from .synthetic import TONE_GROUPS

GenerateFn = Callable[[str, int], Image.Image]
MIN_LESION_FRACTION = 0.005  # of the image area, for "a lesion is present"
MIN_GRAY_STD = 1.0  # 8-bit gray levels; below this an image counts as blank (black, white or uniform)
MAX_TRIES = 1000  # seeds are seed + 1_000_000·group + 1000·slot + try


def tone_name(value: str, scheme: ToneScheme) -> str:
    """The scheme category a tone value stands for: the name itself, or code 0/1/2 -> lighter/brown/darker
    in the paper scheme."""
    if value in scheme.names:
        return value
    if scheme == SCHEMES["paper"] and value in ("0", "1", "2"):
        return TONE_GROUPS[int(value)]
    raise DataError(
        f"skin tone value {value!r} is neither a category of scheme {scheme.name!r} {scheme.names} "
        "nor (for the paper scheme) a code 0/1/2"
    )


def default_prompt(row: Mapping[str, str]) -> str:
    """``"{benign_malignant} skin disease on {tone} skin tone"`` with skin_tone 0/1/2 -> lighter/brown/darker."""
    return (
        f"{row['benign_malignant']} skin disease on {tone_name(row['skin_tone'], SCHEMES['paper'])} skin tone"
    )


def pipeline_generate_fn(
    pipe, *, steps: int = 50, guidance_scale: float = 7.5, height: int = 512, width: int = 512
) -> GenerateFn:
    """A ``generate_fn`` over a diffusers StableDiffusionPipeline, seeded by a CPU ``torch.Generator``."""

    def generate(prompt: str, seed: int) -> Image.Image:
        import torch

        out = pipe(
            prompt,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            generator=torch.Generator().manual_seed(seed),
        )
        return out.images[0]

    return generate


def judge(image: Image.Image, wanted: str, scheme: ToneScheme) -> tuple[str | None, float | None]:
    """(rejection reason or None, estimated ITA) for a generated image that should show tone ``wanted``."""
    if not isinstance(image, Image.Image):
        raise DataError(f"generate_fn returned {type(image).__name__}; it must return a PIL image")
    if float(np.asarray(image.convert("L"), dtype=np.float32).std()) < MIN_GRAY_STD:
        return "blank", None
    try:
        est = estimate_ita(image, "border", scheme)
    except DataError:
        return "grayscale", None
    if est.ita is None:
        return "undetermined", None
    if est.category != wanted:
        return "wrong tone", est.ita
    if est.lesion_fraction < MIN_LESION_FRACTION:
        return "no lesion", est.ita
    return None, est.ita


@dataclass
class RebalanceReport:
    """Per group: requested, generated (tries), accepted, rejected by reason, acceptance rate."""

    out_dir: Path
    groups: dict[str, dict]
    added: int
    path: Path
    input: dict | None = None  # the input's rows left out and where its tones came from
    label_prior: dict | None = None  # each tone group's label shares before and after (rebalance_targets)

    def to_json(self) -> str:
        """The report as JSON (what ``rebalance_report.json`` holds)."""
        totals = {k: sum(g[k] for g in self.groups.values()) for k in ("requested", "generated", "accepted")}
        return json.dumps({"out_dir": str(self.out_dir), "totals": totals, "groups": self.groups,
                           "input": self.input, "label_prior": self.label_prior}, indent=2)


def _label(key: tuple[str, ...]) -> str:
    return "/".join(key)


def _all_groups(
    rows: list[dict], groups: Sequence[str], tone_column: str, scheme: ToneScheme, target: str | Mapping
) -> list[tuple[str, ...]]:
    """Every combination of the group columns' values (all tones of the scheme), plus target's keys."""
    levels = []
    for column in groups:
        values = sorted({row[column] for row in rows})
        if column == tone_column:
            names = {tone_name(v, scheme) for v in values}
            values = ["0", "1", "2"] if set(values) - names else list(scheme.names)
        levels.append(values)
    keys = set(itertools.product(*levels))
    if not isinstance(target, str):
        keys |= set(target)
    return sorted(keys)


def _summarise(plan: dict, records: list[dict]) -> dict[str, dict]:
    groups = {
        _label(k): {"requested": n, "generated": 0, "accepted": 0, "rejected": {}} for k, n in plan.items()
    }
    for rec in records:
        g = groups[rec["group"]]
        g["generated"] += 1
        if rec["reason"] is None:
            g["accepted"] += 1
        else:
            g["rejected"][rec["reason"]] = g["rejected"].get(rec["reason"], 0) + 1
    for g in groups.values():
        g["acceptance_rate"] = round(g["accepted"] / g["generated"], 4) if g["generated"] else None
    return groups


def _report(out: Path, summary: dict, added: int, table, prior: tuple) -> RebalanceReport:
    """The run's report; ``prior`` = (rows, groups, tone column, all groups, target) for its label_prior."""
    rows, groups, tone_column, all_groups, target = prior
    accepted = {k: summary[_label(k)]["accepted"] for k in all_groups}
    return RebalanceReport(out, summary, added, out / REPORT_FILE, {"left_out": dict(table.left_out), "tone": table.tone},
                           prior_report(rows, list(groups), tone_column, accepted, target))


def _save_synthetic_png(image: Image.Image, path: Path, prompt: str, seed: int) -> None:
    save_png(image.convert("RGB"), path, {"synthetic": "true", "prompt": prompt, "seed": str(seed)})


@dataclass
class _Run:
    """What every slot of one rebalance call needs."""

    out: Path
    generate_fn: GenerateFn
    prompt_fn: Callable[[dict], str]
    scheme: ToneScheme
    groups: Sequence[str]
    tone_column: str
    fieldnames: list[str]
    file_column: str
    file_suffix: str  # "" when the file column holds stems (image_name), else ".png"
    seed: int
    max_tries: int


def _fill_slot(run: _Run, gi: int, key: tuple[str, ...], index: int, slot: _Slot) -> bool:
    """Try seeds for one missing image until one is accepted or ``max_tries`` is reached; True if added.

    Order of writes: the image (atomically), its metadata row, then the journal line.
    """
    values = dict(zip(run.groups, key))
    prompt = run.prompt_fn(values)
    wanted = tone_name(values[run.tone_column], run.scheme)
    name = _slot_name(run.seed, key, index)
    for attempt in range(slot.tries, run.max_tries):
        seed = run.seed + 1_000_000 * gi + 1000 * index + attempt
        image = run.generate_fn(prompt, seed)
        reason, ita = judge(image, wanted, run.scheme)
        if reason is None:
            _save_synthetic_png(image, run.out / f"{name}.png", prompt, seed)
            row = {
                **dict.fromkeys(run.fieldnames, ""),
                **values,
                "synthetic": "true",
                "seed": seed,
                "prompt": prompt,
                "ita_estimated": f"{ita:.3f}",
                "tone_source": "prompted (ITA-checked)",
                run.file_column: name + run.file_suffix,
            }
            if "target" in row and "benign_malignant" in values:
                row["target"] = int(values["benign_malignant"] == "malignant")
            _append_line(run.out / "metadata.csv", _csv_line(run.fieldnames, row))
        record = {
            "group": _label(key),
            "slot": index,
            "try": attempt,
            "seed": seed,
            "reason": reason,
            "ita": None if ita is None else round(ita, 3),
        }
        _append_line(run.out / TRIES_FILE, json.dumps(record) + "\n")
        if reason is None:
            return True
    return False


def _slot_name(seed: int, key: tuple[str, ...], index: int) -> str:
    return f"syn{seed}_{re.sub(r'[^A-Za-z0-9]+', '-', '_'.join(key)).strip('-').lower()}_{index:05d}"


def _plan(
    rows: list[dict], groups: Sequence[str], tone_column: str, scheme: ToneScheme, target: str | Mapping
) -> tuple[list[tuple[str, ...]], dict[tuple[str, ...], int]]:
    """(every group, in a fixed order; images each one lacks)."""
    target = normalise_target(target, len(groups))
    all_groups = _all_groups(rows, groups, tone_column, scheme, target)
    existing = dict.fromkeys(all_groups, 0)
    for row in rows:
        existing[tuple(row[c] for c in groups)] += 1
    lacking = plan_counts(existing, target, list(groups).index(tone_column))
    return all_groups, {k: lacking[k] for k in all_groups}


def _check_args(groups: Sequence[str], tone_column: str, prompt_fn, max_tries: int) -> None:
    if tone_column not in groups or not 1 <= max_tries <= MAX_TRIES:
        raise ConfigError(
            f"rebalance: tone_column {tone_column!r} must be one of groups {tuple(groups)} and "
            f"max_tries={max_tries} in 1..{MAX_TRIES}"
        )
    if prompt_fn is None and set(groups) != {"benign_malignant", "skin_tone"}:
        raise ConfigError(
            f"rebalance: groups {tuple(groups)} need a prompt_fn (the default prompt uses "
            "benign_malignant and skin_tone)"
        )


def _slot_names(all_groups, plan, seed: int, suffix: str, listed: set[str], metadata: Path) -> dict:
    """``{file name: (group label, slot)}`` of every synthetic image; a name the dataset lists is refused."""
    names = {_slot_name(seed, k, i) + suffix: (_label(k), i) for k in all_groups for i in range(plan[k])}
    if clash := sorted(names.keys() & listed):
        raise DataError(
            f"{metadata} already lists {clash[0]} (an earlier rebalance with seed {seed}); pass another seed"
        )
    return names


def rebalance(
    dataset_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    generate_fn: GenerateFn,
    *,
    target: str | Mapping = DEFAULT_TARGET,
    groups: Sequence[str] = ("benign_malignant", "skin_tone"),
    prompt_fn: Callable[[dict], str] | None = None,
    max_tries: int = 5,
    seed: int = 0,
    scheme: str | ToneScheme | tuple = "paper",
    tone_column: str = "skin_tone",
    file_column: str = "auto",
    link: bool = False,
    progress: bool = True,
    data_cfg=None,
    value_maps: Mapping | None = None,
    adapter: str | os.PathLike | None = None,
) -> RebalanceReport:
    """Write ``out_dir``: the dataset's images and rows, accepted synthetic images for the groups
    ``plan_counts`` finds lacking, and ``rebalance_report.json``. Rerunning resumes (or adds nothing).

    ``data_cfg`` (a run's data section: preset, metadata + images, ``datasets`` dataset, audit tones)
    replaces ``dataset_dir``; tones are read as training reads them (given, else the audit's estimate) with
    ``value_maps`` (default: the paper's). ``target`` keys are tuples of group values (strings), e.g.
    ``("malignant", "2")``. ``prompt_fn(row)`` gets the group values; default ``default_prompt``. ``link``
    hard-links real images where possible. Synthetic images are ``syn<seed>_<group>_<slot>.png`` with PNG
    text chunks synthetic / prompt / seed; the output is an imagefolder training reads as it is.
    """
    _check_args(groups, tone_column, prompt_fn, max_tries)
    tone_scheme = get_scheme(scheme)
    data_cfg = data_cfg or data_config(dataset_dir, file_column=file_column)
    tone_map = (value_maps or DEFAULT_VALUE_MAPS).get(tone_column)
    table, data_cfg = read_input(data_cfg, groups, tone_column, tone_map)
    base, out = input_base(data_cfg), Path(out_dir)
    file_col, values, files = real_names(table)
    rows = [{**r, file_col: value} for r, value in zip(table.rows, values)]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    all_groups, plan = _plan(rows, groups, tone_column, tone_scheme, target)
    suffix = "" if rows and not Path(rows[0][file_col]).suffix else ".png"
    source = Path(str(table.origin.get("metadata") or table.origin.get("dataset")))
    names = _slot_names(all_groups, plan, seed, suffix, {row[file_col] for row in rows}, source)
    settings = {"adapter": str(Path(adapter).resolve()) if adapter else None,
                "dataset_dir": str(base.resolve()) if base else str(data_cfg.dataset), "groups": list(groups),
                "seed": seed, "scheme": tone_scheme.name, "plan": {_label(k): n for k, n in plan.items()}}
    _prepare_out(base, out, settings)
    with folder_lock(out, "rebalance"), disk_errors(out, "rebalance output"):  # one writer; disk full: 1 line
        _copy_real(out, list(zip(table.images, files)), link)
        fieldnames, synthetic = _init_metadata(out, columns, rows)
        slots, _ = _load_state(out, names, synthetic, file_col)
        run = _Run(out, generate_fn, prompt_fn or default_prompt, tone_scheme, groups, tone_column, fieldnames,
                   file_col, suffix, seed, max_tries)
        todo = [(gi, k, i, slots.get((_label(k), i), _Slot())) for gi, k in enumerate(all_groups) for i in range(plan[k])]
        todo = [t for t in todo if not t[3].accepted and t[3].tries < max_tries]
        added = sum(_fill_slot(run, *t) for t in progress_bar(todo, desc="rebalance", unit="img", disable=not progress))
        _, records = _load_state(out, names, _init_metadata(out, columns, rows)[1], file_col)
        report = _report(out, _summarise(plan, records), added, table, (rows, groups, tone_column, all_groups, target))
        atomic_write(report.path, report.to_json())
        return report
