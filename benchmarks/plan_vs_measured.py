"""``plan``'s peak-memory estimate vs the measured peak of real training steps, on the CPU.

Measured = the static tensors of the live run (weights on the device, optimizer states, EMA) + the peak of
tensor allocations during one micro-step after a warm-up step, from the torch profiler's memory events
(tensor allocations, not process RSS), plus gradients held from the previous micro-step under gradient
accumulation. Planned = ``memory.plan(cfg, device="cpu")``. Each setting runs in
this process one after the other; the tiny model at 32² and 64², and the mid-size one at 128².

    PYTHONPATH=. python benchmarks/plan_vs_measured.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import speed_common as sc  # noqa: E402

GB = 1e9
TINY = [  # (label, resolution, overrides)
    ("lora b2", 32, ["train.mode=lora", "train.batch_size=2"]),
    ("lora b8 no cache", 32, ["train.mode=lora", "train.batch_size=8", "speed.cache_latents=off"]),
    ("full+EMA b4", 32, ["train.mode=full", "train.batch_size=4"]),
    ("full+EMA b4 ckpt", 32, ["train.mode=full", "train.batch_size=4", "train.gradient_checkpointing=true"]),
    ("full b8 8bit accum2", 32, ["train.mode=full", "train.ema=false", "train.batch_size=8",
                                 "optim.name=adamw8bit", "optim.min_8bit_size=256",
                                 "train.gradient_accumulation=2"]),
    ("lora b8 64² no cache", 64, ["train.mode=lora", "train.batch_size=8", "speed.cache_latents=off"]),
    ("full b8 64² bf16", 64, ["train.mode=full", "train.ema=false", "train.batch_size=8",
                              "train.mixed_precision=bf16"]),
]
MID = [
    ("mid lora b4", ["train.mode=lora", "train.batch_size=4"]),
    ("mid lora b4 ckpt", ["train.mode=lora", "train.batch_size=4", "train.gradient_checkpointing=true"]),
    ("mid full b2 no cache", ["train.mode=full", "train.ema=false", "train.batch_size=2",
                              "speed.cache_latents=off"]),
]


def measure(cfg) -> dict:
    """Planned and measured peak bytes of one micro-step of ``cfg``."""
    from dermdiff_lora.training import memory, train
    from dermdiff_lora.training.memsim import profiled_peak

    planned = memory.plan(cfg, device="cpu", suggest=False)
    sc.fresh_accelerate()
    run = train.setup(cfg, resuming=False)
    batches = iter(train.make_loader(run, 0, cfg.train.gradient_accumulation + 2))
    for _ in range(cfg.train.gradient_accumulation):  # warm-up: optimizer states exist afterwards
        sc.train_step(run, next(batches))
    if cfg.train.gradient_accumulation > 1:  # measure a micro-step that starts with gradients alive
        sc.train_step(run, next(batches))
    static = sc.static_bytes(run)
    held_grads = sum(p.grad.numel() * p.grad.element_size() for p in run.params if p.grad is not None)
    batch = next(batches)
    dynamic = held_grads + profiled_peak(lambda: sc.train_step(run, batch))
    run.accelerator.end_training()
    return {"planned": planned.peak, "measured": sum(static.values()) + dynamic,
            "planned_dynamic": planned.parts["activations"] + planned.parts["gradients"],
            "measured_dynamic": dynamic,
            "static_match": static == {k: planned.parts[k] for k in static}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    sc.setup_process(args.threads)
    root = sc.workdir()
    t0 = time.time()
    data = {32: sc.make_data(root / "data32", 16, 32), 64: sc.make_data(root / "data64", 16, 64)}
    rows = [(label, sc.make_cfg(data[res], root / "run", "model.base=tiny-random",
                                f"data.resolution={res}", *ov)) for label, res, ov in TINY]
    if not args.quick:
        mid = sc.build_mid(root / "mid")
        data128 = sc.make_data(root / "data128", 8, sc.MID_RESOLUTION)
        rows += [(label, sc.make_cfg(data128, root / "run", f"model.base={mid}",
                                     f"data.resolution={sc.MID_RESOLUTION}", *ov)) for label, ov in MID]
    print(f"{'setting':<24}{'planned MB':>11}{'measured MB':>12}{'error':>8}"
          f"{'dyn planned':>12}{'dyn measured':>13}  static exact")
    errors = []
    for label, cfg in rows:
        r = measure(cfg)
        err = (r["planned"] - r["measured"]) / r["measured"]
        errors.append(abs(err))
        print(f"{label:<24}{r['planned'] / 1e6:11.2f}{r['measured'] / 1e6:12.2f}{err:+8.1%}"
              f"{r['planned_dynamic'] / 1e6:12.2f}{r['measured_dynamic'] / 1e6:13.2f}  {r['static_match']}",
              flush=True)
    print(f"\nlargest |error| {max(errors):.1%}, mean {sum(errors) / len(errors):.1%} "
          f"({len(rows)} settings, {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
