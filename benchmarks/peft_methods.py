"""Which PEFT method, when: LoRA, DoRA, LoHa and LoKr at matched trainable-parameter budgets on `tiny`.

Each method trains from the shipped `tiny` model on the same synthetic images (same seed, steps, batch, LR),
on attention + resnet convolutions, with its rank (and LoKr's factor) chosen so that its trainable parameters
come closest to LoRA r4's. Reported: trained parameters, seconds per optimizer step (median of 3 runs) and its
ratio to LoRA's, the peak memory `plan` simulates for the config (CPU policy), the adapter file's size, and
the denoising loss on held-out images (another seed of the generator; fixed noise and timesteps, v-target,
adapter loaded back from its file as `generate` loads it). Writes docs/peft_methods.md.

    PYTHONPATH=. .venv/bin/python benchmarks/peft_methods.py [--steps 150] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import types
from pathlib import Path

import torch

BUDGET = {"method": "lora", "rank": 4}
CANDIDATES = {"lora": [{"rank": 4}], "dora": [{"rank": r} for r in (2, 3, 4)],
              "loha": [{"rank": r} for r in (1, 2, 3, 4)],
              "lokr": [{"rank": r, "factor": f} for r in (1, 2, 4, 8) for f in (-1, 2, 4, 8, 16)]}
TARGETS = ["attention", "resnet_convs"]
OUT = Path(__file__).parent.parent / "docs" / "peft_methods.md"


def settings(method: str, rank: int, factor: int = -1):
    return types.SimpleNamespace(method=method, rank=rank, alpha=float(rank), dropout=0.0, rank_dropout=0.0,
                                 module_dropout=0.0, factor=factor, decompose_both=False, conv_rank=None,
                                 conv_alpha=None)


def trainable(method: str, rank: int, factor: int = -1) -> int:
    from dermdiff_lora.adapters import methods
    from dermdiff_lora.core.models import load_parts

    unet = load_parts("tiny").unet
    unet.add_adapter(methods.build_config(settings(method, rank, factor), TARGETS, unet))
    return sum(p.numel() for p in unet.parameters() if p.requires_grad)


def matched() -> dict[str, dict]:
    """Per method, the candidate whose trainable parameters are closest to LoRA r4's."""
    budget = trainable(**BUDGET)
    return {m: min(cands, key=lambda c, m=m: abs(trainable(m, **c) - budget)) for m, cands in CANDIDATES.items()}


def overrides(method: str, choice: dict, data: Path, out: Path, steps: int) -> list[str]:
    return [f"data.dir={data}", f"output.dir={out}", "data.file_column=image_name", "data.resolution=32",
            "model.base=tiny", f"train.max_steps={steps}", "train.batch_size=8", "optim.lr=1e-3",
            "logging.tensorboard=false", "logging.progress=false", "validation.at_end=false",
            f"lora.method={method}", f"lora.rank={choice['rank']}", f"lora.alpha={choice['rank']}",
            f"lora.factor={choice.get('factor', -1)}", f"lora.target_modules=[{','.join(TARGETS)}]",
            "output.overwrite=true"]


def heldout_loss(adapter: Path, data: Path, n_timesteps: int = 4) -> float:
    """Mean v-prediction MSE on the held-out images, the adapter loaded as `generate` loads it."""
    import csv

    import numpy as np
    from PIL import Image

    from dermdiff_lora.adapters.apply import attach
    from dermdiff_lora.core.models import load_parts, load_pipeline

    pipe, sched = load_pipeline("tiny"), load_parts("tiny").noise_scheduler  # the training scheduler
    attach(pipe, [(adapter, 1.0)], base_label="tiny")
    rows = list(csv.DictReader((data / "metadata.csv").open()))
    words = {"0": "lighter", "1": "brown", "2": "darker"}
    g = torch.Generator().manual_seed(0)
    losses = []
    with torch.no_grad():
        for row in rows:
            img = Image.open(data / f"{row['image_name']}.png").convert("RGB")
            x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
            latents = pipe.vae.encode(x / 127.5 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
            prompt = f"{row['benign_malignant']} skin disease on {words[row['skin_tone']]} skin tone"
            ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            hidden = pipe.text_encoder(ids)[0]
            for _ in range(n_timesteps):
                t = torch.randint(0, sched.config.num_train_timesteps, (1,), generator=g)
                noise = torch.randn(latents.shape, generator=g)
                pred = pipe.unet(sched.add_noise(latents, noise, t), t, hidden).sample
                losses.append(float(((pred - sched.get_velocity(latents, noise, t)) ** 2).mean()))
    return statistics.mean(losses)


def measure(method: str, choice: dict, train_dir: Path, held: Path, work: Path, steps: int) -> dict:
    from dermdiff_lora.core import config
    from dermdiff_lora.training import memory, train

    times = []
    for i in range(3):
        cfg = config.load(None, overrides(method, choice, train_dir, work / f"{method}-{i}", steps))
        run, state = train.start(cfg)
        t0 = time.perf_counter()
        train.fit(run, state, steps)
        times.append((time.perf_counter() - t0) / steps)
        train.finish(run, state, 0.0)
    cfg = config.load(None, overrides(method, choice, train_dir, work / f"{method}-0", steps))
    peak = memory.plan(cfg, device="cpu", suggest=False, detail=False).peak
    file = work / f"{method}-0" / "pytorch_lora_weights.safetensors"
    return {"method": method, **choice, "params": trainable(method, **choice), "step_s": statistics.median(times),
            "peak": peak, "file": file.stat().st_size, "loss": heldout_loss(work / f"{method}-0", held)}


def table(rows: list[dict], steps: int, threads: int, load: float) -> str:
    base = next(r for r in rows if r["method"] == "lora")
    lines = ["| method | rank (LoKr factor) | trained parameters | s / step | step time vs LoRA | simulated peak "
             "(plan, CPU) | file size | held-out denoising loss |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rank = f"{r['rank']}" + (f" (factor {r['factor']})" if r["method"] == "lokr" else "")
        lines.append(f"| {r['method']} | {rank} | {r['params']:,} | {r['step_s']:.4f} | "
                     f"{r['step_s'] / base['step_s']:.2f}× | {r['peak'] / 1e6:.1f} MB | {r['file'] / 1e3:.1f} kB | "
                     f"{r['loss']:.4f} |")
    return ("# Which PEFT method, when (measured on `tiny`)\n\n"
            f"Written by `benchmarks/peft_methods.py --steps {steps} --threads {threads}` (do not edit by hand). "
            "Base `tiny` (32 px), 96 synthetic training images (seed 0), 48 held-out images (seed 1), "
            f"{steps} steps of batch 8, AdamW lr 1e-3, targets attention + resnet convolutions, alpha = rank; "
            "ranks chosen so that each method's trained UNet parameters come closest to LoRA r4's. s / step: "
            f"median of 3 runs on {threads} CPU thread(s) of {os.cpu_count()} (load average "
            f"{load:.1f} at the end: other jobs share the machine); held-out loss: v-prediction MSE over 4 seeded "
            "timesteps per image, adapter loaded from its file.\n\n" + "\n".join(lines) + "\n\n"
            + (f"The load average ({load:.1f}) was above the {os.cpu_count()} CPUs: the step times mostly measure "
               "the other jobs, so their ratios say nothing about the methods here.\n\n"
               if load > (os.cpu_count() or 1) else "")
            + "One small model, one seed, CPU: a check that every method trains and what it costs here, not a "
            "ranking for SD v1-4 (the mid-size SD-shaped pipeline and tone fidelity per group are not measured "
            "yet).\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from dermdiff_lora.tone.synthetic import make_dataset

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_dir = make_dataset(work / "train", n=96, size=32, seed=0)
        held = make_dataset(work / "held", n=48, size=32, seed=1)
        rows = [measure(m, c, train_dir, held, work, args.steps) for m, c in matched().items()]
    OUT.write_text(table(rows, args.steps, args.threads, os.getloadavg()[0]))
    print(OUT.read_text())


if __name__ == "__main__":
    main()
