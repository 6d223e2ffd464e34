"""Hugging Face Hub, read side: ``user/repo[@rev]`` ids, downloads into the cache, pull, one-line Hub errors.

Every failure is one HubError line naming the repo and the fix: endpoint unreachable (short timeouts, so no
long silent wait), no token, a rejected token (401), no write access (403), a namespace that is not yours,
a missing repo or revision (404), offline mode without a cached copy. The token comes from huggingface_hub's
usual sources (``HF_TOKEN``, ``hf auth login``); it is never printed, logged or written.

With ``hf_xet`` installed, large files go through Xet storage (its CAS hosts must be reachable);
``HF_HUB_DISABLE_XET=1`` makes huggingface_hub use classic Git LFS uploads instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

from .config import CONFIG_FILENAME
from .errors import ConfigError, HubError
from .formats import WEIGHT_NAME

PIPELINE_PATTERNS = ["model_index.json", "*/config.json", "*/*.safetensors", "scheduler/*", "tokenizer/*",
                     "feature_extractor/*", "*.md"]
ADAPTER_PATTERNS = ["*.safetensors", CONFIG_FILENAME, "README.md", "validation/*.png"]
NEVER_PULLED = ["checkpoints/*", "logs/*"]
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
def hub_timeout() -> float:
    from huggingface_hub import constants

    return float(constants.HF_HUB_ETAG_TIMEOUT)


def set_session_timeout(read: float) -> None:
    """Default timeouts of huggingface_hub's shared HTTP client: short connect, ``read`` for the rest."""
    from huggingface_hub import get_session

    t = hub_timeout()
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
        return f"cannot reach {endpoint} ({type(exc).__name__}: {_first_line(exc)}; timeout {hub_timeout():.0f} s)"
    return None


@contextlib.contextmanager
def hub_errors(repo_id: str, action: str, token: str | None = None, after: str = ""):
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
        with hub_errors(where, "download"):
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

    with hub_errors(where, "download"):
        try:
            HfApi().repo_info(repo_id, revision=revision, timeout=hub_timeout())
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
