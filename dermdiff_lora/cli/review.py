"""``dermdiff-lora review``: a local page to accept or reject synthetic images (QC) or run a blinded
reader study, and ``--report`` to sum the readers up and write the verdicts back into the data."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("review", help="review synthetic images in a local web page (QC or a blinded reader "
                                      "study); --report sums the readers up")
    p.add_argument("folder", help="a `rebalance` or `generate` output folder")
    p.add_argument("--reader", help="your name (letters, digits, _ - .): names your verdict file")
    p.add_argument("--mode", choices=("qc", "study"), default="qc",
                   help="qc: accept/reject each synthetic image; study: blinded real-or-synthetic reading")
    p.add_argument("--real", help="study: a dataset folder of real images (default: the folder's real rows)")
    p.add_argument("--split", help="study: a split file; only its --part of --real is shown")
    p.add_argument("--part", default="test", choices=("train", "val", "test"))
    p.add_argument("--seed", type=int, default=0, help="study: with the reader's name, seeds the order")
    p.add_argument("--repeat-share", type=float, default=0.1,
                   help="study: share of images shown twice, for intra-reader agreement (default 0.1)")
    p.add_argument("--memorisation", help="QC: evaluate's memorisation.csv (default: FOLDER/memorisation.csv)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--report", action="store_true", help="write review/review.json, .md, .png and the verdicts "
                                                         "into the folder's metadata, then exit")
    p.add_argument("--rule", choices=("all", "majority"), default="all",
                   help="several QC readers: accepted when all who saw it accepted (default) or a majority did")
    p.set_defaults(func=cmd_review)


def cmd_review(args) -> int:
    from ..core.errors import ConfigError
    from ..review.command import ReviewOptions, main_message, make_report, serve

    if args.report:
        print(main_message(make_report(args.folder, args.rule), args.folder))
        return 0
    if not args.reader:
        raise ConfigError("review needs --reader NAME (your verdicts go to a file of that name), or --report")
    serve(ReviewOptions(folder=args.folder, reader=args.reader, mode=args.mode, real=args.real, split=args.split,
                        part=args.part, seed=args.seed, repeat_share=args.repeat_share,
                        memorisation=args.memorisation, host=args.host, port=args.port))
    return 0
