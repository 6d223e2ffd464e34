"""Offline evidence for the downstream question, on two CPU cores in well under 15 minutes.

A made-up, tone-imbalanced dataset where darker-skin malignant cases are rare is split by patient; a LoRA
is trained from the shipped ``tiny`` model on the train part only; ``rebalance`` fills the missing
(diagnosis, tone) groups of the train part with verified synthetic images; ``evaluate`` measures those
images; ``downstream`` compares a classifier trained on real images only with one trained on real +
synthetic, on the same split, over 3 seeds. Every step is the library function behind the CLI command.

    PYTHONPATH=. .venv/bin/python scripts/downstream_evidence.py [--out outputs/evidence]

Prints the side-by-side tables; docs/downstream_evidence.md records one run.
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
    args = parser.parse_args(argv)
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
    print(format_table(ev), "\n")
    for result in results.values():
        print(result_text(result), "\n")
    print("minutes:", json.dumps({k: round(v / 60, 2) for k, v in times.items()}),
          f"total {(time.time() - t0) / 60:.1f}")
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


if __name__ == "__main__":
    sys.exit(main())
