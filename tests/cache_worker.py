"""Run under ``torchrun --nproc_per_node 2``: attach a latent cache that the test built, record this
process's resident memory before and after (and after reading every row of it once)."""

import gc
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from conftest import make_cfg


def rss() -> int:
    """Resident bytes of this process (anonymous + file-backed pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(data_dir: str, out_dir: str, *overrides: str) -> None:
    import torch
    from accelerate import Accelerator

    from dermdiff_lora.core import models
    from dermdiff_lora.data import cache
    from dermdiff_lora.data import dataset as data

    torch.set_num_threads(1)
    acc = Accelerator(cpu=True)
    cfg, _, index = data.prepare(make_cfg(Path(data_dir), Path(out_dir), *overrides))
    parts = models.load_parts(cfg.model.base)
    run = SimpleNamespace(cfg=cfg, accelerator=acc, parts=parts, index=index, weight_dtype=torch.float32,
                          dataset=None, offloaded=[], empty_embedding=None)

    def no_encoding(*_a, **_k):
        raise AssertionError("the test built the latent cache: nothing to encode")

    cache.encode_latents = no_encoding
    gc.collect()
    acc.wait_for_everyone()
    before = rss()
    cache.attach(run)
    attached = rss()
    batch = cache.CachedDataset.collate([run.dataset[(i, i)] for i in range(0, len(index.records), 16)])
    keys = [(i, seed) for i in range(len(index.records)) for seed in (2 * i, 2 * i + 1)]
    for first in range(0, len(keys), 16):  # an epoch, as the DataLoader collates it: every row read once
        cache.CachedDataset.collate([run.dataset[k] for k in keys[first:first + 16]])
    read = rss()
    acc.wait_for_everyone()
    folder = cache.cache_paths(cfg, parts.folder, index, torch.float32)["latents"]
    size = sum(p.stat().st_size for p in folder.iterdir())
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"rss{acc.process_index}.json").write_text(json.dumps(
        {"before": before, "attached": attached, "read": read, "cache_bytes": size,
         "batch": list(batch["latent_mean"].shape)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
