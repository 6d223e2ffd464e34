"""Push an output folder to the Hub in one commit: only weights, card, config and grid (``--dry-run`` stages).

Failures are one HubError line each (see ``core.hubio``); the token is never printed, logged or written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..core.config import CONFIG_FILENAME
from ..core.errors import HubError, ModelError
from ..core.formats import PICKLE_SUFFIXES, WEIGHT_NAME
from ..core.hubio import (
    LOGIN_HINT,
    REPO_NAME,
    hub_errors,
    hub_timeout,
    set_session_timeout,
)
from ..core.version import __version__


# ------------------------------------------------------------------------------------------- push
def upload_plan(folder: str | os.PathLike, *, include_checkpoints: bool = False) -> dict[str, Path]:
    """``{path in repo: local file}``: weights, config and latest grid (checkpoints only when asked)."""
    from .card_facts import find_grid

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder} is not a folder: pass a training output folder (adapter or pipeline)")
    if (folder / "model_index.json").is_file():
        plan = _pipeline_files(folder)
    else:
        plan = {p.name: p for p in sorted(folder.glob("*.safetensors")) if not p.name.startswith(".")}
    if not any(name.endswith(".safetensors") for name in plan):
        raise ModelError(f"{folder} holds no weights (no {WEIGHT_NAME}, no model_index.json with "
                         "safetensors components): nothing to push")
    for extra in (folder / CONFIG_FILENAME, find_grid(folder)):
        if extra is not None and extra.is_file():
            plan[extra.relative_to(folder).as_posix()] = extra
    if include_checkpoints and (folder / "checkpoints").is_dir():
        plan.update({p.relative_to(folder).as_posix(): p for p in sorted((folder / "checkpoints").rglob("*"))
                     if p.is_file()})
    return plan


def _pipeline_files(folder: Path) -> dict[str, Path]:
    index = json.loads((folder / "model_index.json").read_text())
    plan = {"model_index.json": folder / "model_index.json"}
    for name, value in index.items():
        if isinstance(value, list) and value and value[0] and (folder / name).is_dir():
            for p in sorted((folder / name).rglob("*")):
                rel = p.relative_to(folder)
                if p.is_file() and p.suffix not in PICKLE_SUFFIXES and not any(s.startswith(".") for s in rel.parts):
                    plan[rel.as_posix()] = p
    if not any(k.startswith("unet/") and k.endswith(".safetensors") for k in plan):
        return {}
    return plan


def stage(folder: str | os.PathLike, dest: Path, repo_id: str, plan: dict[str, Path], *,
          card: str | os.PathLike | None = None, link: bool = False) -> list[tuple[str, int]]:
    """Write exactly what will be uploaded into ``dest``; returns ``[(path, bytes)]``.

    README.md is ``card`` when given, else the folder's own README.md, else a card generated from the folder.
    """
    from .card import build_card

    folder = Path(folder)
    for rel, src in plan.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if not link:
                raise OSError
            os.link(src, target)
        except OSError:
            shutil.copy2(src, target)
    readme = card_source(folder, card)
    if readme:
        shutil.copyfile(readme, dest / "README.md")
    else:
        (dest / "README.md").write_text(build_card(folder, repo_id=repo_id))
    return sorted((p.relative_to(dest).as_posix(), p.stat().st_size) for p in dest.rglob("*") if p.is_file())


def card_source(folder: Path, card: str | os.PathLike | None) -> Path | None:
    """The card file that becomes README.md (None: one is generated from the folder)."""
    if card and not Path(card).is_file():
        raise HubError(f"card file {card} not found")
    readme = Path(card) if card else Path(folder) / "README.md"
    return readme if readme.is_file() else None


def card_notes(folder: Path, card: str | os.PathLike | None, repo_id: str) -> list[str]:
    """Warnings about a hand-written or earlier card: older than the weights, or naming another repo."""
    readme = card_source(folder, card)
    if readme is None:
        return []
    notes = []
    weights = [*Path(folder).glob("*.safetensors"), Path(folder) / "model_index.json"]
    if any(w.is_file() and w.stat().st_mtime > readme.stat().st_mtime for w in weights):
        notes.append(f"{readme} is older than the weights; regenerate it with `dermdiff-lora card {folder} "
                     f"--repo-id {repo_id} --overwrite`")
    if repo_id not in readme.read_text(errors="replace"):
        notes.append(f"{readme} does not mention {repo_id}: its loading snippet may name another repo")
    return notes


def _dry_run(folder: Path, dest: Path, repo_id: str, plan: dict[str, Path], card) -> list[tuple[str, int]]:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise HubError(f"--dry-run folder {dest} already exists and is not empty: pick a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        files = stage(folder, tmp, repo_id, plan, card=card)
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files


def _token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubError(f"no Hugging Face token found: pushing needs a token with write access; {LOGIN_HINT}")
    return token


def _own_repo_id(api, repo_id: str) -> str:
    """The full repo id, refused when its namespace is neither the token's user nor one of its orgs."""
    me = api.whoami()
    name, orgs = me.get("name"), [o.get("name") for o in me.get("orgs") or []]
    if "/" not in repo_id:
        return f"{name}/{repo_id}"
    namespace, repo = repo_id.split("/", 1)
    if namespace != name and namespace not in orgs:
        yours = f"'{name}'" + (f" (organizations: {', '.join(orgs)})" if orgs else "")
        raise HubError(f"{repo_id} is in the namespace '{namespace}', which is not yours: the token belongs to "
                       f"{yours}; push to {name}/{repo} instead")
    return repo_id


def push(folder: str | os.PathLike, repo_id: str, *, private: bool = False, message: str | None = None,
         dry_run_dir: str | os.PathLike | None = None, include_checkpoints: bool = False,
         token: str | None = None, card: str | os.PathLike | None = None) -> dict:
    """Upload an adapter or pipeline folder to ``repo_id`` in one commit (or stage it in ``dry_run_dir``).

    Only weights, README.md (the model card), the resolved config and the latest validation grid go up;
    checkpoints only with ``include_checkpoints``; logs and caches never. Returns what was pushed.
    """
    if not REPO_NAME.fullmatch(repo_id):
        raise HubError(f"{repo_id!r} is not a Hub repo id like 'user/repo' (or a bare name for your namespace)")
    folder = Path(folder)
    plan = upload_plan(folder, include_checkpoints=include_checkpoints)
    if dry_run_dir is not None:
        files = _dry_run(folder, Path(dry_run_dir), repo_id, plan, card)
        return {"dry_run": str(dry_run_dir), "repo_id": repo_id, "files": files,
                "card": str(card_source(folder, card) or "generated"), "notes": card_notes(folder, card, repo_id)}
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise HubError("HF_HUB_OFFLINE=1 is set but push needs the network: unset it (or use --dry-run DIR)")
    token = _token(token)
    api = HfApi(token=token)
    set_session_timeout(read=hub_timeout())
    with hub_errors(repo_id, "push to", token, after="nothing was uploaded"):
        repo_id = _own_repo_id(api, repo_id)
    tmp = _staging_dir(folder)
    try:
        files = stage(folder, tmp, repo_id, plan, card=card, link=True)
        with hub_errors(repo_id, "push to", token, after="nothing was uploaded"):
            api.create_repo(repo_id, private=private, exist_ok=True)
            is_private = bool(api.repo_info(repo_id, timeout=hub_timeout()).private)
        if private and not is_private:
            raise HubError(f"{repo_id} already exists and is public: --private does not change an existing repo; "
                           "make it private in its settings on the Hub first, or push without --private")
        set_session_timeout(read=max(120.0, hub_timeout()))
        with hub_errors(repo_id, "push to", token, after="no commit was made; rerun the same command"):
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, delete_patterns=["validation/*"],
                                     commit_message=message or f"Upload with dermdiff-lora {__version__}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"repo_id": repo_id, "url": f"{constants.ENDPOINT}/{repo_id}", "private": is_private,
            "commit": info.oid, "commit_url": info.commit_url, "files": files,
            "card": str(card_source(folder, card) or "generated"), "notes": card_notes(folder, card, repo_id)}


def _staging_dir(folder: Path) -> Path:
    """A temporary folder beside the output (so weights can be hard-linked), else in the system temp."""
    try:
        return Path(tempfile.mkdtemp(prefix=".hub-push-", dir=folder))
    except OSError:
        return Path(tempfile.mkdtemp(prefix="dermdiff-hub-push-"))
