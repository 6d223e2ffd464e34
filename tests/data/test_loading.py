"""DataLoader workers: the default formula, persistent workers, and a run that decodes in a worker."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from conftest import make_cfg

from dermdiff_lora.core import config
from dermdiff_lora.data import loading
from dermdiff_lora.training import train


def test_default_workers_follow_the_cpus_per_process():
    assert [loading.auto_workers(cpus, 1) for cpus in (1, 2, 3, 4, 8, 16, 64)] == [0, 0, 0, 3, 7, 8, 8]
    assert [loading.auto_workers(cpus, 8) for cpus in (16, 32, 64, 128)] == [0, 3, 7, 8]
    assert loading.auto_workers(12, 4) == 0  # 3 CPUs per process: a worker would only take turns


def test_null_means_the_formula_for_this_machine_and_workers_persist(monkeypatch, demo_data, tmp_path):
    data_cfg = config.load(None, []).data
    assert data_cfg.num_workers is None
    monkeypatch.setattr(loading, "available_cpus", lambda: 32)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loading.loader_options(data_cfg, 2) == {"num_workers": 8, "persistent_workers": True}
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 8 processes on this machine (of a multi-node run)
    assert loading.loader_options(data_cfg, 16) == {"num_workers": 3, "persistent_workers": True}
    explicit = config.load(None, ["data.num_workers=0"]).data
    assert loading.loader_options(explicit, 1) == {"num_workers": 0, "persistent_workers": False}

    cfg = make_cfg(demo_data, tmp_path, "data.num_workers=1")
    acc = SimpleNamespace(num_processes=1, process_index=0, device=torch.device("cpu"))
    run = SimpleNamespace(cfg=cfg, accelerator=acc, dataset=list(range(24)), weights=None)
    loader = train.make_loader(run, 0, 3)
    assert loader.num_workers == 1 and loader.persistent_workers


def test_training_with_a_worker_matches_training_without(tiny_base, demo_data, tmp_path):
    common = ("train.max_steps=2", "speed.cache_latents=off")
    a = train.train(make_cfg(demo_data, tmp_path / "a", *common, "data.num_workers=0"))
    b = train.train(make_cfg(demo_data, tmp_path / "b", *common, "data.num_workers=1"))
    assert a["final_loss"] == b["final_loss"]  # same pixels, crops and flips from a worker process
