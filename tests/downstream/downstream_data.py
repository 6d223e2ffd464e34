"""Small downstream fixtures built in the tests: datasets, a train-split copy, an adapter's saved config and
a fake rebalance folder (real train rows copied and marked synthetic)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from drawn_images import lesion_photo
from PIL import Image

# Label -> dominant colour: any classifier separates these perfectly (known answers: AUC 1, bal. acc. 1).
COLOURS = {"benign": (60, 60, 200), "malignant": (200, 60, 60), "nevus": (60, 200, 60)}


def write_rows(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)


def read_rows(folder: Path) -> list[dict]:
    with open(folder / "metadata.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def colour_dataset(folder: Path, labels: tuple[str, ...], n_per_label: int = 30, seed: int = 0,
                   label_column: str = "benign_malignant") -> Path:
    """Images whose colour is their label; tones 0/1/2 in turn; two images (one label, one tone) per patient."""
    rng = np.random.default_rng(seed)
    rows = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_per_label * len(labels)):
        label = labels[i % len(labels)]
        pixels = np.clip(np.array(COLOURS[label]) + rng.normal(0, 25, (24, 24, 3)), 0, 255).astype(np.uint8)
        name = f"IMG_{i:04d}"
        Image.fromarray(pixels).save(folder / f"{name}.png")
        k = i // len(labels)  # the k-th image of its label
        row = {"image_name": name, "patient_id": f"P{i % len(labels)}_{k // 6}_{k % 3}",
               "benign_malignant": "malignant" if label == "malignant" else "benign",
               "skin_tone": str(k % 3)}
        row[label_column] = label
        rows.append(row)
    write_rows(folder, rows)
    return folder


def subset(src: Path, dst: Path, keep) -> Path:
    """A copy of the imagefolder ``src`` with only the rows ``keep(row)`` accepts."""
    rows = [r for r in read_rows(src) if keep(r)]
    dst.mkdir(parents=True, exist_ok=True)
    for r in rows:
        shutil.copy(src / f"{r['image_name']}.png", dst / f"{r['image_name']}.png")
    write_rows(dst, rows)
    return dst


def saved_adapter(folder: Path, train_dir: Path, *overrides: str) -> Path:
    """A run folder whose saved config says it was trained on ``train_dir`` (no weights needed)."""
    from dermdiff_lora.core import config

    folder.mkdir(parents=True, exist_ok=True)
    config.save(config.load(None, [f"data.dir={train_dir}", "data.file_column=image_name", *overrides]),
                folder)
    return folder


def fake_rebalance(src: Path, dst: Path, n: int) -> Path:
    """A rebalance-style folder: the real rows of ``src`` plus copies of ``n`` of them marked synthetic."""
    rows = read_rows(src)
    out = [{**r, "synthetic": "false"} for r in rows]
    dst.mkdir(parents=True, exist_ok=True)
    for r in rows:
        shutil.copy(src / f"{r['image_name']}.png", dst / f"{r['image_name']}.png")
    for r in rows[:n]:
        name = f"syn0_{r['image_name'].lower()}"
        shutil.copy(src / f"{r['image_name']}.png", dst / f"{name}.png")
        out.append({**r, "image_name": name, "patient_id": "", "synthetic": "true"})
    write_rows(dst, out)
    return dst


def with_copies(folder: Path, n: int = 40, seed: int = 0) -> tuple[Path, dict[str, str]]:
    """An imagefolder of ``n`` distinct photos (two per patient), then copies of three of them filed under
    new patients: exact, mirrored and re-saved with faint noise. Returns it and {copy: original}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows, images = [], []
    for i in range(n):
        images.append(lesion_photo(rng))
        images[-1].save(folder / f"IMG_{i:04d}.png")
        rows.append({"image_name": f"IMG_{i:04d}", "patient_id": f"P{i // 2}",
                     "benign_malignant": ("benign", "malignant")[i % 2], "skin_tone": str((i // 2) % 3)})
    noise = np.clip(np.asarray(images[4], dtype=float) + rng.normal(0, 2, (64, 64, 3)), 0, 255)
    copies = {"COPY_exact": (0, images[0]), "COPY_mirror": (2, images[2].transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
              "COPY_near": (4, Image.fromarray(noise.round().astype(np.uint8)))}  # of three patients
    for k, (name, (i, image)) in enumerate(copies.items()):
        image.save(folder / f"{name}.png")
        rows.append({**rows[i], "image_name": name, "patient_id": f"Q{k}"})
    write_rows(folder, rows)
    return folder, {name: f"IMG_{i:04d}" for name, (i, _) in copies.items()}
