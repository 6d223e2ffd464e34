"""Offline evidence for the downstream question, on two CPU cores in well under 15 minutes.

A made-up, tone-imbalanced dataset where darker-skin malignant cases are rare is split by patient; a LoRA
is trained from the shipped ``tiny`` model on the train part only; ``rebalance`` (default target
``equal_keep_prior``) fills the (diagnosis, tone) groups of the train part with verified synthetic images;
``evaluate`` measures those images; ``downstream`` trains every arm (real, real+resample, real+lab,
real+synthetic) on the same split over 3 seeds, with paired bootstrap verdicts and counterfactual flips.
Every step is the CLI command or the library function behind it.

    PYTHONPATH=. .venv/bin/python scripts/downstream_evidence.py [--out outputs/evidence] [--no-docs]

Prints the tables and writes them between the markers in README.md (a summary) and
docs/downstream_evidence.md (every table), so the figures there are this script's.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

# Two classifiers of different strength, both offline: a small ResNet trained from scratch, and a linear
# probe on random-weight features (weak: it leans on colour, hence on tone).
CLASSIFIERS = {"resnet": ["--classifier", "resnet", "--model-id", "tiny-resnet", "--epochs", "15", "--lr", "3e-3"],
               "probe": ["--classifier", "probe", "--extractor", "tiny-dinov2"]}
TONES = {"lighter": (150, 45), "brown": (90, 27), "darker": (90, 12)}  # images, of which malignant


def make_data(root: Path, seed: int) -> Path:
    """Tone-imbalanced synthetic data with few darker malignant cases (a new folder, made once)."""
    from dermdiff_lora.tone.synthetic import make_dataset

    full = make_dataset(root / "full", n=sum(n for n, _ in TONES.values()), size=32, seed=seed,
                        tone_counts={t: n for t, (n, _) in TONES.items()}, malignant_fraction=0.3, overwrite=True)
    rows = list(csv.DictReader(open(full / "metadata.csv")))
    wanted = {str(i): m for i, (_, m) in enumerate(TONES.values())}  # skin_tone 0/1/2 -> malignant kept
    kept, seen = [], {k: 0 for k in wanted}
    for row in rows:
        if row["benign_malignant"] == "malignant":
            if seen[row["skin_tone"]] >= wanted[row["skin_tone"]]:
                continue
            seen[row["skin_tone"]] += 1
        kept.append(row)
    out = root / "data"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for row in kept:
        shutil.copy(full / f"{row['image_name']}.png", out / f"{row['image_name']}.png")
    with open(out / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(kept[0]))
        writer.writeheader()
        writer.writerows(kept)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/evidence")
    parser.add_argument("--steps", type=int, default=300, help="LoRA training steps")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite README.md and the docs page")
    parser.add_argument("--docs-only", action="store_true", help="rewrite them from the outputs in --out")
    args = parser.parse_args(argv)
    if args.docs_only:
        return _docs_from(Path(args.out), args.seed)
    import torch

    torch.set_num_threads(1)
    from dermdiff_lora.core import config
    from dermdiff_lora.downstream.command import result_text
    from dermdiff_lora.downstream.samples import split_dataset
    from dermdiff_lora.eval.command import EvaluateOptions, evaluate
    from dermdiff_lora.eval.report import format_table
    from dermdiff_lora.training.train import train

    root, t0, times = Path(args.out), time.time(), {}
    data = make_data(root, args.seed)
    split = root / "split.csv"
    split_dataset(data, split, fractions=(0.5, 0.2, 0.3), seed=args.seed)
    times["data + split"] = time.time() - t0
    run = root / "lora"
    cfg = config.load("demo", [f"data.dir={data}", f"data.split_file={split}", f"output.dir={run}",
                               "output.overwrite=true", f"train.max_steps={args.steps}", "logging.progress=false",
                               "validation.at_end=false", "logging.tensorboard=false"])
    train(cfg)
    times["train LoRA"] = time.time() - sum(times.values()) - t0
    balanced = root / "balanced"
    _rebalance(run, balanced, args.seed)
    times["rebalance"] = time.time() - sum(times.values()) - t0
    ev = evaluate(EvaluateOptions(generated=str(balanced), adapter=str(run), out=str(root / "eval"),
                                  extractor="tiny-dinov2", overwrite=True))
    times["evaluate"] = time.time() - sum(times.values()) - t0
    results = {name: _downstream(data, split, balanced, run, root / f"downstream_{name}", spec)
               for name, spec in CLASSIFIERS.items()}
    times["downstream (both classifiers)"] = time.time() - sum(times.values()) - t0
    timing = (f"minutes: {json.dumps({k: round(v / 60, 2) for k, v in times.items()})} "
              f"total {(time.time() - t0) / 60:.1f}")
    print(format_table(ev), "\n")
    for result in results.values():
        print(result_text(result), "\n")
    print(timing)
    (root / "timing.txt").write_text(timing + "\n")
    if not args.no_docs:
        _docs_from(root, args.seed)
    return 0


def data_line(data: Path, seed: int) -> str:
    """What the made-up dataset holds, counted from its metadata: ``Data (...): 315 images: lighter ...``."""
    rows = list(csv.DictReader(open(data / "metadata.csv")))
    parts = [f"{word} {sum(r['skin_tone'] == str(i) for r in rows)} "
             f"({sum(r['skin_tone'] == str(i) and r['benign_malignant'] == 'malignant' for r in rows)} malignant)"
             for i, word in enumerate(TONES)]
    return f"Data (`make_dataset`, seed {seed}, 32 px): {len(rows)} images: {', '.join(parts)}."


def _docs_from(root: Path, seed: int) -> int:
    """Write the docs from a finished run's outputs in ``root``."""
    from dermdiff_lora.downstream.command import result_text
    from dermdiff_lora.eval.report import format_table

    ev = json.loads((root / "eval" / "eval.json").read_text())
    results = {name: json.loads((root / f"downstream_{name}" / "downstream.json").read_text()) for name in CLASSIFIERS}
    write_docs(Path(__file__).resolve().parent.parent, ev_text=format_table(ev),
               prior=json.loads((root / "balanced" / "rebalance_report.json").read_text()), results=results,
               timing=(root / "timing.txt").read_text().strip(), texts={k: result_text(r) for k, r in results.items()},
               data=data_line(root / "data", seed))
    return 0


def _rebalance(run: Path, out: Path, seed: int) -> None:
    """``dermdiff-lora rebalance OUT --adapter RUN`` (the run's train part, equal counts per group)."""
    from dermdiff_lora.cli import app

    if out.exists():
        shutil.rmtree(out)
    code = app.main(["rebalance", str(out), "--adapter", str(run), "--steps", "20", "--guidance-scale", "2.0",
                     "--seed", str(seed)])
    if code:
        raise SystemExit(f"rebalance failed ({code})")


def _downstream(data: Path, split: Path, balanced: Path, run: Path, out: Path, spec: list[str]) -> dict:
    from dermdiff_lora.cli import app

    code = app.main(["downstream", str(data), "--split", str(split), "--synthetic", str(balanced), "--adapter",
                     str(run), "--out", str(out), "--seeds", "3", "--overwrite", *spec])
    if code:
        raise SystemExit(f"downstream failed ({code})")
    return json.loads((out / "downstream.json").read_text())


NAMES = {"resnet": "small ResNet", "probe": "linear probe (random features)"}
TONE_NAMES = {"0": "lighter", "1": "brown", "2": "darker"}
MARKERS = {"README.md": "downstream-evidence-summary", "docs/downstream_evidence.md": "downstream-evidence-results"}


def _cell(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    text = f"{entry['value']:.2f}"
    if "by_seed" in entry:  # mean over seeds: their spread, not a mean of per-seed interval ends
        sd = entry.get("sd_over_seeds")
        return text + (f" ± {sd:.2f}" if sd is not None else "")
    return text + (f" [{entry['low']:.2f}, {entry['high']:.2f}]" if entry.get("low") is not None else "")


def _verdict(result: dict, arm: str) -> str:
    diffs = result.get("comparison", {}).get("differences", {})
    if arm not in diffs:
        return "reference"
    names = result["comparison"]["metrics"]
    said = [f"{v['verdict']} on {names[m]}" for m, v in diffs[arm].items() if v["verdict"] != "not distinguishable"]
    return "; ".join(said) or "not distinguishable"


def summary_table(results: dict) -> list[str]:
    """One row per classifier x arm: test figures (mean ± sd over seeds), the paired verdict, the flip rate
    (mean over seeds, 95 % bootstrap interval over source images)."""
    lines = ["| classifier | arm | train images | bal. acc. | worst-group AUC | darker sensitivity | "
             "darker specificity | equalized-odds gap | flip rate | vs real only (paired) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        for arm, block in result["arms"].items():
            rep = block["report"]
            darker = rep["per_group"].get("darker", {}).get("metrics", {})
            flips = result.get("counterfactual", {}).get(arm, {}).get("overall")
            lines.append(f"| {NAMES.get(name, name)} | {block['name']} | {result['counts']['train'][arm]} | "
                         f"{_cell(rep['overall']['metrics']['balanced_accuracy'])} | "
                         f"{_cell(rep['gaps'].get('worst_group_auc'))} | "
                         f"{_cell(darker.get('sensitivity'))} | {_cell(darker.get('specificity'))} | "
                         f"{_cell(rep['gaps']['equalized_odds_difference'])} | {_cell(flips)} | "
                         f"{_verdict(result, arm)} |")
    return lines


def prior_lines(prior: dict) -> list[str]:
    """The rebalance's target, image counts and each tone group's malignant share before -> after."""
    block = prior["label_prior"]
    totals = prior.get("totals") or {}
    shares = ", ".join(f"{TONE_NAMES.get(t, t)} {block['before'][t].get('malignant', 0):.0%} -> "
                       f"{block['after'][t].get('malignant', 0):.0%}" for t in sorted(block["after"]))
    return [f"Rebalance target `{block['target']}` ({block['note']}): {totals.get('accepted')} synthetic images "
            f"accepted of {totals.get('requested')} requested; malignant share of each tone group's training "
            f"images before -> after: {shares}."]


def write_docs(root: Path, *, ev_text: str, prior: dict, results: dict, timing: str, texts: dict,
               data: str) -> None:
    """Replace the text between the markers in README.md and docs/downstream_evidence.md."""
    first = next(iter(results.values()))
    setup = (f"Test split {first['counts']['test']} images, validation {first['counts']['val']}, real train "
             f"{first['counts']['train_real']}; seeds {', '.join(map(str, first['seeds']))}; threshold by "
             f"Youden's J on val per arm and seed; bootstrap B = {first['comparison']['bootstrap']['n_boot']}. "
             f"Produced by `scripts/downstream_evidence.py`; {timing}.")
    readme = [data, "", *prior_lines(prior), "", *summary_table(results), "", setup]
    docs = [data, "", "### Rebalance", "", *prior_lines(prior), "", "### What evaluate says about the synthetic images",
            "", "```", ev_text, "```"]
    for name, text in texts.items():
        docs += ["", f"### {NAMES.get(name, name)}", "", "```", text, "```"]
    docs += ["", "### Summary", "", *summary_table(results), "", setup]
    for rel, lines in (("README.md", readme), ("docs/downstream_evidence.md", docs)):
        _replace(root / rel, MARKERS[rel], "\n".join(lines))


def _replace(path: Path, marker: str, text: str) -> None:
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    old = path.read_text(encoding="utf-8")
    if begin not in old or end not in old:
        raise SystemExit(f"{path} lacks the markers {begin} ... {end}")
    head, rest = old.split(begin, 1)
    new = f"{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
