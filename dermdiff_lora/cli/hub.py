"""``dermdiff-lora card | push | pull``: model cards and the Hugging Face Hub (thin; imports are lazy).

There is no ``--token`` flag on purpose (it would land in shell history): the token comes from
``HF_TOKEN`` or ``hf auth login``.
"""

from __future__ import annotations


def cmd_card(args) -> int:
    from ..hub.card import write_card

    path = write_card(args.folder, args.out, repo_id=args.repo_id, audit=args.audit,
                      eval_results=args.eval_results, downstream=args.downstream, overwrite=args.overwrite)
    print(f"wrote the model card {path}")
    return 0


def cmd_push(args) -> int:
    from ..hub.publish import push

    result = push(args.folder, args.repo_id, private=args.private, message=args.message,
                  dry_run_dir=args.dry_run, include_checkpoints=args.include_checkpoints, card=args.card)
    if args.dry_run:
        print(f"dry run: wrote the folder that would be uploaded to {args.repo_id}: {args.dry_run}")
    else:
        print(f"pushed to {result['url']} ({'private' if result['private'] else 'public'}), "
              f"commit {result['commit_url']}")
    card = result["card"]
    print("model card:", "generated from the folder's metadata" if card == "generated" else card)
    _print_files(result["files"])
    for note in result["notes"]:
        print(f"note: {note}")
    return 0


def cmd_pull(args) -> int:
    from ..core.hubio import pull

    print(pull(args.repo_id, args.revision, kind=args.kind))
    return 0


def _print_files(files: list[tuple[str, int]]) -> None:
    for path, size in files:
        print(f"  {_human(size):>10}  {path}")
    print(f"  {_human(sum(s for _, s in files)):>10}  total, {len(files)} file(s)")


def _human(size: float) -> str:
    units, i = ("B", "KB", "MB", "GB"), 0
    while size >= 1024 and i < len(units) - 1:
        size, i = size / 1024, i + 1
    return f"{size:.0f} B" if i == 0 else f"{size:.1f} {units[i]}"


def register(sub) -> None:
    p = sub.add_parser("card", help="write a model card (README.md) for an adapter or model output folder")
    p.add_argument("folder", help="training output folder (LoRA adapter or full pipeline)")
    p.add_argument("--repo-id", help="Hub id the card's loading snippet names (default: your-name/<folder>)")
    p.add_argument("--audit", help="skin-tone audit JSON with tone x diagnosis counts (default: FOLDER/audit.json, "
                                   "else counted from the training metadata)")
    p.add_argument("--eval", dest="eval_results",
                   help="evaluation JSON (default: FOLDER/eval.json from `evaluate`, else FOLDER/eval_results.json)")
    p.add_argument("--downstream", help="downstream.json from `downstream` (default: FOLDER/downstream.json)")
    p.add_argument("--out", help="card file to write (default: FOLDER/README.md)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing card file")
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("push", help="upload an adapter or model folder to a Hugging Face Hub repo in one commit")
    p.add_argument("folder", help="training output folder (LoRA adapter or full pipeline)")
    p.add_argument("repo_id", help="user/repo or org/repo (a bare name goes to your own namespace)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("-m", "--message", help="commit message")
    p.add_argument("--dry-run", metavar="DIR", help="write the exact folder that would be uploaded to DIR, "
                                                    "list its files and sizes, upload nothing")
    p.add_argument("--include-checkpoints", action="store_true", help="also upload checkpoints/ (large)")
    p.add_argument("--card", help="upload this file as README.md (default: FOLDER/README.md if present, "
                                  "else a card generated from the folder)")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("pull", help="download an adapter or model from the Hub (or find it in the cache)")
    p.add_argument("repo_id", help="user/repo, optionally user/repo@revision")
    p.add_argument("--revision", help="branch, tag or commit")
    p.add_argument("--kind", choices=("adapter", "model"), default="adapter")
    p.set_defaults(func=cmd_pull)
