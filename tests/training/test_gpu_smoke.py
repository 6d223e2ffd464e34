"""benchmarks/gpu_full_size.py: --smoke runs all its code paths on the CPU; without a GPU it says so, exits 0."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_full_size.py"


def test_smoke_runs_every_recipe_precision_and_the_resume_check():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("DERMDIFF_CACHE", None)  # the script makes its own scratch cache
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, env=env,
                          timeout=600)
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    measured = [line.split()[0] for line in out.splitlines() if "s/img" in line]
    assert measured == ["fp16", "bf16"] * 3  # three recipes, each in fp16 (loss scaler) and bf16
    assert "resumed vs uninterrupted: 0.00e+00 relative" in out and ": PASS" in out
    assert "0 of 4 parts failed" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_and_exits_0(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    bench = importlib.import_module("gpu_full_size")
    assert bench.main([]) == 0
    assert capsys.readouterr().out.startswith("no GPU: nothing measured")
