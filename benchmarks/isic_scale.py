"""ISIC scale on CPU: index, latent-cache build (1 and 2 processes) and an epoch of loading over full-size JPEGs.

    PYTHONPATH=. .venv/bin/python benchmarks/isic_scale.py [--images 2000] [--dir /tmp/isic_scale] [--index-only]

Generates ``--images`` ISIC-style 4000x3000 JPEGs once (synthetic skin of known tone with a lesion and
hair, upscaled, with sensor-like noise so files weigh ~2-3 MB like real photos; ``--dir`` keeps them for
a rerun), then measures, each phase in its own process so its peak RSS is its own:

- index: ``dataset.prepare`` (metadata, tones, every image opened and checked), at a first start (every image
  decoded) and at a restart (the image-check record: only changed images decoded); ``--index-only`` stops there;
- loading: the training dataset (``ImageCaptionDataset`` at 512 px through a DataLoader with the default
  ``data.num_workers``) over every image with ``data.decode=draft`` and with ``full``, in alternating
  blocks of 100 images so that other load on the machine hits both alike;
- cache: ``cache.load_or_build`` under torchrun with 1 and with 2 processes (gloo), each encoding its
  share, with two VAEs: ``pool`` (8x8 average pooling: next to free, as SD's VAE is next to JPEG decoding
  on a GPU, so the data path alone is timed) and ``narrow`` (a real 4-level VAE, SD's 8x downsampling and
  64x64 latents at 512 px, channels 4-16: on CPU its convolutions cost more than the decoding);
- attach: resident memory after opening the built cache and after reading every row, with the package's
  reader (``shards.Rows``: positional reads), a memory map (safetensors' ``safe_open``) and ``load_file``
  (what the cache did before; mapped lazily by safetensors >= 0.6, copied whole by older ones).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
W, H, RES = 4000, 3000, 512
OVERRIDES = ["data.file_column=image_name", f"data.resolution={RES}", "logging.progress=false",
             "logging.tensorboard=false"]


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------------- generation
def _upscale(job: tuple[str, str, int]) -> int:
    import numpy as np
    from PIL import Image

    src, dst, seed = job
    rng = np.random.default_rng(seed)
    big = np.asarray(Image.open(src).convert("RGB").resize((W, H), Image.Resampling.BILINEAR), dtype=np.int16)
    noise = rng.integers(-6, 7, size=(H // 4, W // 4, 1), dtype=np.int16).repeat(4, 0).repeat(4, 1)
    noise += rng.integers(-3, 4, size=(H, W, 1), dtype=np.int16)
    Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8)).save(dst, quality=92)
    return os.path.getsize(dst)


def generate(folder: Path, n: int) -> None:
    """``folder``: n 4000x3000 JPEGs named as ISIC-style metadata.csv lists them (once)."""
    from concurrent.futures import ProcessPoolExecutor

    from dermdiff_lora.tone.synthetic import make_dataset

    if (folder / "metadata.csv").is_file() and len(list(folder.glob("*.jpg"))) == n:
        print(f"reusing {n} images in {folder}")
        return
    start = time.perf_counter()
    small = folder.with_name(folder.name + "-small")
    shutil.rmtree(small, ignore_errors=True)
    make_dataset(small, n, size=(400, 300), seed=0, hair=10, image_format="jpg")
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(p), str(folder / p.name), i) for i, p in enumerate(sorted(small.glob("*.jpg")))]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        sizes = list(pool.map(_upscale, jobs, chunksize=8))
    shutil.copy(small / "metadata.csv", folder / "metadata.csv")
    shutil.rmtree(small)
    print(f"generated {n} JPEGs of {W}x{H} (mean {sum(sizes) / n / 1e6:.1f} MB) in "
          f"{time.perf_counter() - start:.0f} s (not part of the figures)")


def narrow_model(folder: Path) -> Path:
    """tiny-random's UNet and text encoder with a narrow 4-level VAE (8x downsampling: 64x64 latents)."""
    from diffusers import AutoencoderKL

    from dermdiff_lora.core.models import ensure_tiny_random

    if not (folder / "model_index.json").is_file():
        shutil.copytree(ensure_tiny_random(), folder)
        shutil.rmtree(folder / "vae")
        AutoencoderKL(block_out_channels=(4, 8, 16, 16), norm_num_groups=4, layers_per_block=1,
                      down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                      latent_channels=4).save_pretrained(folder / "vae")
    return folder


# --------------------------------------------------------------------------------------------- phases
def cfg_for(folder: str, model: str, *extra: str):
    from dermdiff_lora.core import config

    return config.load(None, [f"data.dir={folder}", f"model.base={model}", f"output.dir={folder}-out",
                              *OVERRIDES, *extra])


def phase_index(folder: str, model: str) -> dict:
    from dermdiff_lora.data import dataset as data

    cfg = cfg_for(folder, model)
    start = time.perf_counter()
    _, _, index = data.prepare(cfg)
    return {"images": len(index.records), "seconds": time.perf_counter() - start, "peak_rss": peak_rss()}


def phase_loading(folder: str, model: str, block: int = 100) -> dict:
    import torch

    from dermdiff_lora.core import config, models
    from dermdiff_lora.data import dataset as data
    from dermdiff_lora.data.loading import loader_options

    torch.set_num_threads(1)
    cfg, _, index = data.prepare(cfg_for(folder, model))
    tokenizer = models.load_parts(model).tokenizer
    sets = {m: data.ImageCaptionDataset(index, config.with_overrides(cfg, [f"data.decode={m}"]).data, tokenizer)
            for m in ("draft", "full")}
    options = loader_options(cfg.data)
    seconds = {"draft": 0.0, "full": 0.0}
    n = len(index.records)
    for first in range(0, n, block):
        keys = [(i, i) for i in range(first, min(n, first + block))]
        for mode, ds in sets.items():
            loader = torch.utils.data.DataLoader(ds, batch_size=8, sampler=keys, collate_fn=data.collate, **options)
            start = time.perf_counter()
            for _ in loader:
                pass
            seconds[mode] += time.perf_counter() - start
    return {"images": n, "seconds": seconds, "images_per_s": {m: n / s for m, s in seconds.items()},
            "num_workers": options["num_workers"], "peak_rss": peak_rss()}


class PoolVAE:
    """A stand-in for a VAE that costs next to nothing (as SD's does on a GPU next to JPEG decoding): 8x8
    average pooling to 4 channels, as ``vae.encode(x).latent_dist``."""

    def encode(self, x):
        import torch.nn.functional as F

        mean = F.avg_pool2d(x, 8)
        mean = torch_cat([mean, mean[:, :1]])
        return type("Out", (), {"latent_dist": type("Dist", (), {"mean": mean, "std": mean.abs() + 1e-3})()})()


def torch_cat(parts):
    import torch

    return torch.cat(parts, dim=1)


def phase_cache(folder: str, model: str, cache_dir: str, vae: str = "narrow") -> dict:
    import torch
    from accelerate import Accelerator

    from dermdiff_lora.core import models
    from dermdiff_lora.data import cache
    from dermdiff_lora.data import dataset as data

    torch.set_num_threads(1)
    acc = Accelerator(cpu=True)
    cfg, _, index = data.prepare(cfg_for(folder, model, f"speed.cache_dir={cache_dir}"))
    parts = models.load_parts(model)
    if vae == "pool":
        parts.vae.encode = PoolVAE().encode
    run = type("Run", (), {})()
    run.cfg, run.accelerator, run.parts, run.index, run.weight_dtype = cfg, acc, parts, index, torch.float32
    acc.wait_for_everyone()
    start = time.perf_counter()
    latents, _ = cache.load_or_build(run)
    seconds = time.perf_counter() - start
    out = {"process": acc.process_index, "processes": acc.num_processes, "seconds": seconds,
           "rows": len(latents), "peak_rss": peak_rss()}
    Path(cache_dir, f"result{acc.process_index}.json").write_text(json.dumps(out))
    return out


def phase_attach(cache_dir: str, how: str) -> dict:
    """RSS after opening the cache and after reading (summing) every row: ``rows`` (the package's reader),
    ``mmap`` (safetensors' safe_open + get_slice per row) or ``load_file`` (what the cache did before)."""
    import torch  # noqa: F401 - imported before the first figure: not part of it
    from safetensors import safe_open
    from safetensors.torch import load_file

    from dermdiff_lora.data import shards

    folder = next(p for p in Path(cache_dir).iterdir() if p.name.startswith("latents-"))
    files = shards.shards(folder)
    n = files[-1][1]
    before = rss()
    if how == "rows":
        rows = shards.Rows(folder, n)
        attached = rss()
        def read(name, i): return rows.get(name, i)  # noqa: E704
    else:
        opened = [(start, safe_open(str(p), "pt") if how == "mmap" else load_file(str(p))) for start, _, p in files]
        attached = rss()

        def read(name, i):
            start, f = next(x for x in reversed(opened) if x[0] <= i)
            return f.get_slice(name)[i - start] if how == "mmap" else f[name][i - start]
    total = 0.0
    for i in range(n):
        total += float(read("mean", i).sum() + read("std", i).sum())
    return {"how": how, "cache_bytes": sum(p.stat().st_size for _, _, p in files), "rows": n,
            "rss_attached": attached - before, "rss_after_epoch": rss() - before, "checksum": total}


# ----------------------------------------------------------------------------------------------- driver
def _sub(*args: str, torchrun: int = 0) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    prefix = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(torchrun)]
              if torchrun else [sys.executable])
    proc = subprocess.run([*prefix, __file__, "--phase", *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-4000:])
    if torchrun:  # several processes print at once: they leave their results in files
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--dir", help="keep the generated images here (default: a temporary folder)")
    parser.add_argument("--index-only", action="store_true", help="measure the index phase only")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, *rest = args.phase
        result = globals()[f"phase_{name}"](*rest)
        print(json.dumps(result))
        return
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="isic-scale-"))
    os.environ["DERMDIFF_CACHE"] = str(root / "dermdiff-cache")
    images = root / "images"
    generate(images, args.images)
    model = str(narrow_model(root / "model"))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.images} JPEGs {W}x{H} -> {RES}²")
    shutil.rmtree(root / "dermdiff-cache" / "image-checks", ignore_errors=True)
    for start in ("first start", "restart"):
        index = _sub("index", str(images), model)
        print(f"index, {start}: {index['images']} images in {index['seconds']:.1f} s "
              f"({index['images'] / index['seconds']:.0f} images/s), peak RSS {index['peak_rss'] / 1e6:.0f} MB")
    if args.index_only:
        return
    loading = _sub("loading", str(images), model)
    ips = loading["images_per_s"]
    print(f"loading ({loading['num_workers']} workers, batches of 8, one epoch each, interleaved): draft "
          f"{ips['draft']:.1f} images/s, full {ips['full']:.1f} images/s ({ips['draft'] / ips['full']:.1f}x), "
          f"peak RSS {loading['peak_rss'] / 1e6:.0f} MB")
    for vae in ("pool", "narrow"):
        for processes in (1, 2):
            cache_dir = root / f"cache-{vae}-{processes}"
            shutil.rmtree(cache_dir, ignore_errors=True)
            cache_dir.mkdir()
            _sub("cache", str(images), model, str(cache_dir), vae, torchrun=processes)
            results = [json.loads((cache_dir / f"result{r}.json").read_text()) for r in range(processes)]
            wall = max(r["seconds"] for r in results)
            print(f"cache build ({vae} VAE), {processes} process(es): {wall:.0f} s ({args.images / wall:.1f} "
                  "images/s); per process: " + ", ".join(f"{r['seconds']:.0f} s, peak RSS "
                                                         f"{r['peak_rss'] / 1e6:.0f} MB" for r in results))
    for how in ("rows", "mmap", "load_file"):
        a = _sub("attach", str(root / "cache-narrow-1"), how)
        print(f"attach ({how}): cache {a['cache_bytes'] / 1e6:.0f} MB ({a['rows']} rows); RSS +"
              f"{a['rss_attached'] / 1e6:.0f} MB attached, +{a['rss_after_epoch'] / 1e6:.0f} MB after reading every row")
    if not args.dir:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
