"""Which PEFT method, when: LoRA, DoRA, LoHa and LoKr at matched trainable-parameter budgets.

Two models: the shipped `tiny` (32 px) and the mid-size SD-shaped pipeline of the speed benchmarks
(``speed_common.build_mid``: UNet 80/160/320/320, SD-1.x blocks, seeded random weights, 128 px). On each,
every method trains on the same synthetic images (same seed, steps, batch, LR), on attention + resnet
convolutions, with its rank (and LoKr's factor) chosen so that its trainable UNet parameters come closest to
LoRA r4's on that model. Reported: trained parameters, seconds per optimizer step (median over runs that
take the methods in turn) and its ratio to LoRA's, peak memory (``plan``'s simulation, CPU policy, and the
measured one: static tensors + the torch profiler's peak of one micro-step, as in ``plan_vs_measured.py``),
the adapter file's size, and the denoising loss on held-out images (another seed of the generator; fixed
noise and timesteps, v-target, adapter loaded back from its file as `generate` loads it).

On `tiny` also the tone fidelity per (diagnosis, tone) group: images generated for each of the six prompts
of the default template, the base model without an adapter first, each counted in group when the ITA
estimator puts it in the prompted tone group (``tone.fidelity``), with a Wilson 95 % interval of the total.
Writes docs/peft_methods.md.

    PYTHONPATH=. .venv/bin/python benchmarks/peft_methods.py [--steps-tiny 100] [--steps-mid 30]
        [--runs 3] [--seeds 16] [--threads 1] [--out docs/peft_methods.md]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import plan_vs_measured as pvm  # noqa: E402
import speed_common as sc  # noqa: E402
import torch  # noqa: E402

BUDGET = {"method": "lora", "rank": 4}
CANDIDATES = {"lora": [{"rank": 4}], "dora": [{"rank": r} for r in (2, 3, 4)],
              "loha": [{"rank": r} for r in (1, 2, 3, 4)],
              "lokr": [{"rank": r, "factor": f} for r in (1, 2, 4, 8) for f in (-1, 2, 4, 8, 16)]}
TARGETS = ["attention", "resnet_convs"]
OUT = Path(__file__).parent.parent / "docs" / "peft_methods.md"
WORDS = {"0": "lighter", "1": "brown", "2": "darker"}


@dataclass
class Setting:
    """One model of the table and how it trains."""

    label: str
    base: str
    size: int
    batch: int
    n_train: int
    n_held: int
    steps: int


def settings(method: str, rank: int, factor: int = -1):
    return types.SimpleNamespace(method=method, rank=rank, alpha=float(rank), dropout=0.0, rank_dropout=0.0,
                                 module_dropout=0.0, factor=factor, decompose_both=False, conv_rank=None,
                                 conv_alpha=None)


def trainable(unet, method: str, rank: int, factor: int = -1) -> int:
    from dermdiff_lora.adapters import methods

    unet = copy.deepcopy(unet)
    unet.add_adapter(methods.build_config(settings(method, rank, factor), TARGETS, unet))
    return sum(p.numel() for p in unet.parameters() if p.requires_grad)


def matched(base: str) -> dict[str, dict]:
    """Per method, the candidate whose trainable parameters are closest to LoRA r4's, with its count."""
    from dermdiff_lora.core.models import load_parts

    unet = load_parts(base).unet
    budget = trainable(unet, **BUDGET)
    out = {}
    for method, cands in CANDIDATES.items():
        counts = [(abs(trainable(unet, method, **c) - budget), i, c) for i, c in enumerate(cands)]
        choice = min(counts, key=lambda t: t[:2])[2]
        out[method] = {**choice, "params": trainable(unet, method, **choice)}
    return out


def overrides(s: Setting, method: str, choice: dict, data: Path, out: Path) -> list[str]:
    return [f"data.dir={data}", f"output.dir={out}", "data.file_column=image_name", f"data.resolution={s.size}",
            f"model.base={s.base}", f"train.max_steps={s.steps}", f"train.batch_size={s.batch}", "optim.lr=1e-3",
            "logging.tensorboard=false", "logging.progress=false", "validation.at_end=false",
            f"lora.method={method}", f"lora.rank={choice['rank']}", f"lora.alpha={choice['rank']}",
            f"lora.factor={choice.get('factor', -1)}", f"lora.target_modules=[{','.join(TARGETS)}]",
            "output.overwrite=true", f"speed.cache_dir={out.parent / 'latent-cache'}"]


def heldout_loss(base: str, adapter: Path, data: Path, n_timesteps: int = 4) -> float:
    """Mean v-prediction MSE on the held-out images, the adapter loaded as `generate` loads it."""
    import csv

    import numpy as np
    from PIL import Image

    from dermdiff_lora.adapters.apply import attach
    from dermdiff_lora.core.models import load_parts, load_pipeline

    pipe, sched = load_pipeline(base), load_parts(base).noise_scheduler  # the training scheduler
    if adapter is not None:
        attach(pipe, [(adapter, 1.0)], base_label=base)
    g = torch.Generator().manual_seed(0)
    losses = []
    with torch.no_grad():
        for row in csv.DictReader((data / "metadata.csv").open()):
            img = Image.open(data / f"{row['image_name']}.png").convert("RGB")
            x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
            latents = pipe.vae.encode(x / 127.5 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
            prompt = f"{row['benign_malignant']} skin disease on {WORDS[row['skin_tone']]} skin tone"
            ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            hidden = pipe.text_encoder(ids)[0]
            for _ in range(n_timesteps):
                t = torch.randint(0, sched.config.num_train_timesteps, (1,), generator=g)
                noise = torch.randn(latents.shape, generator=g)
                pred = pipe.unet(sched.add_noise(latents, noise, t), t, hidden).sample
                losses.append(float(((pred - sched.get_velocity(latents, noise, t)) ** 2).mean()))
    return statistics.mean(losses)


def train_once(s: Setting, method: str, choice: dict, data: Path, out: Path) -> float:
    """Seconds per optimizer step of one training run, its adapter saved in ``out``."""
    from dermdiff_lora.core import config
    from dermdiff_lora.training import train

    run, state = train.start(config.load(None, overrides(s, method, choice, data, out)))
    t0 = time.perf_counter()
    train.fit(run, state, s.steps)
    seconds = (time.perf_counter() - t0) / s.steps
    train.finish(run, state, 0.0)
    return seconds


def measure_setting(s: Setting, work: Path, runs: int) -> list[dict]:
    """Every method on one model: runs take the methods in turn, so a change of load hits them alike."""
    from dermdiff_lora.core import config
    from dermdiff_lora.tone.synthetic import make_dataset

    train_dir = make_dataset(work / f"{s.label}-train", n=s.n_train, size=s.size, seed=0)
    held = make_dataset(work / f"{s.label}-held", n=s.n_held, size=s.size, seed=1)
    choices = matched(s.base)
    times: dict[str, list[float]] = {m: [] for m in choices}
    for i in range(runs):
        for method, choice in choices.items():
            times[method].append(train_once(s, method, choice, train_dir, work / f"{s.label}-{method}-{i}"))
    rows = []
    for method, choice in choices.items():
        out = work / f"{s.label}-{method}-0"
        sc.fresh_accelerate()
        peaks = pvm.measure(config.load(None, overrides(s, method, choice, train_dir, work / "peak")))
        rows.append({"method": method, **choice, "step_s": statistics.median(times[method]),
                     "spread": (min(times[method]), max(times[method])), "out": out,
                     "planned": peaks["planned"], "measured": peaks["measured"],
                     "file": (out / "pytorch_lora_weights.safetensors").stat().st_size,
                     "loss": heldout_loss(s.base, out, held)})
    return rows + [{"method": None, "loss": heldout_loss(s.base, None, held)}]


def tone_fidelity(adapters: dict[str, Path | None], seeds: list[int]) -> dict[str, dict[tuple[str, str], list]]:
    """Per adapter (None: the base alone), per (diagnosis, tone) prompt: its generated images' samples."""
    from dermdiff_lora.adapters.apply import attach
    from dermdiff_lora.core.models import load_pipeline
    from dermdiff_lora.core.prompts import DEFAULT_TEMPLATE, DEFAULT_VALUE_MAPS, PromptBuilder
    from dermdiff_lora.tone import fidelity

    builder = PromptBuilder(DEFAULT_TEMPLATE, DEFAULT_VALUE_MAPS)
    out = {}
    for label, adapter in adapters.items():
        pipe = load_pipeline("tiny")
        if adapter is not None:
            attach(pipe, [(adapter, 1.0)], base_label="tiny")
        cells: dict[tuple[str, str], list] = {}
        for smp in fidelity.generate_samples(pipe, builder, seeds, steps=20, guidance_scale=4.0, size=32):
            cells.setdefault((smp.words["benign_malignant"], smp.words["skin_tone"]), []).append(smp)
        out[label] = cells
    return out


def cost_table(s: Setting, rows: list[dict]) -> list[str]:
    base = next(r for r in rows if r["method"] == "lora")
    lines = ["| method | rank (LoKr factor) | trained parameters | s / step (runs' min–max) | step time vs LoRA "
             "| peak (plan, simulated) | peak (measured) | file size | held-out denoising loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["method"] is None:
            lines.append(f"| base alone, no adapter | | | | | | | | {r['loss']:.4f} |")
            continue
        rank = f"{r['rank']}" + (f" (factor {r['factor']})" if r["method"] == "lokr" else "")
        lines.append(f"| {r['method']} | {rank} | {r['params']:,} | {r['step_s']:.3f} ({r['spread'][0]:.3f}–{r['spread'][1]:.3f}) | "
                     f"{r['step_s'] / base['step_s']:.2f}× | {r['planned'] / 1e6:.1f} MB | "
                     f"{r['measured'] / 1e6:.1f} MB | {r['file'] / 1e3:.1f} kB | {r['loss']:.4f} |")
    return lines


def tone_table(samples: dict[str, dict[tuple[str, str], list]]) -> list[str]:
    """Per adapter and prompt: images in the prompted tone group out of all, and their mean ITA."""
    from scipy.stats import binomtest

    cells = list(next(iter(samples.values())))
    lines = ["| adapter | " + " | ".join(f"{d} {t}" for d, t in cells) + " | all (Wilson 95 %) |",
             "|---" * (len(cells) + 2) + "|"]
    for label, per in samples.items():
        hits = {c: sum(s.category == c[1] for s in per[c]) for c in cells}
        itas = {c: [s.ita for s in per[c] if s.ita is not None] for c in cells}
        total, n = sum(hits.values()), sum(len(per[c]) for c in cells)
        ci = binomtest(total, n).proportion_ci(method="wilson")
        lines.append(f"| {label} | " + " | ".join(
            f"{hits[c]}/{len(per[c])}, ITA {statistics.mean(itas[c]) if itas[c] else float('nan'):.0f}°"
            for c in cells) + f" | {total}/{n} ({ci.low:.0%}–{ci.high:.0%}) |")
    return lines


def document(sections: list[tuple[Setting, list[dict]]], tones: list[str], args, load: float) -> str:
    command = (f"benchmarks/peft_methods.py --steps-tiny {args.steps_tiny} --steps-mid {args.steps_mid} "
               f"--runs {args.runs} --seeds {args.seeds} --threads {args.threads}")
    parts = ["# Which PEFT method, when (measured)", "",
             f"Written by `{command}` (do not edit by hand). Every method trains on attention + resnet "
             "convolutions with alpha = rank, AdamW lr 1e-3, on synthetic images (`tone.synthetic`, seed 0; "
             "held-out images: seed 1), its rank (and LoKr's factor) chosen so that its trained UNet parameters "
             "come closest to LoRA r4's on that model. s / step: median of "
             f"{args.runs} runs that take the methods in turn, {args.threads} CPU thread(s) of {os.cpu_count()} "
             f"(load average {load:.1f} at the end). Peak: `plan`'s simulation (CPU policy) and the measured one "
             "(static tensors + the torch profiler's peak of one micro-step after a warm-up step). Held-out "
             "loss: v-prediction MSE over 4 seeded timesteps per image, adapter loaded from its file.", ""]
    if load > (os.cpu_count() or 1):
        parts += [f"The load average ({load:.1f}) was above the {os.cpu_count()} CPUs: the step times mostly "
                  "measure the other jobs, so their ratios say nothing about the methods here.", ""]
    for s, rows in sections:
        what = ("the shipped `tiny` model" if s.base == "tiny" else "the mid-size SD-shaped pipeline "
                "(`speed_common.build_mid`: UNet 80/160/320/320, SD-1.x blocks, seeded **random** weights: the loss "
                "is how far each adapter gets from an untrained base, not fine-tuning quality)")
        parts += [f"## {s.label}: {what}", "",
                  f"{s.size} px, {s.n_train} training images, {s.n_held} held-out, {s.steps} steps of batch "
                  f"{s.batch}.", ""] + cost_table(s, rows) + [""]
    parts += ["## Tone fidelity per group on `tiny`", "",
              "Images in the prompted ITA tone group (border estimate, paper scheme: darker below −30°, brown "
              f"−30° to 28°, lighter above) out of {args.seeds} seeds (1000…{999 + args.seeds}) per prompt of the "
              "default template, and their mean ITA; 32 px, 20 steps of the base's "
              "scheduler, guidance 4.0; each adapter is the `tiny` run above (`…-0`) loaded at scale 1.", ""]
    parts += tones + ["",
                      "Small models, one training seed, one learning rate for every method (LoHa and LoKr may train "
                      "better at another), CPU: what each method costs and whether it trains, not a ranking for SD "
                      "v1-4. Read a difference as real only where it is larger than the run-to-run "
                      "spread of the step times and outside the interval of the tone counts.", ""]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps-tiny", type=int, default=100)
    parser.add_argument("--steps-mid", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sc.setup_process(args.threads)
    work = sc.workdir()
    try:
        mid = str(sc.build_mid(work / "mid"))
        setups = [Setting("tiny", "tiny", 32, 8, 96, 48, args.steps_tiny),
                  Setting("mid-size", mid, sc.MID_RESOLUTION, 2, 16, 8, args.steps_mid)]
        sections = [(s, measure_setting(s, work, args.runs)) for s in setups]
        adapters = {"base `tiny`, no adapter": None, **{r["method"]: r["out"] for r in sections[0][1] if r["method"]}}
        tones = tone_table(tone_fidelity(adapters, list(range(1000, 1000 + args.seeds))))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(document(sections, tones, args, os.getloadavg()[0]))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
