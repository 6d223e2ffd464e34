"""The latent cache as row shards: written chunk by chunk, read row by row by every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_cfg
from PIL import Image
from safetensors.torch import load_file

from dermdiff_lora.core.errors import DataError
from dermdiff_lora.data import cache, shards
from dermdiff_lora.data import dataset as data

TESTS = Path(__file__).resolve().parents[1]


def test_shards_cover_rows_once_in_any_split_and_read_back_exactly(tmp_path):
    a = torch.randn(10, 2, 3).to(torch.bfloat16)
    b = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    chunks = cache._chunks(10)  # (0, 8), (8, 10)
    assert [shards.split_chunks(chunks, 2, p) for p in (0, 1)] == [[(0, 8)], [(8, 10)]]
    assert [shards.split_chunks(chunks, 3, p) for p in (0, 1, 2)] == [[], [(0, 8)], [(8, 10)]]
    for start, stop in ((8, 10), (0, 8)):  # written out of order, each in two pieces
        mid = (start + stop) // 2
        pieces = [(mid, {"a": a[mid:stop], "b": b[mid:stop]}), (start, {"a": a[start:mid], "b": b[start:mid]})]
        shards.write_shard(tmp_path / shards.shard_name(start, stop), start, stop, pieces, {"k": "v"})
    assert shards.cover(tmp_path, 10) is not None and shards.cover(tmp_path, 11) is None
    rows = shards.Rows(tmp_path, 10)
    assert torch.equal(rows.read("a"), a) and torch.equal(rows.read("b"), b)
    assert torch.equal(rows.get("b", 9), b[9]) and torch.equal(rows.get("a", 3, 1), a[3, 1])
    assert rows.shapes == {"a": (10, 2, 3), "b": (10, 4)} and rows.metadata() == {"k": "v"}
    whole = load_file(tmp_path / shards.shard_name(0, 8))  # plain safetensors files
    assert torch.equal(whole["a"], a[:8]) and torch.equal(whole["b"], b[:8])
    with pytest.raises(IndexError):
        rows.get("a", 10)
    leftovers = tmp_path / "mixed"  # a 2-process run that stopped half-way, then a complete 3-process run
    for start, stop in ((0, 16), (0, 8), (8, 24), (24, 40)):
        (leftovers / shards.shard_name(start, stop)).parent.mkdir(exist_ok=True)
        (leftovers / shards.shard_name(start, stop)).touch()
    assert [(s, e) for s, e, _ in shards.cover(leftovers, 40)] == [(0, 8), (8, 24), (24, 40)]
    assert shards.cover(leftovers, 16) is not None and shards.cover(leftovers, 30) is None
    with pytest.raises(DataError, match="0 rows written of 2"):
        shards.write_shard(tmp_path / "x.safetensors", 0, 2, [])
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def _big_dataset(folder: Path, n: int) -> Path:
    folder.mkdir()
    lines = ["file_name,text"]
    for i in range(n):
        Image.new("RGB", (8, 8), (i % 256, 100, 50)).save(folder / f"{i:04d}.png")
        lines.append(f"{i:04d}.png,a photo")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_two_processes_attach_a_200_mb_cache_without_loading_it(tiny_base, tmp_path):
    """Rows of 2 flips x 4 x 64 x 64 fp32 (mean and std: 256 KiB, as at 512 px), 840 images: 220 MB,
    written here as two shards; each of two gloo processes attaches it, reads a batch and then every row.
    Resident memory counts mapped file pages too: a reader that maps the files and touches every row (as
    safetensors' load_file does since 0.6) fails this as much as one that copies them into memory."""
    n = 840
    folder = _big_dataset(tmp_path / "ds", n)
    overrides = ["data.file_column=file_name", "prompts.template=", "data.resolution=512",
                 f"speed.cache_dir={tmp_path / 'lc'}", f"model.base={tiny_base}"]
    cfg, _, index = data.prepare(make_cfg(folder, tmp_path / "out", *overrides))
    latents = cache.cache_paths(cfg, tiny_base, index, torch.float32)["latents"]
    for start, stop in ((0, 424), (424, n)):
        def rows(start=start, stop=stop):
            for s in range(start, stop, 8):
                k = min(8, stop - s)
                yield s, {"mean": torch.full((k, 2, 4, 64, 64), float(s)), "std": torch.ones(k, 2, 4, 64, 64)}
        shards.write_shard(latents / shards.shard_name(start, stop), start, stop, rows())
    size = sum(p.stat().st_size for p in latents.iterdir())
    assert size >= 200 * 10**6
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(TESTS / "cache_worker.py"), str(folder), str(tmp_path / "out"), *overrides]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        got = json.loads((tmp_path / "out" / f"rss{rank}.json").read_text())
        assert got["cache_bytes"] == size and got["batch"] == [53, 4, 64, 64]
        assert got["read"] - got["before"] < size / 2, (rank, got)  # neither loaded nor kept mapped
