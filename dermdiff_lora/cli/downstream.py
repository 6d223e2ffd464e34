"""Downstream fairness subcommands: ``split`` (patient-level split file), ``fairness`` (report of any
classifier's predictions CSV, or its counterfactual flips) and ``downstream`` (the arms, same split)."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    _register_split(sub)
    _register_fairness(sub)
    _register_downstream(sub)


def _register_split(sub) -> None:
    p = sub.add_parser("split", help="write a patient-level train/val/test split file (stratified by "
                                     "diagnosis x tone) to reuse in train, rebalance and downstream")
    p.add_argument("dataset", help="imagefolder with metadata.csv / metadata.jsonl (never modified)")
    p.add_argument("--out", required=True, help="split file NAME.csv (its checksum goes to NAME.json)")
    p.add_argument("--id-column", default="auto", help="patient (or lesion) column; auto = patient_id, "
                                                       "else lesion_id")
    p.add_argument("--diagnosis-column", default="benign_malignant")
    p.add_argument("--tone-column", default="skin_tone")
    p.add_argument("--file-column", default="auto")
    p.add_argument("--fractions", default="0.7,0.15,0.15", help="train,val,test (default 0.7,0.15,0.15)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duplicates", help="duplicates.csv from `audit` (copies of one image are kept on one side; "
                                        "default: <dataset>_audit/duplicates.csv when it exists; 'none': none)")
    p.set_defaults(func=cmd_split)


def _register_fairness(sub) -> None:
    p = sub.add_parser("fairness", help="per-skin-tone report (AUC, balanced accuracy, sensitivity, "
                                        "specificity, fairlearn gaps) of any classifier's predictions CSV")
    p.add_argument("predictions", help="CSV: one row per test image with label, score and group columns "
                                       "(multi-class: one score_<class> column per class)")
    p.add_argument("--label-col", default="label")
    p.add_argument("--score-col", default="score")
    p.add_argument("--group-col", default="group")
    p.add_argument("--threshold", default="0.5", help="a probability, or 'youden' (chosen on --val)")
    p.add_argument("--val", help="validation predictions CSV (same columns) for --threshold youden")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (0: no intervals)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--counterfactual", metavar="CSV",
                   help="the classifier's scores on skin-tone-shifted copies of the test images (columns file = "
                        "the source image's id, target_group, score): report the flip rate per source and "
                        "target group at --threshold instead")
    p.add_argument("--id-col", default="file", help="--counterfactual: the image id column of both files")
    p.set_defaults(func=cmd_fairness)


def _register_downstream(sub) -> None:
    p = sub.add_parser("downstream", help="train a lesion classifier on real only, real + resampled, real + "
                                          "CIELAB-shifted and real + synthetic images (same split, >= 3 seeds) "
                                          "and compare fairness across skin tones")
    p.add_argument("dataset", help="the real dataset folder (all splits)")
    p.add_argument("--split", required=True, help="split file from `dermdiff-lora split`")
    p.add_argument("--synthetic", required=True, help="a `rebalance` output folder (synthetic rows join train)")
    p.add_argument("--include-unreviewed", action="store_true", help="also the images no reader reviewed (default: accepted only)")
    p.add_argument("--adapter", help="the LoRA run that made the synthetic images (its training data is "
                                     "checked against the split); required unless the rebalance records it")
    p.add_argument("--out", required=True, help="folder for downstream.json/.txt/.png and predictions/")
    p.add_argument("--classifier", default="probe", choices=("probe", "resnet", "timm"),
                   help="probe: logistic regression on extractor features (default); resnet: a transformers "
                        "classifier fine-tuned; timm: e.g. the paper's ResNeXt-101 (needs the [timm] extra)")
    p.add_argument("--extractor", default="dinov2", choices=("dinov2", "tiny-dinov2", "inception"),
                   help="features for the probe (tiny-dinov2 has random weights: tests only)")
    p.add_argument("--model-id", help="probe: DINOv2 Hub id/folder; resnet: Hub id/folder (default "
                                      "microsoft/resnet-50; tiny-resnet = tests); timm: model name")
    p.add_argument("--image-size", type=int, help="resnet/timm input size (default the model's)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", default="3", help="how many seeds (3 = 0,1,2) or a list such as 0,5,9")
    p.add_argument("--threshold", default="youden", help="'youden' (chosen on the validation split) or a "
                                                         "fixed probability such as 0.5")
    p.add_argument("--label-column", help="diagnosis column (default: the config's data.diagnosis_column)")
    p.add_argument("--tone-column", help="tone column (default: the config's data.tone_column)")
    p.add_argument("--positive-class", help="binary: the positive class word (default malignant)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per report")
    p.add_argument("--duplicates", help="duplicates.csv from `audit`: the adapter may not have trained on a copy "
                                        "of a val/test image either (default: beside the adapter's data.tones, "
                                        "else <dataset>_audit/; 'none': none)")
    p.add_argument("--arms", default="all", help="comma-separated: real, real+resample, real+lab, real+synthetic "
                                                 "(default all; real is always the reference)")
    p.add_argument("--no-counterfactual", action="store_true",
                   help="skip the counterfactual flips (test images shifted into each other tone group)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="overrides of the adapter's saved config for reading the dataset")
    p.set_defaults(func=cmd_downstream)


def _fractions(text: str) -> tuple[float, ...]:
    from ..core.errors import ConfigError

    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--fractions {text!r} must be three numbers such as 0.7,0.15,0.15") from None


def cmd_split(args) -> int:
    from ..downstream.samples import split_dataset

    meta = split_dataset(args.dataset, args.out, id_column=args.id_column, seed=args.seed,
                         diagnosis_column=args.diagnosis_column, tone_column=args.tone_column,
                         file_column=args.file_column, fractions=_fractions(args.fractions),
                         duplicates=args.duplicates)
    print(f"wrote {meta['path']}: {meta['n_files']} images of {meta['n_groups']} {meta['id_col']} groups")
    for split, n in meta["files_per_split"].items():
        print(f"  {split:<5} {n:>6} images, {meta['groups_per_split'][split]:>6} groups")
    d = meta["duplicates"]
    if d["file"]:
        print(f"  duplicates: {d['pairs_in_data']} of {d['pairs']} pair(s) in {d['file']} are in the data; they "
              f"merged {d['patient_groups_merged']} {meta['id_col']} groups into {d['merged_into']} (each on one side)")
    else:
        print("  duplicates: none read (no <dataset>_audit/duplicates.csv: run `dermdiff-lora audit` to find copies, "
              "or pass --duplicates FILE)")
    print(f"  {meta['note']}; sha256 {meta['csv_sha256']}")
    return 0


def cmd_fairness(args) -> int:
    from ..downstream.predictions import report_from_csv
    from ..downstream.tables import format_table

    if args.counterfactual:
        from ..downstream.flips import flip_table, flips_from_csv

        flips = flips_from_csv(args.predictions, args.counterfactual, threshold=args.threshold, val_path=args.val,
                               id_col=args.id_col, group_col=args.group_col, score_col=args.score_col,
                               label_col=args.label_col, n_boot=args.n_boot, seed=args.seed)
        th = "argmax" if flips["threshold"] is None else f"score >= {flips['threshold']:.4f}"
        print(json.dumps(flips, indent=2) if args.json else "\n".join(
            [f"Counterfactual flips at {th}: {flips['definition']}", *flip_table(flips)]))
        return 0
    report = report_from_csv(args.predictions, label_col=args.label_col, score_col=args.score_col,
                             group_col=args.group_col, threshold=args.threshold, val_path=args.val,
                             n_boot=args.n_boot, seed=args.seed)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def cmd_downstream(args) -> int:
    from ..downstream.classifier import ClassifierSpec
    from ..downstream.command import TABLE_FILE, DownstreamOptions, downstream

    spec = ClassifierSpec(kind=args.classifier, extractor=args.extractor, model_id=args.model_id,
                          image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
                          lr=args.lr, device=args.device)
    opts = DownstreamOptions(dataset=args.dataset, split=args.split, synthetic=args.synthetic, out=args.out,
                             adapter=args.adapter, classifier=spec, seeds=args.seeds, threshold=args.threshold,
                             label_column=args.label_column, tone_column=args.tone_column,
                             positive_class=args.positive_class, n_boot=args.n_boot, overrides=args.overrides,
                             overwrite=args.overwrite, duplicates=args.duplicates, arms=args.arms,
                             counterfactual=not args.no_counterfactual,
                             include_unreviewed=args.include_unreviewed)
    downstream(opts)
    print((Path(args.out) / TABLE_FILE).read_text(encoding="utf-8").rstrip())
    print(f"\nwrote {args.out}: downstream.json, downstream.txt, downstream.png, predictions/, lab_images/")
    return 0
