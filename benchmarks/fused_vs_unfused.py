"""Generation time with LoRA adapters fused into the weights (``merge``) vs attached unfused, side by side.

Both pipelines are the tiny-random base with the same rank-4 adapter on every attention, feed-forward,
projection, resnet-conv and time-embedding layer (77 layers); runs alternate fused / unfused so machine
load hits both alike. Reports medians and the unfused / fused ratio, for the whole pipeline call and for
the UNet forward alone.

    PYTHONPATH=. python benchmarks/fused_vs_unfused.py [--repeats 7] [--steps 20] [--size 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out",
           "conv1", "conv2", "conv_shortcut", "time_emb_proj"]


def make_adapter(folder: Path) -> Path:
    from peft import LoraConfig

    from dermdiff_lora.adapters import lora
    from dermdiff_lora.core.models import load_parts

    unet = load_parts("tiny-random").unet
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False))
    lora.save_adapter(folder, unet, meta={"base_model": "tiny-random"})
    return folder


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=32, help="image side in px (tiny VAE: latents are size/2)")
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    from diffusers import StableDiffusionPipeline

    from dermdiff_lora.adapters.apply import attach
    from dermdiff_lora.adapters.merge import merge
    from dermdiff_lora.core.models import load_pipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        adapter = make_adapter(Path(tmp) / "adapter")
        merge("tiny-random", [(adapter, 1.0)], Path(tmp) / "merged")
        fused = StableDiffusionPipeline.from_pretrained(Path(tmp) / "merged").to(device)
        unfused = load_pipeline("tiny-random")
        attach(unfused, [(adapter, 1.0)], base_label="tiny-random")
        unfused.to(device)
    pipes = {"unfused": unfused, "fused": fused}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    prompts = ["malignant skin disease on darker skin tone"] * args.batch
    side = args.size // fused.vae_scale_factor
    x = torch.randn(args.batch * 2, 4, side, side, device=device)
    emb = torch.randn(args.batch * 2, 77, 32, device=device)
    t = torch.tensor([500], device=device)

    def call(pipe):
        return lambda: pipe(prompts, num_inference_steps=args.steps, height=args.size, width=args.size,
                            generator=torch.Generator("cpu").manual_seed(0))

    def forward(pipe):
        def run():
            with torch.no_grad():
                pipe.unet(x, t, emb)
            if device == "cuda":
                torch.cuda.synchronize()
        return run

    results = {("pipeline", k): [] for k in pipes} | {("unet", k): [] for k in pipes}
    for pipe in pipes.values():  # warm-up
        call(pipe)()
        forward(pipe)()
    for _ in range(args.repeats):  # alternate so both see the same machine load
        for name, pipe in pipes.items():
            results[("pipeline", name)].append(timed(call(pipe), 1))
            results[("unet", name)].append(timed(forward(pipe), 5))
    print(f"device {device}, torch threads {torch.get_num_threads()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; batch {args.batch}, {args.size} px, {args.steps} steps, "
          f"{args.repeats} alternating repeats (medians)")
    print("| what | unfused (s) | fused (s) | unfused / fused |")
    print("|---|---:|---:|---:|")
    for what in ("pipeline", "unet"):
        u, f = (statistics.median(results[(what, k)]) for k in ("unfused", "fused"))
        label = f"pipeline call ({args.steps} steps, CFG)" if what == "pipeline" else "UNet forward (CFG batch)"
        print(f"| {label} | {u:.4f} | {f:.4f} | {u / f:.2f}× |")


if __name__ == "__main__":
    main()
