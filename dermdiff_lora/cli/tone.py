"""Skin-tone subcommands: ``audit`` (ITA per image, counts, chart) and ``rebalance`` (fill missing groups)."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("audit", help="estimate skin tone (ITA) per image; counts per diagnosis x tone + chart")
    p.add_argument("dataset", help="imagefolder with metadata.csv / metadata.jsonl (never modified)")
    p.add_argument("--out", default=None, help="tones .csv or .jsonl (default: <dataset>_audit/tones.csv)")
    p.add_argument("--strategy", default="border", choices=("border", "whole", "center_excluded"))
    p.add_argument("--scheme", default="paper", choices=("paper", "del_bino"))
    p.add_argument("--file-column", default="auto")
    p.add_argument("--diagnosis-column", default="benign_malignant")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("rebalance", help="generate checked synthetic images for the under-represented groups")
    p.add_argument("dataset", help="imagefolder with metadata (never modified)")
    p.add_argument("out", help="new imagefolder: real + synthetic images (resumable)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--adapter", help="LoRA output folder or file (its base and prompt template are used)")
    src.add_argument("--model", help="full fine-tune pipeline folder")
    p.add_argument("--base", default=None, help="base model for --adapter (default: the adapter's own)")
    p.add_argument("--target", default="equal", help="'equal' or JSON {\"malignant,2\": 50, ...}")
    p.add_argument("--max-tries", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--size", type=int, default=None, help="image size (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_rebalance)


def cmd_audit(args) -> int:
    from ..tone.audit import audit_dataset

    result = audit_dataset(args.dataset, args.out, file_column=args.file_column,
                           diagnosis_column=args.diagnosis_column, strategy=args.strategy,
                           scheme=args.scheme, workers=args.workers)
    print(result.to_json() if args.json else result.to_text())
    if not args.json:
        for name, path in result.paths.items():
            print(f"{name}: {path}")
    return 0


def _target(text: str):
    if text == "equal":
        return "equal"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        from ..core.errors import ConfigError

        raise ConfigError(f"--target {text!r} is neither 'equal' nor JSON like "
                          '\'{"malignant,2": 50}\'') from None
    return {tuple(k.split(",")): int(v) for k, v in raw.items()}


def cmd_rebalance(args) -> int:
    from ..adapters import lora
    from ..core import models
    from ..core.prompts import DEFAULT_TEMPLATE, DEFAULT_VALUE_MAPS, PromptBuilder
    from ..tone.rebalance import pipeline_generate_fn, rebalance

    meta = lora.read_metadata(args.adapter) if args.adapter else {}
    base = args.model or args.base or meta.get("base_model")
    if not base:
        from ..core.errors import ConfigError

        raise ConfigError(f"{args.adapter} does not record its base model: pass --base")
    pipe = models.load_pipeline(base)
    if args.adapter:
        pipe.load_lora_weights(str(lora.adapter_file(args.adapter)))
    builder = PromptBuilder(meta.get("prompt_template", DEFAULT_TEMPLATE),
                            meta.get("value_maps", DEFAULT_VALUE_MAPS))
    size = args.size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    generate_fn = pipeline_generate_fn(pipe, steps=args.steps, guidance_scale=args.guidance_scale,
                                       height=size, width=size)
    report = rebalance(args.dataset, args.out, generate_fn, target=_target(args.target),
                       prompt_fn=builder.build, max_tries=args.max_tries, seed=args.seed)
    print(report.to_json())
    return 0
