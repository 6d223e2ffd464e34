"""``dermdiff-lora`` subcommands for adapters: generate, inspect, merge, combine, extract, resize, convert.

Each handler calls one library function (imported lazily, so ``--help`` stays fast) and prints its result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BLANK_EXIT = 3  # generate: some images came out blank (all black / uniform)


def adapter_spec(text: str) -> tuple[str, float]:
    """``PATH`` or ``PATH:SCALE`` → (path, scale)."""
    path, sep, scale = text.rpartition(":")
    if sep:
        try:
            return path, float(scale)
        except ValueError:
            pass
    return text, 1.0


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _print(obj, as_json: bool, table=None) -> None:
    print(json.dumps(obj, indent=2, default=str) if as_json or table is None else table(obj))


def _error_table(result: dict) -> str:
    """Per-layer rows (rank, relative error, energy) and the overall figures."""
    lines = [f"{'layer':<72} {'rank':>9} {'rel_error':>10} {'energy':>8}"]
    for row in result["layers"]:
        rank = f"{row.get('rank_in', row.get('max_rank', '?'))}→{row['rank']}"
        energy = row.get("energy", 1.0 - row["rel_error"] ** 2)
        lines.append(f"{row['layer']:<72} {rank:>9} {row['rel_error']:>10.3e} {energy:>8.4f}")
    for row in result.get("not_carried", []):
        change = "n/a" if row["rel_change"] is None else f"{row['rel_change']:.3e}"
        lines.append(f"not carried: {row['param']} ({row['module_type']}) residual ‖Δ‖={row['residual_norm']:.3e} "
                     f"(relative {change})")
    lines.append(f"overall: relative error {result['rel_error']:.3e}, energy kept {result['energy']:.6f}"
                 + (f"; whole-UNet change lost {result['total_rel_error']:.3e}" if "total_rel_error" in result
                    else ""))
    lines.append(f"wrote {result['output']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ handlers
def _base_of(args, source: str | None, fallback: str | None = None) -> tuple[str, str | None]:
    """``--base`` if given, else the base recorded with the adapter or training output (nothing retyped)."""
    if args.base:
        return args.base, args.revision
    if source:
        from ..adapters import lora
        from ..adapters.io import saved_config

        path = adapter_spec(source)[0]
        meta = lora.read_metadata(path) if not Path(path).joinpath("model_index.json").is_file() else {}
        saved = (saved_config(path) or {}).get("config", {}).get("model", {})
        base = meta.get("base_model") or saved.get("base")
        if base:
            return base, args.revision or meta.get("base_revision") or saved.get("revision")
    if fallback:
        return fallback, None
    from ..core.errors import ConfigError

    raise ConfigError(f"cannot tell the base model of {source or 'this command'}: pass --base")


def cmd_generate(args) -> int:
    from ..generation.generate import GenerateSettings, generate

    if args.settings:
        settings = GenerateSettings.from_json(args.settings)
    else:
        base, revision = _base_of(args, args.adapter[0] if args.adapter else None, fallback="tiny-random")
        settings = GenerateSettings(
            base=base, revision=revision, adapters=[adapter_spec(a) for a in args.adapter],
            prompts=args.prompt, grid=_csv(args.grid) if args.grid else None,
            negative_prompt=args.negative_prompt, seed=args.seed, num_images=args.num_images, steps=args.steps,
            guidance_scale=args.guidance, scheduler=args.scheduler, height=args.height, width=args.width,
            batch_size=args.batch_size, dtype=args.dtype, safety_checker=args.safety_checker,
            allow_pickle=args.allow_pickle)
    record = generate(settings, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"wrote {len(record['images'])} image(s), {', '.join(record['grids'])} and generate.json to {args.out}")
    if record["blank"]:
        print(f"warning: {len(record['blank'])} image(s) came out blank (all black or uniform) and were not "
              "saved, e.g. seed {seed} '{prompt}'; with --safety-checker on, SD blacks out what it flags; "
              "fp16 can overflow to black".format(**record["blank"][0]))
        return BLANK_EXIT
    return 0


def cmd_inspect(args) -> int:
    from ..adapters.inspect import format_table, inspect_adapter

    _print(inspect_adapter(args.adapter, allow_pickle=args.allow_pickle), args.json, format_table)
    return 0


def cmd_merge(args) -> int:
    from ..adapters.merge import merge

    base, revision = _base_of(args, args.adapter[0])
    result = merge(base, [adapter_spec(a) for a in args.adapter], args.out, dtype=args.dtype,
                   revision=revision, overwrite=args.overwrite, allow_pickle=args.allow_pickle)
    _print(result, True)
    return 0


def cmd_combine(args) -> int:
    from ..adapters.combine import combine

    result = combine([adapter_spec(a) for a in args.adapters], args.out, rank=args.rank,
                     overwrite=args.overwrite, allow_pickle=args.allow_pickle)
    _print(result, args.json, _error_table)
    return 0


def cmd_extract(args) -> int:
    from ..adapters.extract import extract

    base, revision = _base_of(args, args.tuned)
    result = extract(args.tuned, base, args.out, rank=args.rank, energy=args.energy,
                     targets=_csv(args.targets) if args.targets else None, revision=revision,
                     allow_pickle=args.allow_pickle, overwrite=args.overwrite, device=args.device)
    _print(result, args.json, _error_table)
    return 0


def cmd_resize(args) -> int:
    from ..adapters.resize import resize

    result = resize(args.adapter, args.out, rank=args.rank, energy=args.energy, overwrite=args.overwrite,
                    allow_pickle=args.allow_pickle)
    _print(result, args.json, _error_table)
    return 0


def cmd_convert(args) -> int:
    from ..adapters.convert import convert

    result = convert(args.adapter, args.out, to=args.to, overwrite=args.overwrite, allow_pickle=args.allow_pickle)
    print(f"wrote {result['layers']} layers as {result['to']} keys to {result['output']}")
    for note in result["notes"]:
        print(f"note: {note}")
    return 0


# ------------------------------------------------------------------------------------------------ parsers
def _common(p: argparse.ArgumentParser, out_help: str, json_flag: bool = True) -> None:
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--allow-pickle", action="store_true", help="allow .bin/.ckpt/.pt inputs (pickle can run code)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print the report as JSON")


def _rank_or_energy(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--rank", type=int, help="target rank of every layer")
    group.add_argument("--energy", type=float, help="per-layer rank keeping this fraction of Σs² (e.g. 0.9)")


SPEC = "PATH[:SCALE] (folder or .safetensors, diffusers or kohya keys; scale defaults to 1)"


def register(sub) -> None:
    _generate_parser(sub)
    _adapter_parsers(sub)


def _generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="render images with a base model + adapters (or a full fine-tune)")
    p.add_argument("--base", default=None, help="Hub id, pipeline folder (a full fine-tune too), tiny-random; "
                   "default: the adapter's recorded base (tiny-random without adapters)")
    p.add_argument("--revision", default=None)
    p.add_argument("--adapter", action="append", default=[], metavar="PATH[:SCALE]", help=SPEC + "; repeatable")
    p.add_argument("--prompt", action="append", default=[], help="free-text prompt (repeatable); default: every "
                   "combination of the adapter's prompt template")
    p.add_argument("--grid", help="template columns in grid order, rows first, e.g. benign_malignant,skin_tone")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-images", type=int, default=1, help="images per prompt (seeds seed, seed+1, ...)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale")
    p.add_argument("--scheduler", default="default", help="default (the base's), auto (DPM-Solver++ from "
                   "the base's config), pndm, ddim, ddpm, euler, euler_a, dpm++, unipc, heun")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--safety-checker", action="store_true", help="run SD's NSFW checker (off: it blacks out skin)")
    p.add_argument("--settings", help="replay a generate.json written by an earlier run (other flags ignored)")
    p.add_argument("--no-progress", action="store_true")
    _common(p, "output folder (images/, grid.png, generate.json)", json_flag=False)
    p.set_defaults(func=cmd_generate)


def _adapter_parsers(sub) -> None:
    p = sub.add_parser("inspect", help="rank, alpha, targets, size, base and prompts of an adapter")
    p.add_argument("adapter", help="adapter folder or file (diffusers or kohya keys)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--allow-pickle", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("merge", help="fuse adapter(s) into the base → a full pipeline folder")
    p.add_argument("--base", default=None, help="Hub id, pipeline folder or tiny-random (default: the "
                   "adapter's recorded base)")
    p.add_argument("--revision", default=None)
    p.add_argument("--adapter", action="append", required=True, metavar="PATH[:SCALE]", help=SPEC + "; repeatable")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    _common(p, "output pipeline folder", json_flag=False)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("combine", help="weighted sum of adapters as one adapter (exact, or SVD to --rank)")
    p.add_argument("adapters", nargs="+", metavar="PATH[:WEIGHT]")
    p.add_argument("--rank", type=int, default=None, help="compress each layer to this rank by SVD")
    _common(p, "output adapter folder or .safetensors file")
    p.set_defaults(func=cmd_combine)

    p = sub.add_parser("extract", help="LoRA from a full fine-tune minus its base, by SVD")
    p.add_argument("tuned", help="full fine-tune output folder (or its unet/ folder)")
    p.add_argument("--base", default=None, help="the base it was fine-tuned from (Hub id, folder, tiny-random; "
                   "default: model.base of its saved dermdiff_config.yaml)")
    p.add_argument("--revision", default=None)
    _rank_or_energy(p)
    p.add_argument("--targets", help="module name suffixes, e.g. to_q,to_k,to_v,to_out.0 or all "
                   "(default: every Linear/Conv2d in the down/mid/up blocks)")
    p.add_argument("--device", default="cpu", help="where the SVDs run (cpu, cuda)")
    _common(p, "output adapter folder or .safetensors file")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("resize", help="change an adapter's rank by SVD, reporting the energy kept")
    p.add_argument("adapter")
    _rank_or_energy(p)
    _common(p, "output adapter folder or .safetensors file")
    p.set_defaults(func=cmd_resize)

    p = sub.add_parser("convert", help="diffusers ↔ kohya/A1111/ComfyUI keys (exact round trip)")
    p.add_argument("adapter")
    p.add_argument("--to", required=True, choices=("kohya", "diffusers"))
    _common(p, "output .safetensors file or folder", json_flag=False)
    p.set_defaults(func=cmd_convert)
