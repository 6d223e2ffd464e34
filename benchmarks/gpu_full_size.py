"""Full-size SD v1-4 on one GPU: seconds per image, images/s, MFU and peak memory of our training step,
and a full + EMA + 8-bit Adam stop-and-resume check.

The architecture comes from the packaged SD v1-4 configs with random weights (nothing is downloaded),
saved once to a scratch folder so every run loads it the way a real base loads. Recipes, at 512²:
the paper's (full UNet + EMA + AdamW, gradient checkpointing, batch 1 × 4 accumulation), full UNet +
EMA + 8-bit Adam, LoRA r16 + 8-bit Adam; each in fp16 (with loss scaling) and bf16, at batch 1 and at
the largest batch ``plan`` says fits 24 GB. Each run: warm-up (2 micro-steps, and until an optimizer step
is applied: fp16's loss scaler skips its first, overflowing steps), then timed micro-steps; peak =
``torch.cuda.max_memory_allocated`` over the timed steps, shown beside ``plan``'s estimate. MFU counts
2.41 TFLOP per 512² image for full fine-tuning and 1.73 for LoRA (recomputation not counted).

Resume check (full + EMA + AdamW8bit, fp16): a run stopped halfway and resumed must have its EMA on the
GPU right after the resume and end with an EMA within 1e-3 (relative) of an uninterrupted run's, and
within 3x the gap between two uninterrupted runs. A failed part is reported and the next one runs; the
script exits 1 if any failed. Where there is no GPU it says so and exits 0.

    PYTHONPATH=. python benchmarks/gpu_full_size.py [--steps 4] [--max-batch 32] [--peak-tflops N]
    PYTHONPATH=. python benchmarks/gpu_full_size.py --smoke [--threads N]   # every code path on the CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import speed_common as sc  # noqa: E402
import torch  # noqa: E402

GB = 1e9
BUDGET = 24 * 10**9
RESUME_TOLERANCE = 1e-3
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
# --smoke: SD v1-4's layout (4 UNet and VAE levels, same block types) at toy widths
SMOKE_SIZES = {"unet": {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "norm_num_groups": 8,
                        "cross_attention_dim": 32, "sample_size": 4},
               "vae": {"block_out_channels": [8, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 8,
                       "sample_size": 32},
               "text_encoder": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                                "num_attention_heads": 4, "projection_dim": 32}}


@dataclass
class Target:
    """Where the benchmark runs and at what size."""

    name: str
    device: str
    base: str
    resolution: int
    precisions: tuple[str, ...]
    peak: float | None  # dense fp16/bf16 TFLOP/s, for MFU
    images: int  # dataset size


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_TFLOPS.items():  # "H100 PCIe" before "H100"
        if key in name:
            return value
    return None


def build_full_size(folder: Path, device: str, sizes: dict | None = None) -> Path:
    """SD v1-4's architecture with seeded random weights, saved like a downloaded base (``sizes``
    overrides config entries: --smoke's toy widths)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from dermdiff_lora.core.models import write_tiny_tokenizer_files

    arch = sc.sd14_architecture()
    for part, extra in (sizes or {}).items():
        arch[part] = {**arch[part], **extra}
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


def gpu_target(args, root: Path) -> Target:
    torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name()
    base = str(build_full_size(root / "sd14-random", "cuda"))
    return Target(name, "cuda", base, 512, ("fp16", "bf16"), args.peak_tflops or peak_tflops(name), 16)


def smoke_target(root: Path) -> Target:
    base = str(build_full_size(root / "sd14-toy", "cpu", SMOKE_SIZES))
    return Target("smoke (CPU, toy widths, fp16 with a CPU loss scaler)", "cpu", base, 32, ("fp16", "bf16"),
                  None, 8)


def warm_up(run, batches, least: int) -> bool:
    """At least ``least`` micro-steps, then on until an optimizer step is applied (fp16's loss scaler skips
    its first, overflowing steps); False if none is within 10 optimizer steps."""
    from dermdiff_lora.training import train

    accum = run.cfg.train.gradient_accumulation
    applied = False
    for done in range(1, least + 10 * accum + 1):
        out = train.micro_step(run, next(batches))
        if run.accelerator.sync_gradients and not out.skipped:
            train.advance(run)
            applied = True
        if applied and done >= least:
            return True
    return False


def measure(cfg, steps: int) -> dict:
    """Seconds per image and peak allocated bytes of ``steps`` timed micro-steps (after warm-up)."""
    from dermdiff_lora.training import train

    cuda = torch.cuda.is_available()
    leftover = torch.cuda.memory_allocated() if cuda else 0  # earlier runs' (should be ~0)
    sc.fresh_accelerate()
    run = train.setup(cfg, resuming=False)
    accum = cfg.train.gradient_accumulation
    timed = -(-steps // accum) * accum  # whole optimizer steps
    batches = iter(train.make_loader(run, 0, 10**6))
    if not warm_up(run, batches, max(2, accum)):
        print("  warning: no optimizer step was applied (fp16 overflow): its states are not in the peak")
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
    _release()
    return {"s_per_image": seconds / (timed * cfg.train.batch_size), "peak": peak, "leftover": leftover}


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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


def bench_recipe(target: Target, data: Path, root: Path, recipe: str, args) -> bool:
    """Both precisions at batch 1 and at ``plan``'s largest batch (capped at --max-batch)."""
    overrides, tflop, goal = RECIPES[recipe]

    def cfg_for(batch: int, precision: str, *extra: str):
        return sc.make_cfg(data, root / "run", f"model.base={target.base}", f"data.resolution={target.resolution}",
                           f"train.batch_size={batch}", f"train.mixed_precision={precision}",
                           "train.gradient_checkpointing=true", *overrides, *extra)

    # fp16 and bf16: the same bytes; the largest batch needs plan's per-image figures (detail)
    plan1 = planned(cfg_for(1, target.precisions[0]), target.device, detail=args.max_batch > 1)
    bmax = max(1, min(args.max_batch, plan1.largest_batch))
    sizes = [(1, plan1)] + ([(bmax, planned(cfg_for(bmax, target.precisions[0]), target.device, detail=False))]
                            if bmax > 1 else [])
    print(f"\n{recipe} (target: peak ≤ {goal} GB at batch 1)")
    ok = True
    for precision in target.precisions:
        for batch, plan in sizes:
            ok &= guarded(f"{recipe}, {precision}, batch {batch}", lambda b=batch, p=precision, pl=plan: report(
                p, b, measure(cfg_for(b, p), args.steps), pl.peak, tflop, target.peak))
    return ok


@dataclass
class EmaRun:
    """A full run's EMA at its start and end (on the CPU, fp32); for a resumed run, whether every EMA
    tensor was on the UNet's device (and in its dtype) right after the resume."""

    start: list
    end: list
    on_device_after_resume: bool | None


def ema_run(cfg) -> EmaRun:
    """Train (or resume, by ``cfg.train.resume``) to ``cfg.train.max_steps``, keeping the EMA in memory."""
    from dermdiff_lora.training import train

    sc.fresh_accelerate()
    run, state = train.start(cfg)
    weight = next(run.accelerator.unwrap_model(run.parts.unet).parameters())
    on_device = (all(t.device == weight.device and t.dtype == weight.dtype for t in run.ema.shadow_params)
                 if state.step else None)
    start = [t.detach().to("cpu", torch.float32, copy=True) for t in run.ema.shadow_params]
    train.fit(run, state, cfg.train.max_steps)
    end = [t.detach().to("cpu", torch.float32, copy=True) for t in run.ema.shadow_params]
    run.accelerator.end_training()
    del run
    _release()
    return EmaRun(start, end, on_device)


def relative_gap(a: list, b: list) -> float:
    """‖a − b‖ / ‖b‖ over all tensors together."""
    diff = sum(float((x - y).double().pow(2).sum()) for x, y in zip(a, b))
    return (diff / sum(float(y.double().pow(2).sum()) for y in b)) ** 0.5


def resume_check(target: Target, data: Path, root: Path, steps: int) -> bool:
    """full + EMA + AdamW8bit in the first precision (fp16): stopped at steps // 2 and resumed vs
    uninterrupted. A second uninterrupted run measures the device's own run-to-run noise: the EMA keeps
    ~10 % of its pre-resume history at these step counts, so a lost history moves the result by only
    ~0.1 × the EMA's movement, which 1e-3 alone may not see."""
    from dermdiff_lora.training import train

    overrides, _, _ = RECIPES["full+EMA+AdamW8bit"]

    def cfg_for(name: str, *extra: str):
        return sc.make_cfg(data, root / name, f"model.base={target.base}", f"data.resolution={target.resolution}",
                           f"train.mixed_precision={target.precisions[0]}", "train.gradient_checkpointing=true",
                           *overrides, "train.gradient_accumulation=2", f"train.max_steps={steps}", "optim.lr=1e-4",
                           *extra)

    print(f"\nresume check: full+EMA+AdamW8bit, {target.precisions[0]}, {steps} steps × 2 accumulation, "
          f"stopped at {steps // 2}", flush=True)
    straight, again = ema_run(cfg_for("straight")), ema_run(cfg_for("again"))
    sc.fresh_accelerate()
    train.train(cfg_for("resumed"), stop_after=steps // 2)
    _release()
    resumed = ema_run(cfg_for("resumed", "train.resume=latest"))
    gap, noise = relative_gap(resumed.end, straight.end), relative_gap(again.end, straight.end)
    moved = relative_gap(straight.end, straight.start)
    ok = bool(resumed.on_device_after_resume) and gap <= RESUME_TOLERANCE and gap <= 3 * noise + 1e-7
    print(f"  EMA on the UNet's device ({target.device}) and dtype after the resume: "
          f"{resumed.on_device_after_resume}\n  final EMA, resumed vs uninterrupted: {gap:.2e} relative (limit "
          f"{RESUME_TOLERANCE:g}, and 3 x the noise floor); uninterrupted twice (noise floor): {noise:.2e}; "
          f"the EMA moved {moved:.2e} from its start: {'PASS' if ok else 'FAIL'}", flush=True)
    return ok


def guarded(what: str, fn, *args) -> bool:
    """Run one measurement; a failure is reported and the next one runs (a lent GPU is short)."""
    try:
        return fn(*args) is not False
    except Exception as exc:  # noqa: BLE001 - report any failure, go on with the next measurement
        print(f"  FAILED {what}: {type(exc).__name__}: {exc}", flush=True)
        traceback.print_exc(limit=-3)
        _release()
        return False


def rebalance_check(target: Target, root: Path, smoke: bool) -> None:
    """rebalance vs a plain diffusers loop on this base (benchmarks/rebalance_speed.py's comparison)."""
    import rebalance_speed

    print("\n" + "\n".join(rebalance_speed.gpu_variant(Path(target.base), root / "rebalance", smoke=smoke)), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed micro-steps per run (whole optimizer "
                                                             "steps are timed)")
    parser.add_argument("--max-batch", type=int, default=32, help="cap on the 'largest batch' runs")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU's dense fp16/bf16 peak")
    parser.add_argument("--resume-steps", type=int, default=4, help="optimizer steps of the resume check")
    parser.add_argument("--smoke", action="store_true", help="run every code path on the CPU at toy sizes "
                                                             "(fp16 with a CPU loss scaler), to check it")
    parser.add_argument("--parts", default="recipes,resume,rebalance", help="comma-separated: recipes, resume, "
                                                                          "rebalance (default all)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default with --smoke: "
                                                                   "OMP_NUM_THREADS, else 1; without: all)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.smoke:
        print("no GPU: nothing measured (this benchmark needs CUDA; --smoke checks its code on the CPU)")
        return 0
    if args.smoke:
        args.steps, args.max_batch, args.resume_steps = 1, 1, 2
    smoke_threads = int(os.environ.get("OMP_NUM_THREADS") or 1)
    sc.setup_process(args.threads or (smoke_threads if args.smoke else torch.get_num_threads()))
    root = sc.workdir()
    try:
        return run_all(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # models, caches and checkpoints: GBs on a GPU


def run_all(args, root: Path) -> int:
    """Every recipe, then the resume check; 0 when all of them passed."""
    t0 = time.time()
    target = smoke_target(root) if args.smoke else gpu_target(args, root)
    data = sc.make_data(root / "data", target.images, target.resolution)
    print(f"{target.name}: torch {torch.__version__}, peak {target.peak or 'unknown'} TFLOP/s dense "
          f"(setup {time.time() - t0:.0f} s); batch 'max' = plan's largest batch for 24 GB")
    parts = set(args.parts.split(","))
    with sc.cpu_loss_scaler() if args.smoke else contextlib.nullcontext():
        ok = [guarded(recipe, bench_recipe, target, data, root, recipe, args) for recipe in RECIPES
              if "recipes" in parts]
        if "resume" in parts:
            ok.append(guarded("resume check", resume_check, target, data, root, args.resume_steps))
        if "rebalance" in parts:
            ok.append(guarded("rebalance", rebalance_check, target, root, args.smoke))
    print(f"\ntotal {time.time() - t0:.0f} s; {ok.count(False)} of {len(ok)} parts failed")
    return 0 if all(ok) else 1

if __name__ == "__main__":
    sys.exit(main())
