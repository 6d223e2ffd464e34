"""A full disk at the file-write layer: one DiskError naming the folder, the previous complete output kept,
no temporary file left. The failure is real: a file-size limit (RLIMIT_FSIZE) makes the kernel refuse the
writes of every writer (Python, safetensors' Rust, torch's zip writer) as a full disk or quota would."""

from __future__ import annotations

import errno
import hashlib
import resource
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from adapter_helpers import make_adapter

from dermdiff_lora.adapters import io
from dermdiff_lora.adapters.convert import convert
from dermdiff_lora.adapters.merge import merge
from dermdiff_lora.core.errors import DiskError
from dermdiff_lora.core.fsutil import atomic_write, disk_errors, is_disk_error


@contextmanager
def disk_full(limit: int = 2048):
    """Writes beyond ``limit`` bytes per file fail (EFBIG) inside the block; the soft limit is restored."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (hidden ones too) with its digest."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_disk_errors_are_recognised_whoever_reports_them():
    assert is_disk_error(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_error(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert not is_disk_error(OSError(errno.ENOENT, "No such file"))
    with pytest.raises(DiskError, match=r"cannot write the report in /some/where \(No space left on device\)"):
        with disk_errors("/some/where", "report"):
            raise OSError(errno.ENOSPC, "No space left on device")


def test_text_write(tmp_path):
    target = tmp_path / "report.json"
    atomic_write(target, "complete")
    with disk_full(), pytest.raises(DiskError, match=str(tmp_path)):
        atomic_write(target, "x" * 10_000)
    assert snapshot(tmp_path) == {"report.json": hashlib.sha256(b"complete").hexdigest()}


def test_adapter_file(tmp_path):
    src = make_adapter("disk-src", targets=("to_q", "to_v"))
    out = tmp_path / "kohya"
    convert(src, out, to="kohya")
    before = snapshot(out)
    with disk_full(), pytest.raises(DiskError, match=str(out)):
        convert(src, out, to="kohya", overwrite=True)
    assert snapshot(out) == before


def test_merged_model_folder(tmp_path):
    src = make_adapter("disk-src", targets=("to_q", "to_v"))
    out = tmp_path / "merged"
    merge("tiny-random", [(src, 1.0)], out)
    before = snapshot(tmp_path)
    with disk_full(8192), pytest.raises(DiskError, match=str(tmp_path)):
        merge("tiny-random", [(src, 0.5)], out, overwrite=True)
    assert snapshot(tmp_path) == before  # the old pipeline folder, and no staging folder left


def test_latent_cache_shard(tmp_path):
    from dermdiff_lora.data import shards

    path = tmp_path / "cache" / shards.shard_name(0, 4)
    shards.write_shard(path, 0, 4, [(0, {"latents": torch.zeros(4, 2)})])
    before = snapshot(tmp_path)
    with disk_full(), pytest.raises(DiskError, match=str(path.parent)):
        shards.write_shard(path, 0, 4, [(0, {"latents": torch.zeros(4, 100_000)})])
    assert snapshot(tmp_path) == before
    assert io  # the adapter module is imported by the writers above


def test_checkpoint_save(tiny_base, demo_data, tmp_path):
    """A checkpoint that cannot be written is named; the previous one stays the latest (resume takes it)."""
    from conftest import make_cfg

    from dermdiff_lora.training import checkpoint
    from dermdiff_lora.training.train import train

    cfg = make_cfg(demo_data, tmp_path / "run", "train.max_steps=4", "train.checkpoint_every=2")
    train(cfg, stop_after=2)
    first = checkpoint.list_checkpoints(tmp_path / "run")
    with disk_full(4096), pytest.raises(DiskError, match=r"cannot write the checkpoint in .*checkpoints"):
        train(make_cfg(demo_data, tmp_path / "run", "train.max_steps=4", "train.checkpoint_every=2",
                       "train.resume=latest"), stop_after=4)
    assert checkpoint.list_checkpoints(tmp_path / "run") == first


def test_audit_outputs(demo_data, tmp_path):
    from dermdiff_lora.tone.audit import audit_dataset

    out = tmp_path / "audit" / "tones.csv"
    audit_dataset(demo_data, out, workers=1, progress=False)
    before = snapshot(out.parent)
    with disk_full(1024), pytest.raises(DiskError, match=str(out.parent)):
        audit_dataset(demo_data, out, workers=1, progress=False)
    assert snapshot(out.parent) == before


def test_rebalance_output(demo_data, tmp_path):
    """Rebalance fails cleanly when its metadata cannot be written; a rerun with space resumes."""
    from PIL import Image

    from dermdiff_lora.tone.rebalance import rebalance

    def draw(prompt, seed):
        return Image.new("RGB", (32, 32), (180, 130, 100))

    with disk_full(1024), pytest.raises(DiskError, match=str(tmp_path / "out")):
        rebalance(demo_data, tmp_path / "out", draw, max_tries=1, progress=False)
    report = rebalance(demo_data, tmp_path / "out", draw, max_tries=1, progress=False)
    assert report.path.is_file()
