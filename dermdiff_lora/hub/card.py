"""Model cards for output folders, built only from what the folder records.

Front matter the Hub reads (base model, library, pipeline tag, tags, license, prompts), then the body
(``card_text``) from the folder's facts (``card_facts``). No local paths and no token are ever written.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from ..core.errors import ModelError
from . import card_text
from .card_facts import SD1_IDS, TAGS, TINY_BASES, Facts, grid_prompts, is_hub_base, read_facts


def front_matter(facts: Facts) -> dict:
    """The YAML metadata the Hub reads (None values are dropped)."""
    if facts.base.lower() in SD1_IDS:
        lic = {"license": "creativeml-openrail-m"}
    elif facts.base in TINY_BASES:
        lic = {"license": "apache-2.0"}  # built by this package's code, under its license
    elif is_hub_base(facts.base):
        lic = {"license": "other", "license_name": "same-as-base-model",
               "license_link": f"https://huggingface.co/{facts.base}"}
    else:
        lic = {"license": "other", "license_name": "unknown"}
    prompts = grid_prompts(facts.builder)
    widget = [{"text": p} for p in prompts]
    if widget and facts.grid:
        widget[0]["output"] = {"url": facts.grid}
    tags = (["lora", "template:sd-lora"] if facts.kind == "lora" else []) + TAGS
    return {"base_model": facts.base if is_hub_base(facts.base) else None, "library_name": "diffusers", **lic,
            "pipeline_tag": "text-to-image", "tags": tags,
            "instance_prompt": prompts[0] if prompts and facts.kind == "lora" else None, "widget": widget or None}


# ------------------------------------------------------------------------------------------- rendering
def build_card(folder: str | os.PathLike, *, repo_id: str | None = None, audit: str | os.PathLike | None = None,
               eval_results: str | os.PathLike | None = None, downstream: str | os.PathLike | None = None) -> str:
    """The model card (README.md text) of an adapter or pipeline output folder."""
    from huggingface_hub import ModelCardData

    facts = read_facts(folder, audit=audit, eval_results=eval_results, downstream=downstream)
    repo_id = repo_id or f"your-name/{_slug(Path(folder).resolve().name)}"
    data = ModelCardData(**{k: v for k, v in front_matter(facts).items() if v is not None})
    return f"---\n{data.to_yaml()}\n---\n\n{card_text.body(facts, repo_id)}"


def write_card(folder: str | os.PathLike, out: str | os.PathLike | None = None, *, repo_id: str | None = None,
               audit: str | os.PathLike | None = None, eval_results: str | os.PathLike | None = None,
               downstream: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Write the card (default ``FOLDER/README.md``) atomically; an existing file only with ``overwrite``."""
    out = Path(out) if out else Path(folder) / "README.md"
    if out.exists() and not overwrite:
        raise ModelError(f"{out} already exists: pass --overwrite to replace it, or --out another file")
    text = build_card(folder, repo_id=repo_id, audit=audit, eval_results=eval_results, downstream=downstream)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", dir=out.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, out)
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "dermdiff-lora"
