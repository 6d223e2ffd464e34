"""``dermdiff-lora plan``: peak GPU memory of a training config, and the switches that make it fit."""

from __future__ import annotations

import json
import sys

NOT_FIT_EXIT = 3


def register(sub) -> None:
    p = sub.add_parser("plan", help="estimate the peak GPU memory of a training config and whether it fits",
                       description="Estimate peak GPU memory (weights, gradients, optimizer states, EMA, "
                                   "activations) of a training config without loading weights or data. "
                                   f"Exits 0 when it fits, {NOT_FIT_EXIT} when it does not.")
    p.add_argument("config", help="YAML config file or packaged name (demo, dermdiff_full, lora_24gb, full_24gb)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    p.add_argument("--gpu-memory", default="24GB", help="memory of the GPU to fit (default 24GB; 80GB, "
                                                        "22.5GiB, ...)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda (default), or cpu to compare with a CPU run's measured peak")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args) -> int:
    from ..core import config
    from ..training.memory import format_plan, parse_size, plan

    budget = parse_size(args.gpu_memory)
    cfg = config.load(args.config, args.overrides)
    print("simulating one training step on the meta device ...", file=sys.stderr, flush=True)
    result = plan(cfg, budget, device=args.device)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_plan(result))
    return 0 if result.fits else NOT_FIT_EXIT
