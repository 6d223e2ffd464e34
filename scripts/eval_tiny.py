"""Measure the shipped ``tiny`` base (or any base): tone fidelity, lesions, diversity, diagnosis.

    PYTHONPATH=. python scripts/eval_tiny.py             # about 2 min on 2 CPU cores

For each of the 6 prompts (benign | malignant × lighter | brown | darker) it generates one 32 px image per
seed (DPM-Solver++, ``--steps`` steps, classifier-free guidance ``--guidance``) and prints, per prompted
tone: the share the ITA estimator puts in that tone group (target >= 90 %), the share with a segmented
lesion (>= 90 %), the mean ITA; the diversity across seeds (mean pairwise RMS pixel distance between images
of one prompt, next to the same figure for real synthetic images of one group); and the share of images
whose prompted diagnosis a small CNN, trained on real synthetic images, recognises (target >= 80 %), next
to the same share for a CNN trained on those real images after the model's own VAE round trip (it tells
what the UNet draws from what the 16x16x4 latents can hold).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np

from dermdiff_lora.core import models
from dermdiff_lora.core.prompts import PromptBuilder
from dermdiff_lora.tone import fidelity
from dermdiff_lora.tone.synthetic import make_dataset

TARGETS = {"in_group": 0.9, "lesion": 0.9, "diagnosis": 0.8}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="tiny")
    p.add_argument("--seeds", type=int, default=20, help="images per prompt (seeds 1000, 1001, ...)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p.parse_args(argv)


def real_images(n: int = 600, seed: int = 12345):
    """Real synthetic images (full paper tone ranges, a seed the build never used) with their labels."""
    import torch
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_dataset(Path(tmp) / "real", n=n, size=32, seed=seed, malignant_fraction=0.5)
        rows = list(csv.DictReader(open(folder / "metadata.csv")))
        x = np.stack([np.asarray(Image.open(folder / f"{r['image_name']}.png").convert("RGB")) for r in rows])
    y = np.array([int(r["target"]) for r in rows])
    tones = np.array([int(r["skin_tone"]) for r in rows])
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1.0, torch.from_numpy(y), tones


def blur(x, sigma: float):
    """Gaussian blur (5-tap, separable, edges replicated) of an (N, 3, H, W) batch."""
    import torch
    import torch.nn.functional as F

    k = torch.exp(-((torch.arange(5.0) - 2.0) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).repeat(3, 1, 1, 1)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(3, 1, 1, 5), groups=3)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k.view(3, 1, 5, 1), groups=3)


def diagnosis_classifier(x, y, steps: int = 400, seed: int = 0):
    """A 3-layer CNN (benign 0 / malignant 1) trained with flips and, on half the batches, a blur of
    sigma 0.3-1.2 px (generated images are smoother than drawn ones: the classifier must judge the lesion,
    not the sharpness). Returns it and its accuracy on held-out real images, sharp and blurred (sigma 1)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
                        nn.Flatten(), nn.Linear(32, 2))
    split = int(0.8 * len(x))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, split, (64,), generator=gen)
        xb = x[idx].flip(-1) if torch.rand((), generator=gen) < 0.5 else x[idx]
        if torch.rand((), generator=gen) < 0.5:
            xb = blur(xb, 0.3 + 0.9 * torch.rand((), generator=gen).item())
        loss = nn.functional.cross_entropy(net(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net, [classify(net, xs, y[split:]) for xs in (x[split:], blur(x[split:], 1.0))]


def real_diversity(x, y, tones) -> float:
    """The diversity figure of real images: mean pairwise RMS distance within each (diagnosis, tone)."""
    u8 = ((x + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    cells = [u8[(y.numpy() == d) & (tones == t)][:20] for d in (0, 1) for t in (0, 1, 2)]
    d = [float(np.sqrt(np.mean((a - b) ** 2))) for arr in cells for i, a in enumerate(arr) for b in arr[i + 1:]]
    return float(np.mean(d))


def diagnosis_hits(net, samples) -> dict[str, float]:
    """Per prompted tone: share of generated images whose prompted diagnosis the classifier predicts."""
    import torch

    x = torch.from_numpy(np.stack([np.asarray(s.image.convert("RGB")) for s in samples]))
    x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        pred = net(x).argmax(1).numpy()
    want = np.array([s.words["benign_malignant"] == "malignant" for s in samples])
    tones = np.array([s.words["skin_tone"] for s in samples])
    return {t: float((pred[tones == t] == want[tones == t]).mean()) for t in dict.fromkeys(tones)}


def evaluate(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    pipe = models.load_pipeline(args.base)
    samples = fidelity.generate_samples(pipe, PromptBuilder(), range(1000, 1000 + args.seeds),
                                        steps=args.steps, guidance_scale=args.guidance)
    report = fidelity.tone_report(samples)
    x, y, tones = real_images()
    net, real_acc = diagnosis_classifier(x, y)
    net_vae, vae_acc = diagnosis_classifier(vae_round_trip(pipe.vae, x), y)
    for tone, hit in diagnosis_hits(net, samples).items():
        report[tone]["diagnosis"] = hit
    for tone, hit in diagnosis_hits(net_vae, samples).items():
        report[tone]["diagnosis_vae"] = hit
    return {"base": args.base, "seeds_per_prompt": args.seeds, "steps": args.steps,
            "guidance_scale": args.guidance, "scheduler": type(pipe.scheduler).__name__,
            "per_tone": report, "diversity": fidelity.diversity(samples),
            "real_diversity": real_diversity(x, y, tones), "classifier_real_accuracy": real_acc,
            "classifier_vae_accuracy": vae_acc,
            "vae_round_trip_accuracy": classify(net, vae_round_trip(pipe.vae, x[-120:]), y[-120:])}


def vae_round_trip(vae, x):
    """Real images as the model's VAE reproduces them (encode → latent mean → decode)."""
    import torch

    with torch.no_grad():
        return torch.cat([vae.decode(vae.encode(x[i:i + 100]).latent_dist.mean).sample.clamp(-1, 1)
                          for i in range(0, len(x), 100)])


def classify(net, x, y) -> float:
    import torch

    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def print_figures(res: dict) -> bool:
    print(f"base {res['base']}: {res['seeds_per_prompt']} seeds x 6 prompts, {res['scheduler']} "
          f"{res['steps']} steps, guidance {res['guidance_scale']}")
    print(f"{'tone':<9}{'in group':>10}{'lesion':>8}{'diagnosis':>11}{'diag. (VAE)':>13}{'mean ITA':>10}"
          f"{'undet.':>8}")
    ok = True
    for tone, r in res["per_tone"].items():
        ok &= all(r[k] >= t for k, t in TARGETS.items())
        print(f"{tone:<9}{r['in_group']:>10.0%}{r['lesion']:>8.0%}{r['diagnosis']:>11.0%}"
              f"{r['diagnosis_vae']:>13.0%}{r['mean_ita']:>10.1f}{r['undetermined']:>8}")
    itas = [r["mean_ita"] for r in res["per_tone"].values()]
    ok &= itas == sorted(itas, reverse=True) and res["diversity"] > 0.25 * res["real_diversity"]
    sharp, blurred = res["classifier_real_accuracy"]
    print(f"diversity across seeds {res['diversity']:.1f} (real images of one group: "
          f"{res['real_diversity']:.1f}); diagnosis classifier accuracy on held-out real images "
          f"{sharp:.0%} (blurred: {blurred:.0%}; after the model's VAE round trip: "
          f"{res['vae_round_trip_accuracy']:.0%}). diag. (VAE): a second classifier trained on the real images "
          f"after the VAE round trip (held-out accuracy {res['classifier_vae_accuracy'][0]:.0%})")
    print(f"targets (in group >= 90 %, lesion >= 90 %, diagnosis >= 80 %, ITA order, diversity > 1/4 of "
          f"real): {'all met' if ok else 'NOT all met'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = evaluate(args)
    ok = print_figures(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
