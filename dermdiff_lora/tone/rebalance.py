"""Fill the under-represented (diagnosis × skin tone) groups of a dataset with checked synthetic images.

``rebalance`` writes a new imagefolder: the real images (copied or hard-linked), then, per group and per
missing image ("slot"), images from ``generate_fn`` kept only if their measured tone is the requested one,
they are not blank and a lesion is found. Seeds are a function of (group, slot, try), so a rerun picks up
exactly where a stopped one ended. Every try is journalled in ``rebalance_tries.jsonl``; an accepted image
is written atomically before its metadata row is appended.
"""

from __future__ import annotations

import contextlib
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
from ..core.prompts import DEFAULT_VALUE_MAPS
from .audit import data_config
from .rebalance_engine import Checker, Job, Processes, batch_fn, run_jobs
from .rebalance_input import input_base, read_input, real_names
from .rebalance_store import (
    PARTS_DIR,
    REPORT_FILE,
    SPEED_FILE,
    TRIES_FILE,  # noqa: F401  (re-exported: the journal file name)
    Writer,
    _copy_real,
    _init_metadata,
    _load_state,
    _prepare_out,
    _Slot,
    gather_speed,
    merge_parts,
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


class PipelineGenerate:
    """A ``generate_fn`` over a diffusers StableDiffusionPipeline: ``(prompt, seed) -> image``, and
    ``render_batch(prompts, seeds)`` for a batch; each image's noise comes from its own CPU generator."""

    def __init__(self, pipe, *, steps: int = 25, guidance_scale: float = 7.5, height: int = 512,
                 width: int = 512) -> None:
        self.pipe, self.steps, self.guidance_scale, self.height, self.width = pipe, steps, guidance_scale, height, width

    def render_batch(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        import torch

        out = self.pipe(list(prompts), num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
                        height=self.height, width=self.width,
                        generator=[torch.Generator().manual_seed(int(s)) for s in seeds])
        return list(out.images)

    def __call__(self, prompt: str, seed: int) -> Image.Image:
        return self.render_batch([prompt], [seed])[0]


def pipeline_generate_fn(pipe, *, steps: int = 25, guidance_scale: float = 7.5, height: int = 512,
                         width: int = 512) -> PipelineGenerate:
    """A ``generate_fn`` over a diffusers StableDiffusionPipeline, seeded by CPU ``torch.Generator``s."""
    return PipelineGenerate(pipe, steps=steps, guidance_scale=guidance_scale, height=height, width=width)


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
    speed: dict | None = None  # this run's renders, acceptances, seconds, images per second
    settings: dict | None = None  # the run's settings (plan, seed, scheduler, steps, batch size, ...)

    def to_json(self) -> str:
        """The report as JSON (what ``rebalance_report.json`` holds)."""
        totals = {k: sum(g[k] for g in self.groups.values()) for k in ("requested", "generated", "accepted")}
        return json.dumps({"out_dir": str(self.out_dir), "totals": totals, "groups": self.groups,
                           "input": self.input, "label_prior": self.label_prior, "speed": self.speed,
                           "settings": self.settings}, indent=2)


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


@dataclass
class RunPlan:
    """What a rebalance (or its dry run) works from: the input rows, the slots each group lacks, names."""

    table: object
    rows: list[dict]
    columns: list[str]
    file_col: str
    suffix: str  # "" when the file column holds stems (image_name), else ".png"
    all_groups: list[tuple[str, ...]]
    plan: dict[tuple[str, ...], int]
    names: dict[str, tuple[str, int]]
    settings: dict
    scheme: ToneScheme
    groups: Sequence[str]
    tone_column: str
    prompt_fn: Callable[[dict], str]
    seed: int
    max_tries: int
    base: Path | None
    target: str | Mapping = DEFAULT_TARGET

    def jobs(self) -> list[Job]:
        """Every slot of every group, in a fixed order (the order processes share them in)."""
        jobs = []
        for gi, key in enumerate(self.all_groups):
            values = dict(zip(self.groups, key))
            prompt, wanted = self.prompt_fn(values), tone_name(values[self.tone_column], self.scheme)
            jobs += [Job(len(jobs) + i, gi, _label(key), i, values, prompt, wanted, _slot_name(self.seed, key, i))
                     for i in range(self.plan[key])]
        return jobs


def plan_run(dataset_dir, *, target=DEFAULT_TARGET, groups=("benign_malignant", "skin_tone"), prompt_fn=None,
             max_tries: int = 5, seed: int = 0, scheme="paper", tone_column: str = "skin_tone",
             file_column: str = "auto", data_cfg=None, value_maps=None, adapter=None, render=None) -> RunPlan:
    """Read the input and work out the slots (``rebalance``'s arguments; ``render``: image settings)."""
    _check_args(groups, tone_column, prompt_fn, max_tries)
    tone_scheme = get_scheme(scheme)
    data_cfg = data_cfg or data_config(dataset_dir, file_column=file_column)
    tone_map = (value_maps or DEFAULT_VALUE_MAPS).get(tone_column)
    table, data_cfg = read_input(data_cfg, groups, tone_column, tone_map)
    base = input_base(data_cfg)
    file_col, values, _ = real_names(table)
    rows = [{**r, file_col: value} for r, value in zip(table.rows, values)]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    all_groups, plan = _plan(rows, groups, tone_column, tone_scheme, target)
    suffix = "" if rows and not Path(rows[0][file_col]).suffix else ".png"
    source = Path(str(table.origin.get("metadata") or table.origin.get("dataset")))
    names = _slot_names(all_groups, plan, seed, suffix, {row[file_col] for row in rows}, source)
    settings = {"adapter": str(Path(adapter).resolve()) if adapter else None,
                "dataset_dir": str(base.resolve()) if base else str(data_cfg.dataset), "groups": list(groups),
                "seed": seed, "scheme": tone_scheme.name, "plan": {_label(k): n for k, n in plan.items()},
                **({"render": dict(render)} if render else {})}
    return RunPlan(table, rows, columns, file_col, suffix, all_groups, plan, names, settings, tone_scheme, groups,
                   tone_column, prompt_fn or default_prompt, seed, max_tries, base, target)


def rebalance(dataset_dir: str | os.PathLike | None, out_dir: str | os.PathLike, generate_fn: GenerateFn, *,
              link: bool = False, progress: bool = True, batch_size: int = 1, workers: int = 0,
              processes: Processes | None = None, run_settings: Mapping | None = None,
              **plan_kw) -> RebalanceReport:
    """Write ``out_dir``: the dataset's images and rows, accepted synthetic images for the groups
    ``plan_counts`` finds lacking, and ``rebalance_report.json``. Rerunning resumes (or adds nothing).

    ``plan_kw`` are ``plan_run``'s: ``target`` (keys: tuples of group values as strings, e.g.
    ``("malignant", "2")``), ``groups``, ``prompt_fn(row)`` (gets the group values; default
    ``default_prompt``), ``max_tries``, ``seed``, ``scheme``, ``tone_column``, ``file_column``, ``data_cfg``
    (a run's data section: replaces ``dataset_dir``; tones read as training reads them with ``value_maps``),
    ``adapter`` and ``render`` (image settings: a resumed run must use the same). ``link`` hard-links real
    images where possible. Synthetic images are ``syn<seed>_<group>_<slot>.png`` with PNG text chunks
    synthetic / prompt / seed; the output is an imagefolder training reads as it is.

    ``generate_fn(prompt, seed)`` (or its ``render_batch(prompts, seeds)``) renders ``batch_size`` slots at
    a time; ``workers`` CPU processes check them while the next batch renders. ``processes`` (several
    launched processes, e.g. ``launched_processes()``) share the slots; each writes its own rows, merged at
    the end. ``run_settings`` go into the report as they are.
    """
    rp, out = plan_run(dataset_dir, **plan_kw), Path(out_dir)
    procs = processes or Processes()
    if procs.rank == 0:
        _prepare_out(rp.base, out, rp.settings)
    procs.barrier()
    if procs.rank:
        _prepare_out(rp.base, out, rp.settings)
    with _locks(out, procs), disk_errors(out, "rebalance output"):  # one writer per file; disk full: 1 line
        if procs.rank == 0:
            _copy_real(out, list(zip(rp.table.images, real_names(rp.table)[2])), link)
            _init_metadata(out, rp.columns, rp.rows)
        procs.barrier()
        stats = _render_share(rp, out, generate_fn, procs, batch_size=batch_size, workers=workers,
                              progress=progress)
        procs.barrier()
        if procs.rank == 0:
            stats = gather_speed(out, stats, procs.world)
            merge_parts(out, rp.names, {_label(k): gi for gi, k in enumerate(rp.all_groups)}, rp.file_col)
        procs.barrier()  # the others read the merged files
        _, records = _load_state(out, rp.names, _init_metadata(out, rp.columns, rp.rows)[1], rp.file_col)
        summary = _summarise(rp.plan, records)
        accepted = {k: summary[_label(k)]["accepted"] for k in rp.all_groups}
        report = RebalanceReport(out, summary, stats["accepted"], out / REPORT_FILE,
                                 {"left_out": dict(rp.table.left_out), "tone": rp.table.tone},
                                 prior_report(rp.rows, list(rp.groups), rp.tone_column, accepted, rp.target),
                                 speed=stats, settings={**rp.settings, **(run_settings or {}),
                                                        "batch_size": batch_size, "workers": workers})
        if procs.rank == 0:
            atomic_write(report.path, report.to_json())
        return report


@contextlib.contextmanager
def _locks(out: Path, procs: Processes):
    """The output's lock (one run at a time: held by the first process) and each process's part lock."""
    with contextlib.ExitStack() as stack:
        if procs.rank == 0:
            stack.enter_context(folder_lock(out, "rebalance"))
        if procs.world > 1:
            stack.enter_context(folder_lock(out / PARTS_DIR / f"rank{procs.rank}", "rebalance process"))
        yield


def _render_share(rp: RunPlan, out: Path, generate_fn, procs: Processes, **kw) -> dict:
    """Render and check this process's share of the slots not done yet; returns its speed figures."""
    fieldnames, synthetic = _init_metadata(out, rp.columns, rp.rows)
    slots, _ = _load_state(out, rp.names, synthetic, rp.file_col)
    jobs = procs.share(rp.jobs())  # shared before looking at progress, so every process agrees
    for job in jobs:
        slot = slots.get((job.label, job.index), _Slot())
        job.attempt = rp.max_tries if slot.accepted else slot.tries
    writer = Writer(out, fieldnames, None if procs.world == 1 else procs.rank)
    checker = Checker(kw["workers"])
    try:
        stats = run_jobs(jobs, batch_fn(generate_fn), judge, rp.scheme, out=out, seed=rp.seed,
                         max_tries=rp.max_tries, batch_size=kw["batch_size"], checker=checker,
                         on_result=lambda *a: _record(rp, writer, *a), progress=kw["progress"])
    finally:
        checker.close()
    if procs.world > 1:
        atomic_write(writer.folder / SPEED_FILE, json.dumps(stats))
    return stats


def _record(rp: RunPlan, writer: Writer, job: Job, seed: int, reason: str | None, ita: float | None) -> None:
    """Write one try: the accepted image's metadata row (its image is saved already), then the journal."""
    if reason is None:
        row = {**dict.fromkeys(writer.fieldnames, ""), **job.values, "synthetic": "true", "seed": seed,
               "prompt": job.prompt, "ita_estimated": f"{ita:.3f}", "tone_source": "prompted (ITA-checked)",
               rp.file_col: job.name + rp.suffix}
        if "target" in row and "benign_malignant" in job.values:
            row["target"] = int(job.values["benign_malignant"] == "malignant")
        writer.row(row)
    writer.journal({"group": job.label, "slot": job.index, "try": job.attempt, "seed": seed, "reason": reason,
                    "ita": None if ita is None else round(ita, 3)})
