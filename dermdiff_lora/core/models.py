"""Base model parts: a Hub id (with revision), a local diffusers folder, or a tiny offline stand-in.

Every base goes through ``resolve_base`` → a local folder, then the same ``from_pretrained`` calls, so the
tiny models exercise exactly the loading code a real SD v1-4 id uses.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError
from .formats import PICKLE_SUFFIXES

TINY_RANDOM = "tiny-random"
TINY = "tiny"
TINY_ASSET = Path(__file__).parent.parent / "assets" / "tiny"
# Words the tiny tokenizer knows as whole tokens (everything else is spelled out in bytes).
TINY_WORDS = ("benign malignant skin disease on lighter brown darker tone a photo of dermoscopy image "
              "lesion very light light intermediate tan dark melanoma nevus").split()


def cache_dir() -> Path:
    return Path(os.environ.get("DERMDIFF_CACHE", Path.home() / ".cache" / "dermdiff_lora"))


@dataclass
class Parts:
    """What training needs from a base model."""

    folder: Path
    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    noise_scheduler: Any


def resolve_base(base: str, revision: str | None = None, allow_pickle: bool = False) -> Path:
    """The local folder of a base model: built (tiny-random), shipped (tiny), on disk, or from the Hub."""
    if base == TINY_RANDOM:
        return ensure_tiny_random()
    if base == TINY:
        if not (TINY_ASSET / "model_index.json").is_file():
            raise ModelError(f"the shipped 'tiny' model is missing at {TINY_ASSET}; "
                             "rebuild it with scripts/build_tiny.py or use model.base=tiny-random")
        return TINY_ASSET
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelError(f"{path} is not a diffusers pipeline folder (no model_index.json); "
                             "pass a folder saved with save_pretrained, a Hub id, or tiny-random")
        _refuse_pickle_only(path, allow_pickle)
        return path
    if base.count("/") != 1 or base.startswith((".", "/")):
        raise ModelError(f"model.base {base!r} is neither a local folder nor a Hub id like "
                         "'CompVis/stable-diffusion-v1-4'")
    from .hubio import download_snapshot

    folder = download_snapshot(base, revision=revision, kind="model", allow_pickle=allow_pickle)
    _refuse_pickle_only(folder, allow_pickle)
    return folder


def _refuse_pickle_only(folder: Path, allow_pickle: bool) -> None:
    for sub in ("unet", "vae", "text_encoder"):
        d = folder / sub
        if d.is_dir() and not any(d.glob("*.safetensors")) and any(
                f.suffix in PICKLE_SUFFIXES for f in d.iterdir()) and not allow_pickle:
            raise ModelError(f"{d} holds only pickle weights (.bin); these can run code when loaded. "
                             "Convert them to safetensors or pass model.allow_pickle=true if you trust them")


def load_parts(base: str, revision: str | None = None, allow_pickle: bool = False) -> Parts:
    """Tokenizer, text encoder, VAE, UNet and the DDPM training scheduler of a base model."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = resolve_base(base, revision, allow_pickle)
    kw = {"use_safetensors": not allow_pickle}
    try:
        return Parts(
            folder=folder,
            tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            text_encoder=CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw),
            vae=AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw),
            unet=UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw),
            noise_scheduler=DDPMScheduler.from_pretrained(folder, subfolder="scheduler"),
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the SD parts from {folder}: {str(exc).splitlines()[0]}") from None


def load_pipeline(base: str, revision: str | None = None, *, allow_pickle: bool = False,
                  safety_checker: bool = False, torch_dtype=None):
    """A StableDiffusionPipeline for a base; SD's NSFW checker only when asked (it blacks out skin)."""
    from diffusers import StableDiffusionPipeline

    folder = resolve_base(base, revision, allow_pickle)
    kw: dict = {"use_safetensors": not allow_pickle}
    if torch_dtype is not None:
        kw["torch_dtype"] = torch_dtype
    if not safety_checker:
        kw.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(folder, **kw)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a Stable Diffusion pipeline from {folder}: "
                         f"{str(exc).splitlines()[0]}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------------------ tiny models
def ensure_tiny_random() -> Path:
    """Build the tiny-random pipeline once into the cache (atomically: parallel processes are safe)."""
    folder = cache_dir() / "tiny-random-v3"
    if (folder / "model_index.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-random-", dir=folder.parent))
    try:
        build_tiny_random(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def write_tiny_tokenizer_files(folder: Path, words=TINY_WORDS) -> tuple[Path, Path]:
    """A byte-level BPE vocab with whole-word merges for the domain words (CLIP tokenizer format)."""
    folder.mkdir(parents=True, exist_ok=True)
    byte_chars = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for c in byte_chars:
            vocab.setdefault(c + suffix, len(vocab))
    merges: list[tuple[str, str]] = []
    for w in words:
        cur = w[0]
        for i, c in enumerate(w[1:]):
            nxt = c + ("</w>" if i == len(w) - 2 else "")
            if (cur, nxt) not in merges:
                merges.append((cur, nxt))
            cur += nxt
            vocab.setdefault(cur, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab))
    merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return vocab_file, merges_file


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible byte → printable character table (the characters, in byte order)."""
    printable = {*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def tiny_architecture(vocab_size: int, sample_size: int = 32) -> dict[str, dict]:
    """Configs of a small SD-1.x-shaped pipeline (cross-attention UNet, KL VAE, CLIP text encoder)."""
    return {
        "unet": dict(sample_size=sample_size // 2,  # the 2-block VAE downsamples by 2
                     in_channels=4, out_channels=4, layers_per_block=1,
                     block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                     attention_head_dim=8, norm_num_groups=32),
        "vae": dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
                    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                    norm_num_groups=32, sample_size=sample_size),
        "text_encoder": dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77),
    }


def build_tiny_random(folder: Path, seed: int = 0, sample_size: int = 32) -> Path:
    """Save a tiny SD-architecture pipeline with seeded random weights to ``folder``."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    vocab_file, merges_file = write_tiny_tokenizer_files(folder / ".tokenizer-src")
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77)
    arch = tiny_architecture(len(tokenizer), sample_size)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    with torch.random.fork_rng(devices=[]):  # seeded weights; the caller's random stream is left as it was
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(**arch["text_encoder"], **special))
        unet = UNet2DConditionModel(**arch["unet"])
        vae = AutoencoderKL(**arch["vae"])
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(folder / ".tokenizer-src")
    return folder
