"""``dermdiff-lora downstream``: a lesion classifier trained on real only vs real + synthetic, same split.

Inputs: the real dataset folder (read with the adapter's saved data settings and value maps, plus
``key=value`` overrides), a split file (``dermdiff-lora split``) that decides train / val / test, and a
``rebalance`` output folder whose synthetic rows join the train split only. The adapter that made the
synthetic images must have been trained on train-split images only: its saved config names its training
data, which is checked against the split file (``splits.check_no_leak``); a leak is refused, naming the
patients. For each seed, both arms are trained, the threshold is chosen on val (binary), and the test split
is reported per tone group; the seeds are averaged (``seeds.average_reports``).

Outputs in ``--out``: ``downstream.json`` (everything, per seed too), ``downstream.txt`` (the side-by-side
table), ``downstream.png`` (chart), ``predictions/<arm>_seed<S>_<split>.csv`` (readable by ``fairness``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import config as config_mod
from ..core.errors import ConfigError, DataError
from ..core.fsutil import atomic_write, save_json
from ..data.splits import check_no_leak, read_split_file, sidecar_path
from .chart import save_chart
from .classifier import ClassifierSpec, load_classifier
from .predictions import parse_threshold
from .runs import ARM_NAMES, ARMS, Task, make_task, run_arm, split_of
from .samples import assign_splits, counts, dataset_settings, read_samples, read_synthetic, training_rows
from .seeds import average_reports
from .tables import compare_table

log = logging.getLogger(__name__)
SCHEMA = "dermdiff-lora/downstream/v1"
RESULT_FILE, TABLE_FILE, CHART_FILE = "downstream.json", "downstream.txt", "downstream.png"
RUN_RECORD = "rebalance_run.json"


@dataclass
class DownstreamOptions:
    """What ``downstream`` compares and how (the CLI's flags, one for one)."""

    dataset: str  # the real dataset folder (all splits)
    split: str  # split file written by `dermdiff-lora split`
    synthetic: str  # a rebalance output folder
    out: str
    adapter: str | None = None  # the LoRA run that made the synthetic images (else the rebalance record's)
    classifier: ClassifierSpec = field(default_factory=ClassifierSpec)
    seeds: int | list[int] = 3  # a count (0..N-1) or the seeds themselves
    threshold: str | float = "youden"  # chosen on the validation split, or fixed
    label_column: str | None = None  # default: the config's data.diagnosis_column
    tone_column: str | None = None  # default: the config's data.tone_column
    positive_class: str | None = None  # binary: default "malignant"
    n_boot: int = 1000
    boot_seed: int = 0
    level: float = 0.95
    overrides: list[str] = field(default_factory=list)
    overwrite: bool = False
    include_unreviewed: bool = False  # a reviewed rebalance folder: also the images no reader saw


def seed_list(seeds: int | list[int] | str) -> list[int]:
    """``3`` -> [0, 1, 2]; ``"0,5,9"`` or [0, 5, 9] -> those seeds; ConfigError otherwise."""
    try:
        if isinstance(seeds, str):
            seeds = [int(s) for s in seeds.split(",")] if "," in seeds else int(seeds)
        out = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    except ValueError:
        out = []
    if not out or len(set(out)) != len(out) or min(out) < 0:
        raise ConfigError(f"seeds {seeds!r} must be a count >= 1 (e.g. 3) or distinct seeds >= 0 (e.g. 0,1,2)")
    return out


def _adapter_folder(opts: DownstreamOptions) -> Path:
    """The adapter run folder: ``--adapter`` (a folder or a file in it), else the rebalance record's."""
    source = opts.adapter
    record = Path(opts.synthetic) / RUN_RECORD
    if source is None and record.is_file():
        try:
            source = json.loads(record.read_text(encoding="utf-8")).get("adapter")
        except (OSError, ValueError):
            source = None
    if not source:
        raise ConfigError(f"downstream needs the adapter that made {opts.synthetic}: pass --adapter RUN, so "
                          "its training data can be checked against the split file (no test patient may "
                          "have been used to train it)")
    path = Path(source)
    folder = path.parent if path.is_file() else path
    if not (folder / config_mod.CONFIG_FILENAME).is_file():
        raise ConfigError(f"adapter {source} has no saved config ({config_mod.CONFIG_FILENAME}) naming its "
                          "training data; pass the run folder that `dermdiff-lora train` wrote")
    return folder


def _leak_check(saved, splits, split_path: str) -> dict[str, Any]:
    """Refuse an adapter trained on val/test patients; record what was checked."""
    id_col = splits.meta.get("id_col", "patient_id")
    result = check_no_leak(training_rows(saved, id_col), splits, id_col=id_col)
    if result["n_matched"] == 0:
        log.warning("none of the adapter's %d training images is in split file %s: it was trained on another "
                    "dataset (no leak possible) or its file names differ", result["n_checked"], split_path)
    return {**result, "adapter_training_data": saved.data.dir, "id_col": id_col, "refused": False}


def _read(opts: DownstreamOptions, cfg, splits) -> tuple[list, list, str, str]:
    """(real samples with splits, synthetic samples, label column, tone column)."""
    label_col = opts.label_column or cfg.data.diagnosis_column
    tone_col = opts.tone_column or cfg.data.tone_column
    maps = cfg.prompts.value_maps
    real = read_samples(dataset_settings(cfg.data, opts.dataset), maps, label_col, tone_col)
    real = assign_splits(real, splits, opts.split)
    for split in ("train", "val", "test"):
        if not split_of(real, split):
            raise DataError(f"split file {opts.split} puts no image of {opts.dataset} in {split}; write a "
                            "split with enough patients in every split")
    classes = sorted({s.label for s in real})
    synthetic = read_synthetic(cfg.data, maps, label_col, tone_col, opts.synthetic, classes,
                               include_unreviewed=opts.include_unreviewed)
    return real, synthetic, label_col, tone_col


def _task(opts: DownstreamOptions, cfg, real: list, label_col: str, tone_col: str) -> Task:
    maps = cfg.prompts.value_maps
    threshold = parse_threshold(opts.threshold)
    return make_task(real, list(dict.fromkeys(maps.get(label_col, {}).values())),
                     list(dict.fromkeys(maps.get(tone_col, {}).values())), opts.positive_class,
                     threshold=threshold, n_boot=opts.n_boot, boot_seed=opts.boot_seed, level=opts.level)


def _out_dir(opts: DownstreamOptions) -> Path:
    out = Path(opts.out)
    if (out / RESULT_FILE).exists() and not opts.overwrite:
        raise ConfigError(f"{out / RESULT_FILE} already exists: pass --overwrite, or --out another folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def downstream(opts: DownstreamOptions) -> dict[str, Any]:
    """Compare real-only with real + synthetic training; write the outputs; return ``downstream.json``."""
    seeds = seed_list(opts.seeds)
    spec = opts.classifier.check()
    adapter = _adapter_folder(opts)
    saved = config_mod.load_saved(adapter)
    cfg = config_mod.with_overrides(saved, opts.overrides)
    splits = read_split_file(opts.split)
    leak = _leak_check(saved, splits, opts.split)
    real, synthetic, label_col, tone_col = _read(opts, cfg, splits)
    task = _task(opts, cfg, real, label_col, tone_col)
    out = _out_dir(opts)
    clf = load_classifier(spec, task.classes)
    train, val, test = (split_of(real, s) for s in ("train", "val", "test"))
    per_seed: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for seed in seeds:
        for arm, arm_train in zip(ARMS, (train, train + synthetic)):
            log.info("downstream: %s, seed %d, %d training images", arm, seed, len(arm_train))
            report, texts = run_arm(clf, arm_train, val, test, task, seed)
            per_seed[arm].append(report)
            for split, text in texts.items():
                atomic_write(out / "predictions" / f"{arm}_seed{seed}_{split}.csv", text)
    result = _result(opts, clf.info, spec, task, seeds, splits, leak, real, synthetic, per_seed)
    result["inputs"].update({"adapter": str(adapter), "label_column": label_col, "tone_column": tone_col})
    _write(out, result)
    return result


def _result(opts, info, spec, task, seeds, splits, leak, real, synthetic, per_seed) -> dict[str, Any]:
    """The content of ``downstream.json``."""
    warnings = []
    if len(seeds) < 3:
        warnings.append(f"only {len(seeds)} seed(s): use at least 3 to see the spread from training randomness")
    if info.get("random_weights"):
        warnings.append("the classifier's model has random weights (a test model): its figures mean nothing")
    threshold = {"rule": "argmax of scores (multi-class)"} if not task.binary else {
        "rule": "malignant if score >= threshold", "setting": task.threshold,
        "chosen_on": "validation split" if task.threshold == "youden" else "fixed on the command line",
        "by_seed": {arm: [r["threshold"]["value"] for r in per_seed[arm]] for arm in ARMS}}
    return {
        "schema": SCHEMA, "task": "binary" if task.binary else "multiclass", "classes": task.classes,
        "positive_class": task.positive, "groups": task.groups, "classifier": info,
        "classifier_settings": spec.as_dict(), "seeds": seeds, "threshold": threshold,
        "split_file": {"path": str(opts.split), "sha256": splits.meta.get("csv_sha256"),
                       "sidecar": str(sidecar_path(opts.split)), "seed": splits.meta.get("seed"),
                       "fractions": splits.meta.get("fractions"), "id_col": splits.meta.get("id_col")},
        "inputs": {"dataset": str(opts.dataset), "synthetic": str(opts.synthetic),
                   "overrides": list(opts.overrides)},
        "leak_check": leak,
        "counts": {"images": counts(real + synthetic),
                   "train": {"real_only": len(split_of(real, "train")),
                             "real_plus_synthetic": len(split_of(real, "train")) + len(synthetic)},
                   "val": len(split_of(real, "val")), "test": len(split_of(real, "test")),
                   "synthetic": len(synthetic)},
        "arms": {arm: {"name": name, "report": average_reports(per_seed[arm], seeds), "per_seed": per_seed[arm]}
                 for arm, name in zip(ARMS, ARM_NAMES)},
        "warnings": warnings,
        "outputs": {"json": RESULT_FILE, "table": TABLE_FILE, "chart": CHART_FILE, "predictions": "predictions/"},
    }


def describe(result: dict[str, Any]) -> list[str]:
    """Header lines naming the classifier, model, image size, seeds, split file and counts."""
    info, split, n = result["classifier"], result["split_file"], result["counts"]
    lines = [f"Classifier: {info['classifier']} ({info['model']}), model {info['model_id']}, "
             f"{info['image_size']} px; seeds {', '.join(map(str, result['seeds']))}",
             f"Split file: {split['path']} (sha256 {split['sha256']})",
             f"Images: train {n['train']['real_only']} real + {n['synthetic']} synthetic, val {n['val']}, "
             f"test {n['test']}; adapter checked: {result['inputs']['adapter']} "
             f"({result['leak_check']['n_matched']} of its training images found in the split, none held out)"]
    return lines + [f"WARNING: {w}" for w in result["warnings"]]


def result_text(result: dict[str, Any]) -> str:
    """The header lines and the side-by-side table of a downstream result (``downstream.txt``)."""
    a, b = (result["arms"][arm]["report"] for arm in ARMS)
    return "\n".join([*describe(result), "", compare_table(a, b, ARM_NAMES)])


def _write(out: Path, result: dict[str, Any]) -> None:
    a, b = (result["arms"][arm]["report"] for arm in ARMS)
    info = result["classifier"]
    text = result_text(result)
    save_chart(a, b, out / CHART_FILE, names=ARM_NAMES,
               title=f"{info['model_id']} ({info['classifier']}), mean of {len(result['seeds'])} seeds, "
                     f"split {str(result['split_file']['sha256'])[:12]}")
    atomic_write(out / TABLE_FILE, text + "\n")
    save_json(result, out / RESULT_FILE)
