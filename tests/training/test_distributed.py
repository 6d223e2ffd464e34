"""Two real CPU processes (torchrun, gloo): different shards, identical weights, same as one process; each
encodes its own share of the latent cache; DDP keeps gradients as bucket views."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import make_cfg
from safetensors.torch import load_file

from dermdiff_lora.adapters import lora
from dermdiff_lora.training import train

HERE = Path(__file__).resolve().parents[1]  # tests/
COMMON = ("train.max_steps=3", "lora.rank=4", "lora.alpha=4")


def test_two_processes_match_one_process_with_the_same_global_batches(tiny_base, demo_data, tmp_path):
    out2 = tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "dist_worker.py"), str(demo_data), str(out2), *COMMON, "train.batch_size=1",
           f"speed.cache_dir={tmp_path / 'lc'}"]  # its own: no other test's cache to reuse
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads((out2 / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 3 and seen[0] != seen[1]
    weights = [load_file(out2 / f"rank{r}.safetensors") for r in (0, 1)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert json.loads((out2 / "summary.json").read_text())["processes"] == 2
    info = [json.loads((out2 / f"rank{r}_info.json").read_text()) for r in (0, 1)]
    assert [i["encoded"] for i in info] == [[[0, 8]], [[8, 16], [16, 24]]]  # each its own latent-cache shard
    assert all(i["wrapper"] == "DistributedDataParallel" and i["gradient_as_bucket_view"] for i in info)

    train.train(make_cfg(demo_data, tmp_path / "one", *COMMON, "train.batch_size=2"))
    one = load_file(tmp_path / "one" / lora.WEIGHT_NAME)
    two = load_file(out2 / lora.WEIGHT_NAME)
    assert one.keys() == two.keys()
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-5
