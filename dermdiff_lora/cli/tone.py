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
    src.add_argument("--adapter", help="LoRA output folder or file (its base and prompt template are used)")
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
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--size", type=int, default=None, help="image size (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
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
        raise ConfigError(f"{args.adapter or args.model} holds no dermdiff_config.yaml naming its training "
                          "data: pass DATASET before OUT")
    return run_cfg.data


def cmd_rebalance(args) -> int:
    from pathlib import Path

    from ..adapters import lora
    from ..core import config, models
    from ..core.errors import ConfigError
    from ..core.prompts import DEFAULT_TEMPLATE, DEFAULT_VALUE_MAPS, PromptBuilder
    from ..tone.rebalance import pipeline_generate_fn, rebalance

    meta = lora.read_metadata(args.adapter) if args.adapter else {}
    folder = Path(args.adapter or args.model)
    run_cfg = config.load_saved(folder if folder.is_dir() else folder.parent)
    data_cfg = _rebalance_data(args, run_cfg)
    base = args.model or args.base or meta.get("base_model")
    if not base:
        raise ConfigError(f"{args.adapter} does not record its base model: pass --base")
    builder = PromptBuilder(meta.get("prompt_template") or (run_cfg.prompts.template if run_cfg else None)
                            or DEFAULT_TEMPLATE,
                            meta.get("value_maps") or (run_cfg.prompts.value_maps if run_cfg else DEFAULT_VALUE_MAPS))
    run_data = run_cfg.data if run_cfg else data_cfg
    groups = args.groups.split(",") if args.groups else [run_data.diagnosis_column, run_data.tone_column]
    if unknown := [c for c in builder.columns if c not in groups]:
        raise ConfigError(f"the prompt template {builder.template!r} uses {', '.join(unknown)}: add it to --groups "
                          f"(now {','.join(groups)})")
    pipe = models.load_pipeline(base)
    if args.adapter:
        pipe.load_lora_weights(str(lora.adapter_file(args.adapter)))
    size = args.size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    generate_fn = pipeline_generate_fn(pipe, steps=args.steps, guidance_scale=args.guidance_scale,
                                       height=size, width=size)
    report = rebalance(None, args.paths[-1], generate_fn, target=_target(args.target), groups=groups,
                       prompt_fn=builder.build, max_tries=args.max_tries, seed=args.seed,
                       tone_column=run_data.tone_column, data_cfg=data_cfg, value_maps=builder.value_maps,
                       adapter=args.adapter or args.model)
    print(report.to_json())
    return 0
