"""``dermdiff-lora``: a thin layer of subcommands over library functions (imports are lazy: --help is fast).

Each ``cmd_*`` parses nothing itself: it calls one library function with the parsed arguments and prints
its result. Errors of the package print one line and exit 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

# Modules that add their own subcommands with ``register(subparsers)`` (argparse only at import time).
SUBCOMMAND_MODULES: list[str] = ["tone", "adapters", "evaluate", "downstream", "review", "hub", "speed"]
# Commands that load no model: they skip importing diffusers/transformers just to quiet their logs.
LIGHT_COMMANDS = ("make-data", "audit", "card", "push", "pull", "inspect", "convert", "split", "fairness", "review")


def cmd_train(args) -> int:
    from ..training.train import run_from_cli

    summary = run_from_cli(args.config, args.overrides)
    _print_json(summary)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, steps=args.steps, overrides=args.overrides)
    return 0


def cmd_make_data(args) -> int:
    from ..tone.synthetic import make_dataset

    path = make_dataset(args.out, n=args.n, size=args.size, seed=args.seed, hair=args.hair,
                        overwrite=args.overwrite)
    print(f"wrote {args.n} synthetic images + metadata.csv to {path}")
    return 0


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ------------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dermdiff-lora",
        description="Fine-tune Stable Diffusion v1-x on dermatology images (LoRA or full UNet) to fight "
                    "skin-tone bias.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a LoRA adapter or a full UNet fine-tune from a config")
    p.add_argument("config", help="YAML config file or packaged name (demo, dermdiff_full, lora_24gb, full_24gb)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="tiny offline demo: make data, train a LoRA, export it, render a grid")
    p.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo config's)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("make-data", help="write a synthetic skin-lesion imagefolder with known tone")
    p.add_argument("out")
    p.add_argument("--n", type=int, default=60)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hair", type=int, default=0, help="hair strokes per image")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_make_data)
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(f"{__package__}.{module}").register(sub)
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("diffusers", "transformers", "accelerate", "peft", "bitsandbytes", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import diffusers
        import transformers

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from ..core.version import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ..core.errors import DermDiffError

    try:
        if args.command not in LIGHT_COMMANDS:
            _quiet_libraries()
        return args.func(args)
    except DermDiffError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

