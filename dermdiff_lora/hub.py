"""Hugging Face Hub access: download (with clear offline / not-found messages)."""

from __future__ import annotations

from pathlib import Path

from .errors import HubError

PIPELINE_PATTERNS = ["model_index.json", "*/config.json", "*/*.safetensors", "scheduler/*", "tokenizer/*",
                     "feature_extractor/*", "*.md"]


def download_snapshot(repo_id: str, *, revision: str | None = None, kind: str = "model",
                      allow_pickle: bool = False, patterns: list[str] | None = None) -> Path:
    """Download (or find in the cache) a Hub repo; safetensors only unless pickle is allowed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    allow = list(patterns or PIPELINE_PATTERNS)
    if allow_pickle:
        allow += ["*/*.bin", "*.bin"]
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow))
    except LocalEntryNotFoundError:
        raise HubError(f"{where} is not in the local Hugging Face cache and the Hub cannot be reached "
                       "(HF_HUB_OFFLINE=1 or no network); download it once with network access") from None
    except GatedRepoError:
        raise HubError(f"{where} is gated: accept its license on the Hub and log in "
                       "(`hf auth login` or HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise HubError(f"revision {revision!r} not found in {repo_id}") from None
    except RepositoryNotFoundError:
        raise HubError(f"{kind} repo {repo_id!r} not found on the Hub (or private: log in with "
                       "`hf auth login` or set HF_TOKEN)") from None
