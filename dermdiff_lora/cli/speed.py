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
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="training processes (GPUs) under DDP: what each of them holds (default: the "
                        "--accelerate-config's num_processes, else 1)")
    p.add_argument("--accelerate-config", metavar="YAML",
                   help="an accelerate config (e.g. configs/accelerate/multi_gpu.yaml): its num_processes")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)


def processes_of(args) -> int:
    """``--processes``, else the accelerate config's ``num_processes`` (1 when it does not distribute)."""
    from ..core.errors import ConfigError

    if args.processes is not None:
        if args.processes < 1:
            raise ConfigError(f"--processes {args.processes}: expected 1 or more")
        return args.processes
    if not args.accelerate_config:
        return 1
    import yaml

    try:
        acc = yaml.safe_load(open(args.accelerate_config, encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--accelerate-config {args.accelerate_config}: {exc}") from None
    if str(acc.get("distributed_type", "NO")).upper() == "NO":
        return 1
    return int(acc.get("num_processes", 1))


def cmd_plan(args) -> int:
    from ..core import config
    from ..training.memory import format_plan, parse_size, plan

    budget = parse_size(args.gpu_memory)
    cfg = config.load(args.config, args.overrides)
    print("simulating one training step on the meta device ...", file=sys.stderr, flush=True)
    result = plan(cfg, budget, device=args.device, processes=processes_of(args))
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_plan(result))
    return 0 if result.fits else NOT_FIT_EXIT
