"""Indexing 100 000 metadata rows: read + check (delimiter, encoding, unique relative names) + find every
image + check its header + captions, as `train`/`audit`/`rebalance` do before any image is decoded.

    PYTHONPATH=. .venv/bin/python benchmarks/metadata_index.py [--rows 100000]

Writes the rows (and one 8x8 PNG per row, hard links of a few files so the disk holds few images) into a temp
folder, then times each stage on its own and the whole ``index_dataset`` call; prints seconds per stage.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def build(folder: Path, rows: int) -> None:
    from PIL import Image

    seeds = [folder / f"seed{j}.png" for j in range(rows // 50_000 + 1)]  # a file takes < 65 000 links
    for seed in seeds:
        Image.new("RGB", (8, 8), (190, 140, 110)).save(seed)
    with open(folder / "metadata.csv", "w") as fh:
        fh.write("image_name,patient_id,benign_malignant,skin_tone\n")
        for i in range(rows):
            os.link(seeds[i // 50_000], folder / f"ISIC_{i:07d}.png")
            fh.write(f"ISIC_{i:07d},IP_{i // 3:07d},{'malignant' if i % 5 == 0 else 'benign'},{i % 3}\n")
    for seed in seeds:
        seed.unlink()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    from dermdiff_lora.core import config
    from dermdiff_lora.core.prompts import from_config
    from dermdiff_lora.data.dataset import index_dataset
    from dermdiff_lora.data.tables import check_keys, read_table

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        build(folder, args.rows)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = read_table(folder / "metadata.csv")
        read = time.perf_counter() - t0
        t0 = time.perf_counter()
        check_keys([r["image_name"] for r in rows], folder / "metadata.csv", "image_name")
        checked = time.perf_counter() - t0
        cfg = config.load(None, [f"data.dir={folder}", "data.file_column=image_name"])
        t0 = time.perf_counter()
        index = index_dataset(cfg.data, from_config(cfg.prompts))
        whole = time.perf_counter() - t0
    print(f"{args.rows} rows ({len(index.records)} indexed), {os.cpu_count()} CPUs: writing the folder "
          f"{made:.1f} s (not part of indexing) | read_table {read:.2f} s | names checked {checked:.2f} s | "
          f"index_dataset (read, check, find images, open every header, captions) {whole:.2f} s")


if __name__ == "__main__":
    main()
