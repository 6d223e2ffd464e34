"""Full-size SD v1-4 on one GPU: seconds per image, images/s, MFU and peak memory of our training step.

The architecture comes from the packaged SD v1-4 configs with random weights (nothing is downloaded),
saved once to a scratch folder so every run loads it the way a real base loads. Recipes, at 512²:
the paper's (full UNet + EMA + AdamW, gradient checkpointing, batch 1 × 4 accumulation), full UNet +
EMA + 8-bit Adam, LoRA r16 + 8-bit Adam; each in fp16 (with loss scaling: the CPU never runs it) and
bf16, at batch 1 and at the largest batch ``plan`` says fits 24 GB. Each run: warm-up (2 micro-steps,
and until the optimizer has stepped: fp16's loss scaler skips its first, overflowing steps), then timed
micro-steps; peak = ``torch.cuda.max_memory_allocated``
over the timed steps, shown beside ``plan``'s estimate. MFU counts 2.41 TFLOP per 512² image for full
fine-tuning and 1.73 for LoRA (recomputation not counted). Where there is no GPU it says so, exits 0.

    PYTHONPATH=. python benchmarks/gpu_full_size.py [--steps 4] [--max-batch 32] [--peak-tflops N]
    PYTHONPATH=. python benchmarks/gpu_full_size.py --cpu-dry-run   # the same code on the tiny model
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import speed_common as sc  # noqa: E402
import torch  # noqa: E402

GB = 1e9
BUDGET = 24 * 10**9
RECIPES = {  # name: (overrides, TFLOP per image for MFU, targets: peak GB at batch 1)
    "paper: full+EMA+AdamW": (["train.mode=full", "optim.name=adamw", "train.gradient_accumulation=4"],
                              2.41, 20),
    "full+EMA+AdamW8bit": (["train.mode=full", "optim.name=adamw8bit", "train.gradient_accumulation=4"],
                           2.41, 16),
    "LoRA r16+AdamW8bit": (["train.mode=lora", "lora.rank=16", "lora.alpha=16", "optim.name=adamw8bit"],
                           1.73, 8),
}
PEAK_TFLOPS = {"H100 PCIe": 756, "H100": 989, "H200": 989, "H800": 989, "A100": 312, "L40S": 362,
               "A10G": 70, "RTX 4090": 165, "RTX 3090": 71}  # dense fp16/bf16 tensor-core peaks


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_TFLOPS.items():  # "H100 PCIe" before "H100"
        if key in name:
            return value
    return None


def build_full_size(folder: Path, device: str) -> Path:
    """SD v1-4's architecture with seeded random weights, saved like a downloaded base."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from dermdiff_lora.core.models import write_tiny_tokenizer_files

    arch = sc.sd14_architecture()
    src = write_tiny_tokenizer_files(folder / ".tokenizer-src")
    tokenizer = CLIPTokenizer(str(src[0]), str(src[1]), model_max_length=77)
    torch.manual_seed(0)
    text = {k: v for k, v in arch["text_encoder"].items() if not k.startswith("_")}
    with torch.device(device):  # initialise on the GPU: seconds instead of minutes
        pipe = StableDiffusionPipeline(
            vae=AutoencoderKL.from_config(arch["vae"]), text_encoder=CLIPTextModel(CLIPTextConfig(**text)),
            tokenizer=tokenizer, unet=UNet2DConditionModel.from_config(arch["unet"]),
            scheduler=PNDMScheduler.from_config(arch["scheduler"]), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    del pipe
    return folder


def measure(cfg, steps: int) -> dict:
    """Seconds per image and peak allocated bytes of ``steps`` timed micro-steps (after warm-up)."""
    from dermdiff_lora.training import train

    cuda = torch.cuda.is_available()
    leftover = torch.cuda.memory_allocated() if cuda else 0  # earlier runs' (should be ~0)
    sc.fresh_accelerate()
    run = train.setup(cfg, resuming=False)
    accum = cfg.train.gradient_accumulation
    warm = max(2, accum)
    timed = -(-steps // accum) * accum  # whole optimizer steps
    batches = iter(train.make_loader(run, 0, -(-(warm + timed) // accum)))
    for _ in range(warm):
        sc.train_step(run, next(batches))
    for batch in train.make_loader(run, 0, 10):  # fp16: the loss scaler skips overflowing first steps
        if run.optimizer.state:
            break
        sc.train_step(run, batch)
    if not run.optimizer.state:
        print("  warning: the optimizer never stepped (fp16 overflow): its states are not in the peak")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(timed):
        sc.train_step(run, next(batches))
    sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() - leftover if cuda else None
    run.accelerator.end_training()
    del run, batches
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return {"s_per_image": seconds / (timed * cfg.train.batch_size), "peak": peak, "leftover": leftover}


def planned(cfg, device: str, detail: bool):
    from dermdiff_lora.training import memory

    return memory.plan(cfg, BUDGET, device=device, suggest=False, detail=detail)


def report(label: str, batch: int, result: dict, plan_peak: int, tflop: float, peak: float | None) -> None:
    ips = 1 / result["s_per_image"]
    mfu = f"{ips * tflop / peak:6.1%}" if peak else "   n/a"
    mem = result["peak"]
    mem_txt = (f"{mem / GB:7.2f} GB  plan {plan_peak / GB:6.2f} GB ({(plan_peak - mem) / mem:+.0%})"
               if mem is not None else f"    n/a    plan {plan_peak / GB:6.2f} GB")
    extra = f"  ({result['leftover'] / GB:.2f} GB left by earlier runs)" if result["leftover"] > GB / 10 else ""
    print(f"  {label:<6}batch {batch:<4}{result['s_per_image']:8.3f} s/img {ips:7.2f} img/s  MFU {mfu}  "
          f"peak {mem_txt}{extra}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed micro-steps per run (whole optimizer "
                                                             "steps are timed)")
    parser.add_argument("--max-batch", type=int, default=32, help="cap on the 'largest batch' runs")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU's dense fp16/bf16 peak")
    parser.add_argument("--cpu-dry-run", action="store_true", help="run the same code on the CPU with the "
                                                                   "tiny model (bf16 only), to check it")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.cpu_dry_run:
        print("no GPU: nothing measured (this benchmark needs CUDA; --cpu-dry-run checks the code on "
              "the CPU)")
        return 0
    sc.setup_process(torch.get_num_threads())
    root = sc.workdir()
    t0 = time.time()
    if args.cpu_dry_run:
        device, base, res, precisions, name, peak = "cpu", "tiny-random", 32, ("bf16",), "CPU dry run", None
    else:
        device, res, precisions = "cuda", 512, ("fp16", "bf16")
        torch.backends.cuda.matmul.allow_tf32 = True
        name = torch.cuda.get_device_name()
        peak = args.peak_tflops or peak_tflops(name)
        base = str(build_full_size(root / "sd14-random", device))
    data = sc.make_data(root / "data", 16, res)
    print(f"{name}: torch {torch.__version__}, peak {peak or 'unknown'} TFLOP/s dense "
          f"(setup {time.time() - t0:.0f} s); batch 'max' = plan's largest batch for 24 GB")
    for recipe, (overrides, tflop, target) in RECIPES.items():
        cfg_for = lambda b, mp, o=overrides: sc.make_cfg(  # noqa: E731
            data, root / "run", f"model.base={base}", f"data.resolution={res}", f"train.batch_size={b}",
            f"train.mixed_precision={mp}", "train.gradient_checkpointing=true", *o)
        plan1 = planned(cfg_for(1, precisions[0]), device, detail=True)  # fp16 and bf16: same bytes
        bmax = max(1, min(args.max_batch, plan1.largest_batch))
        plan_max = planned(cfg_for(bmax, precisions[0]), device, detail=False)
        print(f"\n{recipe} (target: peak ≤ {target} GB at batch 1)")
        for mp in precisions:
            for b, p in ((1, plan1), (bmax, plan_max)):
                report(f"{mp}", b, measure(cfg_for(b, mp), args.steps), p.peak, tflop, peak)
    print(f"\ntotal {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
