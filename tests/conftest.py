"""Shared fixtures: the tiny-random base, a synthetic dataset, and small trained runs (session-scoped)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is fastest and never oversubscribes

import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

for _name in ("diffusers", "transformers", "accelerate", "peft", "bitsandbytes"):
    logging.getLogger(_name).setLevel(logging.ERROR)


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Build models into a per-session cache so tests never touch the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("dermdiff-cache")
    os.environ["DERMDIFF_CACHE"] = str(cache)
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return cache


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models gain nothing from a second thread, and lose 10-60x when the cores are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_base(_cache_dir) -> Path:
    """Folder of the tiny-random pipeline (built once per session)."""
    from dermdiff_lora.core.models import ensure_tiny_random

    return ensure_tiny_random()


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """A 24-image ISIC-style synthetic imagefolder (32 px, three tones, benign/malignant)."""
    from dermdiff_lora.tone.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "ds", n=24, size=32, seed=0)


def make_cfg(data_dir: Path, out_dir: Path, *overrides: str):
    """A fast tiny config: 32 px, few steps, no TensorBoard, no progress bar."""
    from dermdiff_lora.core import config

    base = [f"data.dir={data_dir}", f"output.dir={out_dir}", "data.file_column=image_name",
            "data.resolution=32", "train.max_steps=3", "train.batch_size=2", "optim.lr=1e-3",
            "logging.tensorboard=false", "logging.progress=false", "validation.at_end=false",
            "validation.inference_steps=2"]
    return config.load(None, base + list(overrides))


def count_forwards(module) -> list[int]:
    """Calls of ``module.forward`` with gradients on (training, and checkpointing's recompute; not grids).

    Forward hooks do not fire when checkpointing recomputes, and transformers recomputes its layers'
    class-level forward: count a module inside the checkpointed one."""
    import torch

    calls, real = [0], module.forward

    def forward(*args, **kwargs):
        calls[0] += torch.is_grad_enabled()
        return real(*args, **kwargs)

    module.forward = forward
    return calls


@pytest.fixture(scope="session")
def trained_lora(tiny_base, demo_data, tmp_path_factory) -> Path:
    """A LoRA run (rank 4, alpha 8) on tiny-random: its output folder."""
    from dermdiff_lora.training.train import train

    out = tmp_path_factory.mktemp("runs") / "lora"
    train(make_cfg(demo_data, out, "lora.rank=4", "lora.alpha=8", "train.max_steps=4"))
    return out


@pytest.fixture(scope="session")
def trained_full(tiny_base, demo_data, tmp_path_factory) -> Path:
    """A full fine-tune run with EMA on tiny-random: its pipeline folder."""
    from dermdiff_lora.training.train import train

    out = tmp_path_factory.mktemp("runs") / "full"
    train(make_cfg(demo_data, out, "train.mode=full", "train.ema_decay=0.9", "train.max_steps=3"))
    return out


@pytest.fixture
def shared_metadata_folder(tmp_path) -> Path:
    """The ISIC-style metadata from ../shared (or a copy of its columns) with small images beside it."""
    import csv

    from PIL import Image

    src = Path(__file__).resolve().parents[2] / "shared" / "isic_style_metadata.csv"
    text = src.read_text() if src.is_file() else (
        "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,"
        "target,skin_tone\n" + "".join(f"ISIC_{i:07d},IP_{i},female,,torso,nevus,"
                                       f"{'malignant' if i == 2 else 'benign'},0,{i % 3}\n" for i in range(1, 7)))
    (tmp_path / "metadata.csv").write_text(text)
    for row in csv.DictReader(text.splitlines()):
        Image.new("RGB", (24, 24), (180, 120, 90)).save(tmp_path / f"{row['image_name']}.jpg")
    return tmp_path
