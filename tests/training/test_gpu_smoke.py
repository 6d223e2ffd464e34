"""benchmarks/gpu_full_size.py: --smoke runs all its code paths on the CPU; without a GPU it says so, exits 0.

In-process (the libraries are imported already): the script's process-wide settings are put back after."""

import importlib
import logging
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_full_size.py"


@pytest.fixture
def bench(monkeypatch):
    """The script as a module; what it changes for the process (cache folder, log levels) is restored."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    monkeypatch.setenv("DERMDIFF_CACHE", "restored-after-the-test")
    loggers = {name: logging.getLogger(name).level for name in ("dermdiff_lora", "accelerate", "diffusers")}
    threads = torch.get_num_threads()
    yield importlib.import_module("gpu_full_size")
    torch.set_num_threads(threads)
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)


def test_smoke_runs_every_recipe_precision_and_the_resume_check(bench, capsys):
    assert bench.main(["--smoke", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    measured = [line.split()[0] for line in out.splitlines() if "s/img" in line]
    assert measured == ["fp16", "bf16"] * 3  # three recipes, each in fp16 (loss scaler) and bf16
    assert "resumed vs uninterrupted: 0.00e+00 relative" in out and ": PASS" in out
    assert "rebalance vs a plain diffusers loop" in out and "0 of 5 parts failed" in out


def test_smoke_recipes_with_two_threads(bench, capsys):
    """bf16 full fine-tuning on the CPU met a oneDNN bug (training/cpu_bf16.py) more often with 2 threads."""
    assert bench.main(["--smoke", "--threads", "2", "--parts", "recipes"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if "s/img" in line] == ["fp16", "bf16"] * 3
    assert "0 of 3 parts failed" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_and_exits_0(bench, capsys):
    assert bench.main([]) == 0
    assert capsys.readouterr().out.startswith("no GPU: nothing measured")
