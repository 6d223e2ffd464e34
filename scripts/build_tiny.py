"""Build the shipped ``tiny`` base model: synthetic data → tiny VAE → tiny UNet → dermdiff_lora/assets/tiny.

    PYTHONPATH=. python scripts/build_tiny.py --threads 2   # 20 min on 2 idle CPU cores (busy cores: --threads 1)

1. ``synthetic.make_dataset``: 32 px skin + lesion images at known ITA, half benign (small, one brown),
   half malignant (larger, irregular, with a black-brown patch); each group's ITA is drawn inside its
   paper interval, 6 degrees clear of the boundaries.
2. The tiny VAE (``models.tiny_architecture``) learns to reconstruct them in a plain PyTorch loop: L1 +
   a low-frequency colour term (ITA lives in the mean skin colour) + an edge term (the lesion's border and
   colour patches tell benign from malignant) + a small KL term; its
   ``scaling_factor`` is then set to 1 / std of the latents.
3. The UNet trains from random weights with the package's own loop (``configs/tiny_build.yaml``: full
   mode, EMA, caption dropout for classifier-free guidance); the text encoder stays the seeded random one
   (frozen): its whole-word tokens for the tone and diagnosis words already give distinct embeddings.
4. The pipeline (EMA UNet, zero-terminal-SNR v-prediction DPM-Solver++ scheduler, safetensors) replaces the asset folder atomically, with
   ``build_info.json`` recording seeds, steps, timings and the VAE's colour fidelity.
Seeded: the same arguments on the same torch build give the same weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from dermdiff_lora.core import config, models
from dermdiff_lora.core.fsutil import replace_dir
from dermdiff_lora.tone.synthetic import make_dataset

BUILD_RANGES = {"lighter": (34.0, 70.0), "brown": (-24.0, 22.0), "darker": (-60.0, -36.0)}
LOW_FREQ_WEIGHT = 4.0  # MSE of 4x4-pooled colours (the skin tone), on top of per-pixel L1
EDGE_WEIGHT = 1.0  # L1 of horizontal/vertical differences (lesion border and colour patches: the diagnosis)
KL_WEIGHT = 1e-6  # per latent element, as small as SD's: the decoder must see sharp latents
# Init scale of the frozen random text encoder. With CLIP's default (1.0) swapping one word moves the
# hidden states of the later (padding) positions by ~13 % and the UNet ignores the prompt; with 10, ~48 %.
TEXT_INIT_FACTOR = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=models.TINY_ASSET, help="pipeline folder to (re)write")
    p.add_argument("--work", type=Path, default=Path("outputs/build_tiny"), help="data and run folder")
    p.add_argument("--n", type=int, default=900, help="synthetic training images")
    p.add_argument("--vae-steps", type=int, default=800)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--unet-steps", type=int, default=None, help="default: train.max_steps of the config")
    p.add_argument("--config", default="tiny_build", help="training config of the UNet stage")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest on a busy 2-core machine; 2 on an idle one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reuse-vae", action="store_true",
                   help="keep WORK/base (data + trained VAE) from an earlier run; retrain the UNet only")
    return p.parse_args(argv)


def load_images(folder: Path):
    """Every image of an imagefolder as one (N, 3, H, W) float tensor in [-1, 1]."""
    import torch
    from PIL import Image

    files = sorted(folder.glob("*.png"))
    arrays = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 127.5 - 1.0 for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def vae_loss(vae, x, generator):
    import torch.nn.functional as F

    dist = vae.encode(x).latent_dist
    z = dist.sample(generator=generator)
    rec = vae.decode(z).sample
    low = F.mse_loss(F.avg_pool2d(rec, 8), F.avg_pool2d(x, 8))
    edges = sum((rec.diff(dim=d) - x.diff(dim=d)).abs().mean() for d in (2, 3))
    kl = dist.kl().mean() / z[0].numel()
    return (rec - x).abs().mean() + LOW_FREQ_WEIGHT * low + EDGE_WEIGHT * edges + KL_WEIGHT * kl


def train_vae(vae, images, steps: int, batch: int, seed: int, lr: float = 2e-3) -> float:
    """Adam with a cosine schedule and random flips; returns the mean loss of the last 20 steps."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    vae.train()
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        x = images[idx]
        flip = torch.rand(batch, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = vae_loss(vae, x, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 25 == 0:
            print(f"  vae step {step + 1}/{steps} loss {np.mean(losses[-25:]):.4f}", flush=True)
    vae.eval()
    return float(np.mean(losses[-20:]))


def set_scaling_factor(vae, images) -> float:
    """Scale latents to unit variance for the diffusion model (SD's 0.18215 plays the same role)."""
    import torch

    with torch.no_grad():
        means = torch.cat([vae.encode(images[i:i + 128]).latent_dist.mean for i in range(0, len(images), 128)])
    factor = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=factor)
    return factor


def vae_fidelity(vae, images, n: int = 60) -> dict:
    """Mean |ITA(reconstruction) - ITA(original)| and the share of reconstructions with a lesion."""
    import torch

    from dermdiff_lora.tone.skintone import estimate_ita

    with torch.no_grad():
        rec = vae.decode(vae.encode(images[:n]).latent_dist.mean).sample
    to_u8 = lambda t: ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()  # noqa: E731
    errors, lesions = [], 0
    for a, b in zip(images[:n], rec):
        ea, eb = estimate_ita(to_u8(a)), estimate_ita(to_u8(b))
        if ea.ita is not None and eb.ita is not None:
            errors.append(abs(ea.ita - eb.ita))
        lesions += eb.lesion_fraction > 0.02
    return {"ita_abs_error_mean": round(float(np.mean(errors)), 2),
            "ita_abs_error_max": round(float(np.max(errors)), 2), "lesion_found": lesions / n}


def build_base(work: Path, images, args) -> tuple[Path, dict]:
    """The starting pipeline folder: seeded random text encoder and UNet, trained VAE."""
    from diffusers import AutoencoderKL

    base = work / "base"
    shutil.rmtree(base, ignore_errors=True)
    models.build_tiny_random(base, seed=args.seed)
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    loss = train_vae(vae, images, args.vae_steps, args.vae_batch, args.seed)
    info = {"vae_final_loss": round(loss, 4), "vae_scaling_factor": round(set_scaling_factor(vae, images), 4)}
    info["vae_colour"] = vae_fidelity(vae, images)
    vae.save_pretrained(base / "vae", safe_serialization=True)
    return base, info


def write_text_encoder(base: Path, seed: int, factor: float = TEXT_INIT_FACTOR) -> None:
    """Re-draw the base's random text encoder with initializer scale ``factor`` (it stays frozen)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig.from_pretrained(base, subfolder="text_encoder")
    cfg.initializer_factor = factor
    torch.manual_seed(seed)
    CLIPTextModel(cfg).save_pretrained(base / "text_encoder", safe_serialization=True)


def write_scheduler(base: Path) -> None:
    """DPM-Solver++ over SD's betas rescaled to zero terminal SNR, v-prediction, trailing timesteps (Lin et
    al., "Common diffusion noise schedules and sample steps are flawed"). With SD's own schedule the last
    step still holds signal, so at 16x16 latents the model reads the skin tone off the mean of the
    starting noise, i.e. off the seed, instead of off the prompt."""
    from diffusers import DPMSolverMultistepScheduler

    DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                timestep_spacing="trailing").save_pretrained(base / "scheduler")
    index_file = base / "model_index.json"
    index = json.loads(index_file.read_text())
    index["scheduler"] = ["diffusers", "DPMSolverMultistepScheduler"]
    index_file.write_text(json.dumps(index, indent=2) + "\n")


def train_unet(base: Path, data: Path, work: Path, args) -> dict:
    from dermdiff_lora.training.train import train

    overrides = [f"model.base={base}", f"data.dir={data}", f"output.dir={work / 'unet'}",
                 "output.overwrite=true", f"train.seed={args.seed}"]
    if args.unet_steps:
        overrides.append(f"train.max_steps={args.unet_steps}")
    return train(config.load(args.config, overrides))


def export(run_dir: Path, out: Path, info: dict) -> int:
    """Save the trained pipeline to ``out`` atomically (only its parts); returns its size in bytes."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(run_dir, safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False, use_safetensors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        models.write_tiny_tokenizer_files(tmp / "tokenizer")  # vocab.json + merges.txt for slow tokenizers
        (tmp / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sum(f.stat().st_size for f in out.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> dict:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    base, data, stage = args.work / "base", args.work / "data", args.work / "base_info.json"
    if not (args.reuse_vae and stage.is_file()):
        make_dataset(data, n=args.n, size=32, seed=args.seed, malignant_fraction=0.5, ita_ranges=BUILD_RANGES,
                     overwrite=True)
        times = {"data_s": round(time.time() - t0, 1)}
        info = {"seed": args.seed, "images": args.n, "ita_ranges": BUILD_RANGES, "threads": args.threads,
                "vae_steps": args.vae_steps, "vae_batch": args.vae_batch}
        base, vae_info = build_base(args.work, load_images(data), args)
        info.update(vae_info)
        times["vae_s"] = round(time.time() - t0 - sum(times.values()), 1)
        stage.write_text(json.dumps({"info": info, "times": times}))
    else:
        info, times = json.loads(stage.read_text()).values()
    print(f"VAE: {info}", flush=True)
    info.update(config=args.config, text_init_factor=TEXT_INIT_FACTOR)
    t_unet = time.time()
    write_text_encoder(base, args.seed)
    write_scheduler(base)
    summary = train_unet(base, data, args.work, args)
    info.update(unet_steps=summary["steps"], unet_final_loss=round(summary["final_loss"], 4))
    times["unet_s"] = round(time.time() - t_unet, 1)
    info["times"] = {**times, "total_s": round(sum(times.values()), 1)}
    size = export(args.work / "unet", args.out, info)
    print(f"wrote {args.out} ({size / 1e6:.2f} MB): {json.dumps(info)}")
    return info


if __name__ == "__main__":
    main()
