"""``dermdiff-lora downstream``: a lesion classifier trained on real only vs real + synthetic, same split.

Arms (``--arms``, default all): ``real``, ``real+resample``, ``real+lab``, ``real+synthetic`` (``arms``), each
adding as many images per (label, tone) cell as the rebalance folder's synthetic rows; the paired
bootstrap of each arm's difference from ``real`` (``paired``) and the counterfactual flip rates
(``flips``) are reported beside the per-group tables (``arm_tables``); ``study`` runs the loop.

Inputs: the real dataset folder (read with the adapter's saved data settings and value maps, plus
``key=value`` overrides), a split file (``dermdiff-lora split``) that decides train / val / test, and a
``rebalance`` output folder whose synthetic rows join the train split only. The adapter that made the
synthetic images must have been trained on train-split images only: its saved config names its training
data, which is checked against the split file (``splits.check_no_leak``); a leak is refused, naming the
patients. For each seed, both arms are trained, the threshold is chosen on val (binary), and the test split
is reported per tone group; the seeds are averaged (``seeds.average_reports``).

Outputs in ``--out``: ``downstream.json`` (everything, per seed too; split, seeds and threshold rule once),
``downstream.txt`` (the side-by-side table), ``downstream.png`` (chart),
``predictions/<arm>_seed<S>_<split>.csv`` (readable by ``fairness``; ``_counterfactual.csv`` by
``fairness --counterfactual``) and ``lab_images/`` (the CIELAB-shifted copies).
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
from ..data import duplicates as dup
from ..data.reviewed import summary_line
from ..data.splits import check_no_leak, crossing_copies, read_split_file, sidecar_path
from .arm_tables import arms_text
from .arms import KEYS, parse_arms
from .chart import save_arms_chart
from .classifier import ClassifierSpec, load_classifier
from .predictions import parse_threshold
from .runs import Task, make_task, split_of
from .samples import assign_splits, counts, dataset_settings, read_samples, read_synthetic, training_rows
from .seeds import average_reports
from .study import run_study

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
    duplicates: str | None = None  # duplicates.csv (default: beside data.tones, else <dataset>_audit/; "none")
    arms: str | list[str] | None = "all"  # real, real+resample, real+lab, real+synthetic (comma-separated)
    counterfactual: bool = True  # flip rates of test images shifted into each other tone group
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


def _leak_check(saved, splits, opts: DownstreamOptions) -> dict[str, Any]:
    """Refuse an adapter trained on val/test patients, or on copies of their images; record what was checked.

    The adapter's training rows are read as its saved config reads them, whatever part of its own split file
    it used. A check that finds none of them in the split proves nothing and is an error.
    """
    id_col = splits.meta.get("id_col", "patient_id")
    rows = training_rows(saved, id_col)
    pairs, lists = dup.load_all(opts.duplicates, saved.data, dirs=[opts.dataset])
    result = check_no_leak(rows, splits, id_col=id_col, duplicates=[(p.id_a, p.id_b) for p in pairs])
    if result["n_matched"] == 0:
        part = (f", part {saved.data.split_part!r} of its split file {saved.data.split_file}"
                if saved.data.split_file else "")
        raise DataError(f"none of the adapter's {result['n_checked']} training images (data.dir {saved.data.dir}"
                        f"{part}; e.g. {', '.join(r['file'] for r in rows[:3])}) is in split file {opts.split} "
                        f"(e.g. {', '.join(list(splits.assignment)[:3])}), by file name or {id_col}: the check "
                        "cannot tell whether it saw held-out patients. Pass the adapter trained on this "
                        "dataset's split (data.split_file, train part), or write the split from its data")
    crossing = crossing_copies(splits, [(p.id_a, p.id_b) for p in pairs])
    return {**result, "adapter_training_data": saved.data.dir, "id_col": id_col, "refused": False,
            "duplicates": {**lists, "copies_crossing_split": crossing}}


def _read(opts: DownstreamOptions, cfg, splits, review: dict) -> tuple[list, list, str, str]:
    """(real samples with splits, synthetic samples, label column, tone column); ``review`` receives what a
    clinician review of the synthetic folder let in."""
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
                               include_unreviewed=opts.include_unreviewed, review=review)
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
    leak = _leak_check(saved, splits, opts)
    review: dict = {}
    real, synthetic, label_col, tone_col = _read(opts, cfg, splits, review)
    task = _task(opts, cfg, real, label_col, tone_col)
    arms, arm_warnings = parse_arms(opts.arms, task.groups)
    out = _out_dir(opts)
    clf = load_classifier(spec, task.classes)
    data = {s: split_of(real, s) for s in ("train", "val", "test")} | {"synthetic": synthetic}
    study = run_study(clf, arms, data, task, seeds, out, counterfactual=opts.counterfactual and not arm_warnings)
    result = _result(opts, clf.info, spec, task, seeds, splits, leak, real, synthetic, study)
    result["warnings"] += arm_warnings
    result["inputs"].update({"adapter": str(adapter), "label_column": label_col, "tone_column": tone_col,
                             "review": review or None})
    _write(out, result)
    return result


def _result(opts, info, spec, task, seeds, splits, leak, real, synthetic, study) -> dict[str, Any]:
    """The content of ``downstream.json``."""
    per_seed = study["per_seed"]
    warnings = []
    if len(seeds) < 3:
        warnings.append(f"only {len(seeds)} seed(s): use at least 3 to see the spread from training randomness")
    crossing = leak["duplicates"]["copies_crossing_split"]
    if crossing:
        warnings.append(f"{crossing} group(s) of copies of one image ({leak['duplicates']['file'] or 'listed'}) lie "
                        "in more than one part of the split: the classifier is tested on copies of its training "
                        "images; write the split again with `dermdiff-lora split --duplicates`")
    if info.get("random_weights"):
        warnings.append("the classifier's model has random weights (a test model): its figures mean nothing")
    warnings += [f"{KEYS[arm]}: {sum(short.values())} image(s) short of the rebalance's counts ({short})"
                 for arm, short in study["shortfall"].items()]
    threshold = {"rule": "argmax of scores (multi-class)"} if not task.binary else {
        "rule": "malignant if score >= threshold", "setting": task.threshold,
        "chosen_on": "validation split" if task.threshold == "youden" else "fixed on the command line",
        "by_seed": {arm: [r["threshold"]["value"] for r in reports] for arm, reports in per_seed.items()}}
    n_train = len(split_of(real, "train"))
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
                   "train": {arm: reports[0]["n_train"] for arm, reports in per_seed.items()},
                   "train_real": n_train, "added_per_cell": study["added_per_cell"],
                   "val": len(split_of(real, "val")), "test": len(split_of(real, "test")),
                   "synthetic": len(synthetic)},
        "arms": {arm: {"name": KEYS[arm], "report": average_reports(reports, seeds), "per_seed": reports}
                 for arm, reports in per_seed.items()},
        "comparison": study["paired"], "counterfactual": study["counterfactual"],
        "lab_shifts": study["lab_shifts"],
        "warnings": warnings,
        "outputs": {"json": RESULT_FILE, "table": TABLE_FILE, "chart": CHART_FILE, "predictions": "predictions/",
                    "lab_images": study["lab_shifts"]["folder"] + "/"},
    }


def describe(result: dict[str, Any]) -> list[str]:
    """Header lines naming the classifier, model, image size, seeds, split file and counts."""
    info, split, n = result["classifier"], result["split_file"], result["counts"]
    sizes = ", ".join(f"{result['arms'][arm]['name']} {k}" for arm, k in n["train"].items())
    lines = [f"Classifier: {info['classifier']} ({info['model']}), model {info['model_id']}, "
             f"{info['image_size']} px; seeds {', '.join(map(str, result['seeds']))}",
             f"Split file: {split['path']} (sha256 {split['sha256']})",
             f"Images: train {sizes} ({n['synthetic']} synthetic; each added arm adds the rebalance's count "
             f"per cell), val {n['val']}, test {n['test']}; adapter checked: {result['inputs']['adapter']} "
             f"({result['leak_check']['n_matched']} of its training images found in the split, none held out"
             f"{_copies_checked(result['leak_check'])})"]
    review = result["inputs"].get("review")
    return lines + ([f"Synthetic: {summary_line(review)}"] if review else []) + [
        f"WARNING: {w}" for w in result["warnings"]]


def _copies_checked(leak: dict[str, Any]) -> str:
    """', no copy of a held-out image (N pairs of copies checked)' where a duplicates list was read."""
    pairs = leak.get("n_duplicate_pairs")
    return f", none a copy of a held-out image ({pairs} pairs of copies checked)" if pairs else \
        ", no list of copies read (run `dermdiff-lora audit`)"


def result_text(result: dict[str, Any]) -> str:
    """The header lines, the arms side by side, the paired differences and the flips (``downstream.txt``)."""
    return "\n".join([*describe(result), "", arms_text(result)])


def _write(out: Path, result: dict[str, Any]) -> None:
    info = result["classifier"]
    text = result_text(result)
    save_arms_chart([(a["name"], a["report"]) for a in result["arms"].values()], out / CHART_FILE,
                    title=f"{info['model_id']} ({info['classifier']}), mean of {len(result['seeds'])} seeds, "
                          f"split {str(result['split_file']['sha256'])[:12]}")
    atomic_write(out / TABLE_FILE, text + "\n")
    save_json(result, out / RESULT_FILE)
