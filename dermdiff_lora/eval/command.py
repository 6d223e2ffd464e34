"""``dermdiff-lora evaluate``: real vs generated images per diagnosis × tone cell, written beside the run.

What was trained is read, never retyped: the adapter's (or the generate record's adapter's) saved config
gives the prompt template, value maps and training data (for memorisation); ``--real`` only names the
held-out images. Outputs: ``eval.json`` (every figure with its extractor, image size, counts and seeds),
``eval.txt`` (the table), ``eval_fid.png`` (chart) and ``eval_closest_pairs.png`` (for a person to look at).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core import config as config_mod
from ..core.errors import ConfigError, DataError
from ..core.fsutil import atomic_write
from ..core.prompts import PromptBuilder, from_config
from ..data import duplicates as dup
from . import inputs, leakage
from .matches_csv import MEMORISATION_FILE, write_memorisation_csv
from .memorization import save_pairs_png
from .report import closest_pairs, evaluate_sets, format_table, save_chart

log = logging.getLogger(__name__)
EVAL_FILE = "eval.json"


@dataclass
class EvaluateOptions:
    """What ``evaluate`` compares and how (the CLI's flags, one for one)."""

    real: str | None = None  # held-out real images (dataset folder); default: the split file's test part
    generated: str | None = None  # a generate or rebalance output folder
    adapter: str | None = None  # a LoRA run (or file); renders per_cell images per cell when no generated
    out: str | None = None
    extractor: str = "dinov2"
    model_id: str | None = None
    per_cell: int = 8
    seed: int = 0
    steps: int = 20
    guidance_scale: float = 4.0
    tone_column: str | None = None
    base_only: bool = False  # render from the adapter's base without the adapter ("before" images)
    memorisation: bool = True
    duplicates: str | None = None  # duplicates.csv (default: beside the run's data.tones, else <data.dir>_audit/)
    overrides: list[str] = field(default_factory=list)  # key=value on top of the saved config
    overwrite: bool = False
    include_unreviewed: bool = False  # a reviewed rebalance folder: also the images no reader saw


def run_config(opts: EvaluateOptions) -> tuple[config_mod.Config, str | None]:
    """The saved config of the adapter (or of the generate record's first adapter), with overrides."""
    source = adapter_folder(opts.adapter or _recorded_adapter(opts.generated))
    saved = config_mod.load_saved(Path(source)) if source and Path(source).is_dir() else None
    if source and saved is None:
        log.warning("adapter %s has no saved config (%s): cells come from the default template and "
                    "memorisation is skipped; pass the folder `dermdiff-lora train` wrote", source,
                    config_mod.CONFIG_FILENAME)
    return config_mod.with_overrides(saved, opts.overrides), (source if saved else None)


def adapter_folder(path: str | None) -> str | None:
    """An adapter file (``pytorch_lora_weights.safetensors``) stands for its run folder, as in ``downstream``:
    the saved config, template and training data are there."""
    return str(Path(path).parent) if path and Path(path).is_file() else path


def _recorded_adapter(generated: str | None) -> str | None:
    """The adapter a ``generate`` record (first adapter) or a ``rebalance`` run record names."""
    if not generated:
        return None
    for name, pick in (("generate.json", lambda d: (d.get("settings", {}).get("adapters") or [[None]])[0][0]),
                       ("rebalance_run.json", lambda d: d.get("adapter"))):
        record = Path(generated) / name
        if record.is_file():
            try:
                found = pick(json.loads(record.read_text()))
            except (OSError, ValueError, AttributeError, IndexError):
                found = None
            return str(found) if found else None
    return None


def evaluate(opts: EvaluateOptions) -> dict:
    """Compare, write the outputs, return the result (the content of ``eval.json``)."""
    opts = replace(opts, adapter=adapter_folder(opts.adapter))
    cfg, source = run_config(opts)
    builder = from_config(cfg.prompts)
    if not builder.template:
        raise ConfigError("evaluate needs a prompt template to name the cells: pass --adapter (a run with "
                          "a saved config) or prompts.template=... with prompts.value_maps")
    columns = builder.columns
    out = _out_dir(opts)
    real = inputs.dataset_items(_real_data(cfg, opts.real), builder, columns)
    review: dict = {}  # what a clinician review of a rebalance folder let in
    generated = _generated(opts, cfg, builder, columns, out, review)
    train = _train_items(cfg, builder, columns, source) if opts.memorisation else None
    if train is not None:
        real = _held_out_real(real, train, opts.real)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pairs, lists = dup.load_all(opts.duplicates, cfg.data) if train is not None else ([], None)
    matches: list = []
    result = evaluate_sets(real, generated, train, extractor=opts.extractor, model_id=opts.model_id,
                           device=device, seed=opts.seed, duplicates=[(p.id_a, p.id_b) for p in pairs],
                           matches_out=matches,
                           **_tone_args(builder, opts.tone_column))
    if train is not None:
        result["memorisation"]["leakage"]["lists"] = lists
        if leakage.warning(result["memorisation"]["leakage"]):
            log.warning(leakage.warning(result["memorisation"]["leakage"]))
    result["inputs"] = {"real": str(opts.real or f"{cfg.data.split_file} (test part)"), "generated": opts.generated or str(out / "generated"),
                        "adapter": opts.adapter or source, "base_only": opts.base_only, "train": cfg.data.dir if train is not None else None,
                        "columns": columns, "template": builder.template, "review": review or None}
    _write_outputs(out, result, generated, train)
    if train is not None:
        write_memorisation_csv(out / MEMORISATION_FILE, matches, generated, train)
    return result


def _real_data(cfg, real: str | None):
    """``--real`` with the run's data settings, else the test part of the run's split file."""
    if real:
        return replace(cfg.data, dir=real, split_file=None, max_samples=None)
    if cfg.data.split_file:
        return replace(cfg.data, split_part="test", max_samples=None)
    raise ConfigError("evaluate needs --real DATASET (images the adapter was not trained on), or an adapter "
                      "trained with data.split_file (its test part is used)")


def _out_dir(opts: EvaluateOptions) -> Path:
    out = Path(opts.out or opts.adapter or opts.generated or "")
    if not str(out) or not out.is_dir() and opts.out is None:
        raise ConfigError("evaluate: pass --out DIR (or an --adapter run folder to write into)")
    if (out / EVAL_FILE).exists() and not opts.overwrite:
        raise ConfigError(f"{out / EVAL_FILE} already exists: pass --overwrite, or --out another folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _generated(opts: EvaluateOptions, cfg, builder: PromptBuilder, columns: list[str], out: Path,
               review: dict) -> list:
    if opts.generated:
        return inputs.generated_items(opts.generated, cfg.data, builder, columns,
                                      include_unreviewed=opts.include_unreviewed, review=review)
    if not opts.adapter:
        raise ConfigError("evaluate needs --generated FOLDER, or --adapter RUN to render images from")
    from ..generation.generate import GenerateSettings, generate

    adapters = [] if opts.base_only else [(opts.adapter, 1.0)]
    settings = GenerateSettings(base=cfg.model.base, revision=cfg.model.revision, adapters=adapters,
                                num_images=opts.per_cell, seed=opts.seed, steps=opts.steps,
                                guidance_scale=opts.guidance_scale, height=cfg.data.resolution,
                                width=cfg.data.resolution, grid=columns, template=builder.template,
                                value_maps=builder.to_dict()["value_maps"])
    generate(settings, out / "generated", overwrite=opts.overwrite)
    return inputs.generated_items(out / "generated", cfg.data, builder, columns)


def _train_items(cfg, builder: PromptBuilder, columns: list[str], source: str | None) -> list | None:
    """The adapter's training images as its saved config indexes them (None: no training set recorded)."""
    if source is None or not cfg.data.dir or not Path(cfg.data.dir).is_dir():
        log.warning("memorisation skipped: no training data recorded with the adapter (or its folder moved)")
        return None
    return inputs.dataset_items(cfg.data, builder, columns)


def _held_out_real(real: list, train: list, where: str) -> list:
    kept = inputs.held_out(real, train)
    if not kept:
        raise DataError(f"every real image in {where} was a training image: pass held-out images with --real "
                        "(e.g. the test split), or --no-memorisation")
    if len(kept) < len(real):
        log.warning("left %d training image(s) out of the real set (%d remain)", len(real) - len(kept), len(kept))
    return kept


def _tone_args(builder: PromptBuilder, wanted: str | None) -> dict:
    """ITA estimation and the paper's tone groups, when the tone words are the paper scheme's names."""
    from ..tone.skintone import SCHEMES, categorize, estimate_ita

    column = inputs.tone_column(builder, wanted)
    if column is None:
        return {}
    position = builder.columns.index(column)
    scheme = SCHEMES["paper"]
    named = set(builder.choices(column)) <= set(scheme.names)
    return {"estimate": lambda image: estimate_ita(image).ita,
            "categorize": (lambda ita: categorize(ita, scheme)) if named else None,
            "prompted_group": lambda cell: cell[position] if named else None}


def _write_outputs(out: Path, result: dict, generated: list, train: list | None) -> None:
    save_chart(result, out / "eval_fid.png")
    if train is not None and result["overall"].get("memorisation", {}).get("top"):
        save_pairs_png(closest_pairs(result, generated, train), out / "eval_closest_pairs.png")
    atomic_write(out / "eval.txt", format_table(result) + "\n")
    atomic_write(out / EVAL_FILE, json.dumps(result, indent=2))


def compare(a: str | os.PathLike, b: str | os.PathLike, *, force: bool = False) -> str:
    """Two ``eval.json`` files side by side (refused when extractor or image size differ, unless forced)."""
    from .report import compare_table

    runs = []
    for path in (Path(a), Path(b)):
        path = path / EVAL_FILE if path.is_dir() else path
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from None
    return compare_table(runs[0], runs[1], labels=(str(a), str(b)), force=force)
