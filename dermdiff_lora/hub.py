"""Hugging Face Hub: push an output folder in one commit, pull adapters and models, accept ``user/repo`` ids.

Every failure is one HubError line naming the repo and the fix: endpoint unreachable (short timeouts, so no
long silent wait), no token, a rejected token (401), no write access (403), a namespace that is not yours,
a missing repo or revision (404), offline mode without a cached copy. The token comes from huggingface_hub's
usual sources (``HF_TOKEN``, ``hf auth login``); it is never printed, logged or written.

With ``hf_xet`` installed, large files go through Xet storage (its CAS hosts must be reachable);
``HF_HUB_DISABLE_XET=1`` makes huggingface_hub use classic Git LFS uploads instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from . import __version__
from .config import CONFIG_FILENAME
from .errors import ConfigError, HubError, ModelError
from .lora import WEIGHT_NAME

PIPELINE_PATTERNS = ["model_index.json", "*/config.json", "*/*.safetensors", "scheduler/*", "tokenizer/*",
                     "feature_extractor/*", "*.md"]
ADAPTER_PATTERNS = ["*.safetensors", CONFIG_FILENAME, "README.md", "validation/*.png"]
NEVER_PULLED = ["checkpoints/*", "logs/*"]
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
REPO_NAME = re.compile(r"([A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")
LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN"


# ------------------------------------------------------------------------------------------------- ids
def split_ref(ref: str, revision: str | None = None) -> tuple[str, str | None]:
    """``user/repo@rev`` → (``user/repo``, ``rev``); an explicit ``revision`` wins."""
    repo_id, _, rev = str(ref).partition("@")
    return repo_id, revision or rev or None


def is_hub_id(ref: str) -> bool:
    """True for ``user/repo`` (optionally ``@revision``) that is not an existing local path."""
    repo_id = split_ref(ref)[0]
    return bool(HUB_ID.match(repo_id)) and ".." not in repo_id and not Path(ref).expanduser().exists()


# ------------------------------------------------------------------------------------------ errors
def _timeout() -> float:
    from huggingface_hub import constants

    return float(constants.HF_HUB_ETAG_TIMEOUT)


def _set_session_timeout(read: float) -> None:
    """Default timeouts of huggingface_hub's shared HTTP client: short connect, ``read`` for the rest."""
    from huggingface_hub import get_session

    t = _timeout()
    get_session().timeout = (t, read, max(read, t), t)


def _network_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        mod = sys.modules.get(module)
        found += [getattr(mod, n) for n in names if mod is not None and hasattr(mod, n)]
    return tuple(found)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def explain(exc: BaseException, repo_id: str, action: str) -> str | None:
    """One line saying what went wrong with ``repo_id`` and how to fix it (None: not a Hub/network error)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = constants.ENDPOINT
    if isinstance(exc, OfflineModeIsEnabled):
        return f"HF_HUB_OFFLINE=1 is set but {action} {repo_id} needs the network: unset HF_HUB_OFFLINE"
    if isinstance(exc, RevisionNotFoundError):
        return f"revision not found in {repo_id} on {endpoint}: check the branch, tag or commit"
    if isinstance(exc, GatedRepoError):
        return f"{repo_id} is gated: accept its terms on {endpoint}/{repo_id}, then {LOGIN_HINT}"
    if isinstance(exc, RepositoryNotFoundError):
        return f"repo {repo_id} not found on {endpoint} (or it is private and this token cannot read it: {LOGIN_HINT})"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HfHubHTTPError) and status == 401:
        return (f"{endpoint} rejected the Hugging Face token (401) while trying to {action} {repo_id}: log in again "
                "with `hf auth login --force` or set a valid HF_TOKEN")
    if isinstance(exc, HfHubHTTPError) and status == 403:
        return (f"no write access to {repo_id} (403 Forbidden): use a token with write permission on "
                f"'{repo_id.split('/')[0]}' (`hf auth login`) or push to your own namespace")
    if isinstance(exc, HfHubHTTPError):
        return f"{action} {repo_id} failed: HTTP {status}: {_first_line(exc)}"
    if isinstance(exc, _network_errors()):
        return f"cannot reach {endpoint} ({type(exc).__name__}: {_first_line(exc)}; timeout {_timeout():.0f} s)"
    return None


@contextlib.contextmanager
def _hub_errors(repo_id: str, action: str, token: str | None = None, after: str = ""):
    """Turn huggingface_hub / network errors into one HubError line (token redacted), ``after`` appended."""
    try:
        yield
    except HubError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified below, re-raised when unknown
        message = explain(exc, repo_id, action)
        if message is None and isinstance(exc, ValueError) and "README.md" in str(exc):
            message = f"the Hub refused the model card of {repo_id}: {' '.join(str(exc).split())[:300]}"
        if message is None:
            raise
        text = message + (f"; {after}" if after else "")
        raise HubError(text.replace(token, "***") if token else text) from None


# ------------------------------------------------------------------------------------------- pull
def download_snapshot(repo_id: str, *, revision: str | None = None, kind: str = "model",
                      allow_pickle: bool = False, patterns: list[str] | None = None) -> Path:
    """Download (or find in the cache) a Hub repo; safetensors only unless pickle is allowed.

    Online, a quick probe (``HF_HUB_ETAG_TIMEOUT`` s) checks the repo first: a missing repo or revision fails
    at once, an unreachable endpoint falls back to the cache. Offline (``HF_HUB_OFFLINE=1``) only the cache.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    allow = list(patterns or PIPELINE_PATTERNS) + (["*/*.bin", "*.bin"] if allow_pickle else [])
    where = repo_id + (f"@{revision}" if revision else "")
    offline = bool(constants.HF_HUB_OFFLINE)
    unreachable = None if offline else _probe(repo_id, revision, where)
    try:
        with _hub_errors(where, "download"):
            return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow,
                                          ignore_patterns=NEVER_PULLED, local_files_only=bool(unreachable)))
    except LocalEntryNotFoundError:
        if offline:
            raise HubError(f"{kind} {where} is not (fully) in the local Hugging Face cache and HF_HUB_OFFLINE=1 "
                           f"is set: run `dermdiff-lora pull {where} --kind {kind}` once with network access, or unset "
                           "HF_HUB_OFFLINE") from None
        raise HubError(f"{unreachable or 'the Hub cannot be reached'}, and {kind} {where} is not in the local "
                       "Hugging Face cache: check the network and HF_ENDPOINT") from None


def _probe(repo_id: str, revision: str | None, where: str) -> str | None:
    """None when the Hub answers for the repo, why when it cannot be reached; HubError for 401/404/..."""
    from huggingface_hub import HfApi

    with _hub_errors(where, "download"):
        try:
            HfApi().repo_info(repo_id, revision=revision, timeout=_timeout())
        except _network_errors() as exc:
            return explain(exc, where, "download")
    return None


def pull(repo_id: str, revision: str | None = None, kind: str = "adapter", *,
         allow_pickle: bool = False) -> Path:
    """The local folder of an adapter or model repo (``user/repo`` or ``user/repo@rev``), cached."""
    if kind not in ("adapter", "model"):
        raise ConfigError(f"pull kind {kind!r} is not one of adapter, model")
    repo_id, revision = split_ref(repo_id, revision)
    if not HUB_ID.match(repo_id):
        raise HubError(f"{repo_id!r} is not a Hub repo id like 'user/repo'")
    if kind == "model":
        folder = download_snapshot(repo_id, revision=revision, kind="model", allow_pickle=allow_pickle)
        if not (folder / "model_index.json").is_file():
            raise HubError(f"{repo_id} is not a diffusers pipeline repo (no model_index.json); "
                           "for an adapter use --kind adapter")
        return folder
    folder = download_snapshot(repo_id, revision=revision, kind="adapter", allow_pickle=allow_pickle,
                               patterns=ADAPTER_PATTERNS)
    if not any(folder.glob("*.safetensors")):
        raise HubError(f"{repo_id} holds no .safetensors adapter weights at its top level "
                       f"(expected {WEIGHT_NAME}); for a full model use --kind model")
    return folder


def resolve_adapter(path_or_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local adapter file or folder as is, or a Hub id ``user/repo[@revision]`` downloaded (cached)."""
    path = Path(path_or_id).expanduser()
    if path.exists() or not is_hub_id(str(path_or_id)):
        return path
    try:
        return pull(str(path_or_id), revision, kind="adapter")
    except HubError as exc:
        raise HubError(f"no local file or folder {str(path_or_id)!r}; as a Hub repo: {exc}") from None


# ------------------------------------------------------------------------------------------- push
def upload_plan(folder: str | os.PathLike, *, include_checkpoints: bool = False) -> dict[str, Path]:
    """``{path in repo: local file}``: weights, config and latest grid (checkpoints only when asked)."""
    from .card import find_grid

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
    _set_session_timeout(read=_timeout())
    with _hub_errors(repo_id, "push to", token, after="nothing was uploaded"):
        repo_id = _own_repo_id(api, repo_id)
    tmp = _staging_dir(folder)
    try:
        files = stage(folder, tmp, repo_id, plan, card=card, link=True)
        with _hub_errors(repo_id, "push to", token, after="nothing was uploaded"):
            api.create_repo(repo_id, private=private, exist_ok=True)
            is_private = bool(api.repo_info(repo_id, timeout=_timeout()).private)
        if private and not is_private:
            raise HubError(f"{repo_id} already exists and is public: --private does not change an existing repo; "
                           "make it private in its settings on the Hub first, or push without --private")
        _set_session_timeout(read=max(120.0, _timeout()))
        with _hub_errors(repo_id, "push to", token, after="no commit was made; rerun the same command"):
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
