"""Skin-tone subcommands: ``audit`` (ITA per image, counts, chart) and ``rebalance`` (fill missing groups)."""

from __future__ import annotations

import json

from ..core.config import PRESETS


def _source_args(p) -> None:
    p.add_argument("--preset", default=None, choices=PRESETS, help="a public dataset's layout (DATASET = its download)")
    p.add_argument("--metadata", default=None, help="metadata .csv/.jsonl/.parquet (relative to DATASET)")
    p.add_argument("--images", nargs="+", default=[], help="image folder(s) (relative to DATASET)")
    p.add_argument("--split", default="train", help="split of a Hub / datasets dataset")
    p.add_argument("--file-column", default="auto")


def register(sub) -> None:
    p = sub.add_parser("audit", help="estimate skin tone (ITA) per image; counts per diagnosis x tone + chart")
    p.add_argument("dataset", nargs="?", help="imagefolder, a preset's download folder, or a Hub dataset "
                                              "user/name[@rev] (never modified)")
    p.add_argument("--out", default=None, help="tones .csv or .jsonl (default: <dataset>_audit/tones.csv)")
    p.add_argument("--strategy", default="border", choices=("border", "whole", "center_excluded"))
    p.add_argument("--scheme", default="paper", choices=("paper", "del_bino"))
    p.add_argument("--diagnosis-column", default="benign_malignant")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _source_args(p)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("rebalance", help="generate checked synthetic images for the under-represented groups")
    p.add_argument("paths", nargs="+", metavar="[DATASET] OUT",
                   help="OUT: new imagefolder of real + synthetic images (resumable); DATASET (never modified) "
                        "defaults to the training data recorded with --adapter/--model")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--adapter", action="append", metavar="PATH[:SCALE]",
                     help="LoRA output folder or file (its base, prompt template and data are used); repeatable: "
                          "one adapter is fused into the weights for the run, several stay unfused")
    src.add_argument("--model", help="full fine-tune pipeline folder")
    p.add_argument("--base", default=None, help="base model for --adapter (default: the adapter's own)")
    p.add_argument("--groups", default=None, help="group columns, e.g. dx,skin_tone (default: the run's "
                                                  "data.diagnosis_column,data.tone_column)")
    p.add_argument("--tones", default=None, help="the audit's tones.csv, for DATASET rows without a tone")
    p.add_argument("--target", default="equal_keep_prior",
                   help="equal_keep_prior (default: every tone group to one size N with the whole set's "
                        "label shares), equal (every group up to the largest; changes each tone's label "
                        "prior) or JSON {\"malignant,2\": 50, ...}")
    p.add_argument("--max-tries", type=int, default=5)
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default 25, for the auto scheduler)")
    p.add_argument("--scheduler", default="auto", help="auto (DPM-Solver++ chosen from the base's scheduler "
                   "config), default (the base's own), pndm, ddim, ddpm, euler, euler_a, dpm++, unipc, heun")
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--size", type=int, default=None, help="image size (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", default="auto", help="images per pipeline call (default: what plan's memory "
                                                        "model says fits the GPU; 4 on the CPU)")
    p.add_argument("--workers", type=int, default=None, help="CPU processes that check images while the next "
                   "batch renders (default: 2 with a GPU, 0 = in this process without one)")
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                   help="auto: fp16 on a GPU, fp32 on the CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet (pays off on long runs)")
    p.add_argument("--dry-run", action="store_true", help="print each group's needs, its acceptance on a pilot "
                                                          "batch and the expected renders and time; write nothing")
    p.add_argument("--pilot", type=int, default=8, help="--dry-run: pilot renders per group")
    p.add_argument("--no-progress", action="store_true")
    _source_args(p)
    p.set_defaults(func=cmd_rebalance)


def _data_keys(args) -> dict:
    keys = {"preset": args.preset, "metadata": args.metadata, "images": list(args.images),
            "file_column": args.file_column}
    return {k: v for k, v in keys.items() if v not in (None, [], "auto")}


def cmd_audit(args) -> int:
    from ..core.errors import ConfigError
    from ..tone.audit import audit_dataset, data_config

    if args.dataset is None and not args.metadata:
        raise ConfigError("audit: give DATASET (a folder or Hub dataset id) or --metadata FILE")
    data_cfg = data_config(args.dataset, **_data_keys(args), split=args.split)
    result = audit_dataset(None, args.out, diagnosis_column=args.diagnosis_column, strategy=args.strategy,
                           scheme=args.scheme, workers=args.workers, data_cfg=data_cfg)
    print(result.to_json() if args.json else result.to_text())
    if not args.json:
        for name, path in result.paths.items():
            print(f"{name}: {path}")
        if args.scheme == "paper":
            print(f"train on these tones with: data.tones={result.paths['tones']}")
    return 0


def _target(text: str):
    if text in ("equal", "equal_keep_prior"):
        return text
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        from ..core.errors import ConfigError

        raise ConfigError(f"--target {text!r} is neither 'equal_keep_prior', 'equal' nor JSON like "
                          '\'{"malignant,2": 50}\'') from None
    return {tuple(k.split(",")): int(v) for k, v in raw.items()}


def _rebalance_data(args, run_cfg):
    """The data section rebalance reads: DATASET (with --preset/--tones ...) or the run's own."""
    from ..core.errors import ConfigError
    from ..tone.audit import data_config

    if len(args.paths) > 2:
        raise ConfigError(f"rebalance takes [DATASET] OUT, got {len(args.paths)} paths")
    if len(args.paths) == 2:
        keys = {**_data_keys(args), **({"tones": args.tones} if args.tones else {})}
        return data_config(args.paths[0], **keys, split=args.split)
    if run_cfg is None:
        raise ConfigError(f"{(args.adapter or [args.model])[0]} holds no dermdiff_config.yaml naming its training "
                          "data: pass DATASET before OUT")
    return run_cfg.data


def _run_info(args):
    """(adapter metadata, folder holding the run's config, run config or None) of --adapter / --model."""
    from pathlib import Path

    from ..adapters import lora
    from ..core import config
    from .adapters import adapter_spec

    adapters = [adapter_spec(a) for a in args.adapter or []]
    meta = lora.read_metadata(adapters[0][0]) if adapters else {}
    folder = Path(adapters[0][0] if adapters else args.model)
    return adapters, meta, config.load_saved(folder if folder.is_dir() else folder.parent)


def cmd_rebalance(args) -> int:
    from ..core.errors import ConfigError
    from ..core.prompts import DEFAULT_TEMPLATE, DEFAULT_VALUE_MAPS, PromptBuilder
    from ..tone.rebalance import pipeline_generate_fn, rebalance
    from ..tone.rebalance_engine import launched_processes
    from ..tone.rebalance_pipeline import auto_batch_size, default_workers, load_render_pipeline

    adapters, meta, run_cfg = _run_info(args)
    data_cfg = _rebalance_data(args, run_cfg)
    base = args.model or args.base or meta.get("base_model")
    if not base:
        raise ConfigError(f"{adapters[0][0]} does not record its base model: pass --base")
    builder = PromptBuilder(meta.get("prompt_template") or (run_cfg.prompts.template if run_cfg else None)
                            or DEFAULT_TEMPLATE,
                            meta.get("value_maps") or (run_cfg.prompts.value_maps if run_cfg else DEFAULT_VALUE_MAPS))
    run_data = run_cfg.data if run_cfg else data_cfg
    groups = args.groups.split(",") if args.groups else [run_data.diagnosis_column, run_data.tone_column]
    if unknown := [c for c in builder.columns if c not in groups]:
        raise ConfigError(f"the prompt template {builder.template!r} uses {', '.join(unknown)}: add it to --groups "
                          f"(now {','.join(groups)})")
    procs = launched_processes()  # first: each launched process takes its own GPU
    if args.dry_run and procs.rank:
        return 0
    pipe, settings = load_render_pipeline(base, adapters, scheduler=args.scheduler, dtype=args.dtype,
                                          compile_unet=args.compile)
    size = args.size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    batch = auto_batch_size(pipe, size, args.guidance_scale) if args.batch_size == "auto" else _int(args.batch_size)
    generate_fn = pipeline_generate_fn(pipe, steps=args.steps, guidance_scale=args.guidance_scale,
                                       height=size, width=size)
    render = {"scheduler": args.scheduler, "steps": args.steps, "guidance_scale": args.guidance_scale, "size": size,
              "dtype": settings["dtype"], "adapters": [[str(a), s] for a, s in adapters]}
    plan_kw = {"target": _target(args.target), "groups": groups, "prompt_fn": builder.build,
               "max_tries": args.max_tries, "seed": args.seed, "tone_column": run_data.tone_column,
               "data_cfg": data_cfg, "value_maps": builder.value_maps,
               "adapter": adapters[0][0] if adapters else args.model, "render": render}
    if args.dry_run:
        from ..tone.rebalance_dryrun import dry_run, format_dry_run

        print(format_dry_run(dry_run(None, generate_fn, pilot=args.pilot, batch_size=batch, **plan_kw)))
        return 0
    report = rebalance(None, args.paths[-1], generate_fn, batch_size=batch,
                       workers=default_workers() if args.workers is None else args.workers,
                       processes=procs, run_settings={**settings, **render},
                       progress=not args.no_progress, **plan_kw)
    print(report.to_json())
    return 0


def _int(text: str) -> int:
    from ..core.errors import ConfigError

    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"--batch-size {text!r}: use auto or a whole number >= 1")
    return int(text)
