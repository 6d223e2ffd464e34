"""``dermdiff-lora review``: serve the review page for one reader, or (``--report``) sum every reader up.

The server binds 127.0.0.1 by default and prints a URL with a random token (as Jupyter does); another
host is allowed with a warning. Restarting it resumes at the reader's first unanswered image.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError, DataError
from ..core.fsutil import atomic_write
from ..core.lock import folder_lock
from . import items as items_mod
from .report import RULES, qc_report, qc_verdicts, study_report
from .session import Session
from .storage import all_logs, check_reader, open_log

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
REPORT_FILE = "review.json"


@dataclass
class ReviewOptions:
    """What ``review`` serves (the CLI's flags, one for one)."""

    folder: str
    reader: str = ""
    mode: str = "qc"
    real: str | None = None  # study: a dataset of real images (default: the folder's own real rows)
    split: str | None = None  # study: a split file; only its ``part`` of --real is shown
    part: str = "test"
    seed: int = 0
    repeat_share: float = 0.1
    memorisation: str | None = None  # default: FOLDER/memorisation.csv when evaluate wrote it there
    host: str = "127.0.0.1"
    port: int = 8765


def session_items(opts: ReviewOptions) -> list[items_mod.Item]:
    """The reader's images in order (QC: cell by cell; study: shuffled real + synthetic, then repeats)."""
    folder = Path(opts.folder)
    if not folder.is_dir():
        raise DataError(f"review folder {folder} does not exist; pass a `rebalance` or `generate` output folder")
    synthetic = items_mod.synthetic_items(folder, opts.memorisation)
    if opts.mode == "qc":
        return synthetic
    groups = items_mod.DEFAULT_GROUPS if (folder / "generate.json").is_file() else items_mod.groups_of(folder)
    real = items_mod.real_items(opts.real or folder, groups, opts.split, opts.part)
    return items_mod.study_order(synthetic, real, opts.reader, opts.seed, opts.repeat_share)


def _check_log(session: Session) -> None:
    """Refuse a verdict log written for another list of images (the folder changed since)."""
    for position, answer in session.log.answers.items():
        if position >= session.n or session.items[position].sha256 != answer["sha256"]:
            raise DataError(f"{session.log.path} was written for another set of images (position {position} "
                            "differs): the folder changed since; review with another --reader name, or move "
                            "that file away")


@contextmanager
def open_session(opts: ReviewOptions) -> Iterator[Session]:
    """The reader's session with its verdict log locked for the block."""
    check_reader(opts.reader)
    items = session_items(opts)
    with open_log(opts.folder, opts.mode, opts.reader) as verdicts:
        session = Session(opts.mode, opts.reader, items, verdicts)
        _check_log(session)
        yield session


def _bind(host: str, port: int) -> socket.socket:
    if host not in LOOPBACK:
        log.warning("review: serving on %s, not only this machine: anyone who can reach it and has the "
                    "token sees the images; prefer the default 127.0.0.1 (an SSH tunnel for a remote reader)", host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"review: cannot listen on {host}:{port} ({exc.strerror}); pass --port with a free "
                          "port (--port 0 picks one)") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def serve(opts: ReviewOptions, token: str | None = None) -> None:
    """Serve the page until interrupted; print the URL (with its token) first."""
    import uvicorn

    from .server import create_app

    token = token or secrets.token_urlsafe(24)
    with open_session(opts) as session:
        sock = _bind(opts.host, opts.port)
        host = f"[{opts.host}]" if ":" in opts.host else opts.host
        url = f"http://{host}:{sock.getsockname()[1]}/?token={token}"
        state = session.state()
        print(f"review ({opts.mode}) by {opts.reader}: {state['n']} images, {state['answered']} answered, "
              f"resuming at image {min(state['position'], state['n'] - 1) + 1}")
        print(f"open {url}", flush=True)
        config = uvicorn.Config(create_app(session, token), log_level="warning", access_log=False,
                                h11_max_incomplete_event_size=16 * 1024)
        uvicorn.Server(config).run(sockets=[sock])


def make_report(folder: str | Path, rule: str = "all", write_back_verdicts: bool = True) -> dict:
    """Sum up every reader of ``folder``; write ``review/review.json``, ``.md``, ``.png``; write the QC
    verdicts back into a rebalance folder's metadata."""
    from .outputs import save_chart, write_markdown
    from .writeback import write_back

    if rule not in RULES:
        raise ConfigError(f"review rule {rule!r} must be one of {', '.join(RULES)}")
    folder = Path(folder)
    qc_logs, study_logs = all_logs(folder, "qc"), all_logs(folder, "study")
    if not qc_logs and not study_logs:
        raise DataError(f"{folder} holds no review answers yet (review/qc or review/study); run "
                        f"`dermdiff-lora review {folder} --reader NAME` first")
    report: dict = {"folder": str(folder), "qc": qc_report(qc_logs, rule) if qc_logs else None,
                    "study": study_report(study_logs) if study_logs else None,
                    "counts": {"qc_readers": len(qc_logs), "study_readers": len(study_logs)}}
    if qc_logs and write_back_verdicts and not (folder / "generate.json").is_file():
        with folder_lock(folder, "review write-back"):  # not while a rebalance appends to the metadata
            report["written_back"] = write_back(folder, qc_verdicts(qc_logs, rule), rule)
    out = folder / "review"
    atomic_write(out / REPORT_FILE, json.dumps(report, indent=2))
    write_markdown(report, out / "review.md")
    save_chart(report, out / "review.png")
    return report


def main_message(report: dict, folder: str | Path) -> str:
    out = Path(folder) / "review"
    return (f"wrote {out / REPORT_FILE}, {out / 'review.md'}, {out / 'review.png'}"
            + (f"; verdicts written into {report['written_back'].get('metadata')}"
               if (report.get("written_back") or {}).get("written") else ""))
