"""Training configurations side by side on the tiny model: LoRA vs full, AdamW vs AdamW8bit.

Each configuration trains in its own subprocess (so peak RSS is its own); the configurations take turns
for ``--rounds`` rounds (machine load hits all alike) and each figure is the median over rounds: seconds
per optimizer step (after 2 warm-up steps), the process's peak RSS, and the optimizer-state bytes
(``optim.optimizer_state_bytes``).

    PYTHONPATH=. python benchmarks/train_configs.py [--rounds 2] [--steps 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import speed_common as sc  # noqa: E402

CONFIGS = {
    "LoRA r4 + AdamW": ["train.mode=lora", "optim.name=adamw"],
    "LoRA r4 + AdamW8bit": ["train.mode=lora", "optim.name=adamw8bit"],
    "full + EMA + AdamW": ["train.mode=full", "optim.name=adamw"],
    "full + EMA + AdamW8bit": ["train.mode=full", "optim.name=adamw8bit"],
}
WARMUP = 2


def worker(spec: dict) -> dict:
    """Train one configuration for ``steps`` steps; runs inside its own subprocess."""
    sc.setup_process(spec["threads"])
    os.environ["DERMDIFF_CACHE"] = spec["cache"]
    from dermdiff_lora.training import train
    from dermdiff_lora.training.optim import optimizer_state_bytes

    cfg = sc.make_cfg(Path(spec["data"]), Path(spec["out"]), "data.resolution=32", "train.batch_size=4",
                      "optim.min_8bit_size=1024", *spec["overrides"])
    run = train.setup(cfg, resuming=False)
    batches = iter(train.make_loader(run, 0, WARMUP + spec["steps"]))
    times = []
    for i in range(WARMUP + spec["steps"]):
        start = time.perf_counter()
        sc.train_step(run, next(batches))
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
    return {"s_per_step": statistics.median(times), "optimizer_bytes": optimizer_state_bytes(run.optimizer),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "trained_params": sum(p.numel() for p in run.params)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    sc.quiet()
    root = sc.workdir()
    data = sc.make_data(root / "data", 16, 32)
    from dermdiff_lora.core.models import ensure_tiny_random

    ensure_tiny_random()  # built once, before the workers race for it
    results: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    t0 = time.time()
    for r in range(args.rounds):
        for i, (name, overrides) in enumerate(CONFIGS.items()):
            spec = {"data": str(data), "out": str(root / f"run{i}-{r}"), "overrides": overrides,
                    "steps": args.steps, "threads": args.threads, "cache": os.environ["DERMDIFF_CACHE"]}
            out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], check=True,
                                 capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "."})
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"tiny-random, 32², batch 4, fp32, {args.threads} thread(s), {args.steps} steps × "
          f"{args.rounds} rounds ({time.time() - t0:.0f} s)")
    print(f"{'configuration':<26}{'trained':>10}{'s/step':>9}{'peak RSS MB':>13}{'optimizer bytes':>17}")
    for name, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"{name:<26}{int(med['trained_params']):>10,}{med['s_per_step']:9.3f}"
              f"{med['peak_rss'] / 1e6:13.0f}{int(med['optimizer_bytes']):>17,}")


if __name__ == "__main__":
    main()
