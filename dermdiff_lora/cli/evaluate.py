"""``dermdiff-lora evaluate``: FID/KID, diversity, tone fidelity and memorisation per diagnosis × tone cell."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="real vs generated images per diagnosis x tone: FID/KID, MS-SSIM, "
                                        "tone fidelity, memorisation")
    p.add_argument("--real", help="held-out real images: a dataset folder (read with the run's data settings); "
                                  "default: the test part of the run's data.split_file")
    p.add_argument("--generated", help="a `generate` or `rebalance` output folder")
    p.add_argument("--adapter", help="the LoRA run folder (or its weights file): its saved config names template, tones and training data; "
                                     "without --generated, renders --per-cell images per cell from it")
    p.add_argument("--out", help="folder for eval.json, eval.txt and the charts (default: the adapter's folder)")
    p.add_argument("--extractor", default="dinov2", choices=("dinov2", "inception", "tiny-dinov2"),
                   help="feature network (default dinov2 = FD_DINOv2; inception needs the [inception] extra; "
                        "tiny-dinov2 has random weights: for tests only)")
    p.add_argument("--model-id", help="Hub id or folder of the extractor (default facebook/dinov2-large: ViT-L/14, as FD_DINOv2)")
    p.add_argument("--per-cell", type=int, default=8, help="images per cell rendered from --adapter")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance-scale", type=float, default=4.0)
    p.add_argument("--tone-column", help="template column holding the tone (default: the one named *tone*)")
    p.add_argument("--base-only", action="store_true",
                   help="render from the adapter's base model without the adapter (the 'before' images)")
    p.add_argument("--no-memorisation", action="store_true", help="skip the nearest-training-image check")
    p.add_argument("--duplicates", help="duplicates.csv from `audit` (default: beside the run's data.tones, else "
                                        "<data.dir>_audit/; 'none': none). Held-out images listed there, or found "
                                        "by pixels (exact, mirrored or turned, pHash <= 8 of 64 bits), as copies of training "
                                        "images are left out of the memorisation threshold and named as leakage")
    p.add_argument("--include-unreviewed", action="store_true",
                   help="a reviewed rebalance folder: also use the images no reader saw (default: accepted only)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="print two eval.json files side by side")
    p.add_argument("--force", action="store_true", help="with --compare: also across extractors or sizes")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from ..eval.command import EvaluateOptions, compare, evaluate
    from ..eval.report import format_table

    if args.compare:
        print(compare(*args.compare, force=args.force))
        return 0
    opts = EvaluateOptions(real=args.real, generated=args.generated, adapter=args.adapter, out=args.out,
                           extractor=args.extractor, model_id=args.model_id, per_cell=args.per_cell,
                           seed=args.seed, steps=args.steps, guidance_scale=args.guidance_scale,
                           tone_column=args.tone_column, base_only=args.base_only, memorisation=not args.no_memorisation,
                           duplicates=args.duplicates, overrides=args.overrides, overwrite=args.overwrite,
                           include_unreviewed=args.include_unreviewed)
    result = evaluate(opts)
    print(format_table(result))
    return 0
