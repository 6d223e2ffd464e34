"""A small rebalance-style folder for the review tests: real rows as 4:3 JPEGs with EXIF (as ISIC's are),
synthetic rows as square PNGs with provenance text chunks (as ``rebalance`` writes them)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

TONES = {"0": (225, 190, 160), "1": (170, 120, 85), "2": (95, 65, 45)}


def _pixels(rng, tone: str, w: int, h: int) -> np.ndarray:
    base = np.array(TONES[tone], dtype=np.float64)
    img = base + rng.normal(0, 12, (h, w, 3))
    yy, xx = np.mgrid[:h, :w]
    lesion = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 4) ** 2
    img[lesion] *= 0.45
    return np.clip(img, 0, 255).astype(np.uint8)


def review_folder(root: Path, n_real: int = 6, n_synthetic: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_real + n_synthetic):
        synthetic = i >= n_real
        tone, dx = str(i % 3), ("benign", "malignant")[(i // 3) % 2]
        name = f"syn0_{dx}-{tone}_{i:05d}" if synthetic else f"ISIC_{i:07d}"
        if synthetic:
            info = PngInfo()
            info.add_text("synthetic", "true")
            info.add_text("prompt", f"{dx} skin disease on tone {tone}")
            Image.fromarray(_pixels(rng, tone, 48, 48)).save(root / f"{name}.png", pnginfo=info)
        else:
            exif = Image.Exif()
            exif[0x010F] = "DermCam"  # Make
            Image.fromarray(_pixels(rng, tone, 64, 48)).save(root / f"{name}.jpg", quality=95, exif=exif)
        rows.append({"image_name": name, "benign_malignant": dx, "skin_tone": tone,
                     "synthetic": str(synthetic).lower(), "seed": str(1000 + i) if synthetic else "",
                     "prompt": f"{dx} skin disease" if synthetic else "", "ita_estimated": "12.5" if synthetic else ""})
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root / "rebalance_run.json").write_text(json.dumps({"groups": ["benign_malignant", "skin_tone"]}))
    return root


def add_memorisation_csv(folder: Path) -> Path:
    """``memorisation.csv`` as ``evaluate`` writes it: each synthetic image's nearest real image."""
    with open(folder / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    real = [folder / f"{r['image_name']}.jpg" for r in rows if r["synthetic"] == "false"]
    syn = [folder / f"{r['image_name']}.png" for r in rows if r["synthetic"] == "true"]
    path = folder / "memorisation.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["generated_file", "train_file", "cosine", "flipped", "ssim"])
        for i, s in enumerate(syn):
            writer.writerow([s, real[i % len(real)], f"{0.9 - i / 100:.6f}", "false", "0.5"])
    return path
