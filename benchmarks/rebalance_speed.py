"""``rebalance`` against a plain diffusers loop, and what its new sampling defaults change.

(a) Speed, mid-size SD-shaped pipeline (``speed_common.build_mid``, random weights) with a rank-8 LoRA on
its attention layers, 128², CPU, the same scheduler (the base's PNDM) and steps for both contenders, the
same slots and seeds (``--slots`` missing images, ``--tries`` tries each: random weights draw no skin, so
nearly every try is rejected and both do the same renders and checks):
  - plain loop: one pipeline call per image, the adapter unfused (diffusers' LoRA layers), the check
    (blank, ITA tone, lesion) after each image in the same process, an accepted image saved as PNG;
  - ``rebalance``: the adapter fused for the run, ``--batch`` slots per call, checks in one CPU worker
    process while the next batch renders.
  Time per accepted image = time / accepted; with equal renders and acceptances its ratio is the ratio of
  the times (an odd borderline image of random weights can be judged differently by the fused and unfused
  numerics, so the table gives time per render too). Also: ``rebalance`` at its new defaults (auto scheduler, 25 steps).
(b) The step change on ``tiny`` (guidance 2.0, 32 px, 6 prompts × ``--seeds`` seeds): tone fidelity (share
  in the prompted ITA group, share with a lesion) and FID against real synthetic images (tiny-dinov2,
  random weights: only comparable within this table) of the plain loop's 50 steps with the base's
  scheduler, the old ``rebalance`` default (base's scheduler, 30 steps) and the new one (auto, 25 steps).

    PYTHONPATH=. python benchmarks/rebalance_speed.py [--slots 4] [--tries 1] [--steps 50] [--batch 4]
        [--seeds 3] [--threads 1] [--write-readme]

``--write-readme`` puts the printed tables into benchmarks/README.md between the rebalance_speed markers.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import speed_common as sc  # noqa: E402
import torch  # noqa: E402

PROMPT_TARGET = ("malignant", "2"), ("benign", "1")  # the groups given missing images


def make_adapter(base: Path, folder: Path) -> Path:
    from peft import LoraConfig

    from dermdiff_lora.adapters import lora
    from dermdiff_lora.core.models import load_parts

    unet = load_parts(str(base)).unet
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=8, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights=False))
    lora.save_adapter(folder, unet, meta={"base_model": str(base)})
    return folder


def plain_loop(pipe, jobs, tries: int, steps: int, size: int, out: Path, seed: int = 0) -> tuple[float, int, int]:
    """(seconds, renders, accepted): one call per image, check after each, accepted saved."""
    from dermdiff_lora.generation.grid import save_png
    from dermdiff_lora.tone.rebalance import judge
    from dermdiff_lora.tone.skintone import get_scheme

    scheme, renders, accepted = get_scheme("paper"), 0, 0
    start = time.perf_counter()
    for job in jobs:
        for attempt in range(tries):
            seed = job.seed(seed) + attempt
            image = pipe(job.prompt, num_inference_steps=steps, guidance_scale=7.5, height=size, width=size,
                         generator=torch.Generator().manual_seed(seed)).images[0]
            renders += 1
            if judge(image, job.wanted, scheme)[0] is None:
                save_png(image, out / f"{job.name}.png", {"seed": str(seed)})
                accepted += 1
                break
    return time.perf_counter() - start, renders, accepted


def ours_pipeline(base: Path, adapter: Path, args, scheduler: str, steps: int):
    """(generate_fn, settings) of rebalance's pipeline: the adapter fused, ``scheduler``, batch size."""
    from dermdiff_lora.tone.rebalance import pipeline_generate_fn
    from dermdiff_lora.tone.rebalance_pipeline import auto_batch_size, load_render_pipeline

    pipe, settings = load_render_pipeline(str(base), [(str(adapter), 1.0)], scheduler=scheduler, dtype=args.dtype)
    pipe("warm-up", num_inference_steps=1, height=args.size, width=args.size)
    settings["batch_size"] = auto_batch_size(pipe, args.size, 7.5) if args.batch == "auto" else int(args.batch)
    return pipeline_generate_fn(pipe, steps=steps, guidance_scale=7.5, height=args.size, width=args.size), settings


def run_ours(gen, data: Path, out: Path, args, batch: int, seed: int = 0):
    """(seconds of the whole ``rebalance`` call, its report)."""
    from dermdiff_lora.tone.rebalance import rebalance

    start = time.perf_counter()
    report = rebalance(data, out, gen, target=args.target, max_tries=args.tries, batch_size=batch, seed=seed,
                       workers=args.workers, progress=False)
    return time.perf_counter() - start, report


def speed(args, root: Path) -> list[str]:
    args.size, args.dtype = sc.MID_RESOLUTION, "fp32"
    base = sc.build_mid(root / "mid")
    return [f"mid-size SD-shaped pipeline (UNet 80/160/320/320, LoRA r8 on attention), {args.size}², CPU, "
            f"{torch.get_num_threads()} torch thread(s), guidance 7.5, {args.rounds} rounds (contenders in turn) of "
            f"{args.slots} slots x {args.tries} tries "
            "(random weights: both make the same renders and checks; the check accepts only the odd borderline "
            "image, which fused and unfused numerics can judge differently, so compare time per render)", "",
            *compare(base, root, args)]


def compare(base: Path, root: Path, args) -> list[str]:
    """The plain loop and ``rebalance`` on the same slots of ``base`` with a LoRA: a markdown table."""
    from dermdiff_lora.adapters.apply import attach
    from dermdiff_lora.core.models import load_pipeline
    from dermdiff_lora.tone.rebalance import plan_run

    adapter = make_adapter(base, root / "adapter")
    data = sc.make_data(root / "data", 12, 32)
    rows = plan_run(data, target={}).rows
    have = {k: sum((r["benign_malignant"], r["skin_tone"]) == k for r in rows) for k in PROMPT_TARGET}
    args.target = {k: have[k] + n for k, n in zip(PROMPT_TARGET, (args.slots // 2, args.slots - args.slots // 2))}
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    plain = load_pipeline(str(base), torch_dtype=dtype).to("cuda" if torch.cuda.is_available() else "cpu")
    attach(plain, [(adapter, 1.0)], base_label=str(base))
    plain.set_progress_bar_config(disable=True)
    plain("warm-up", num_inference_steps=1, height=args.size, width=args.size)
    gen, settings = ours_pipeline(base, adapter, args, "default", args.steps)
    ref_s = loop_s = total_s = 0.0
    ref_n = ref_ok = n = ok = 0
    for r in range(args.rounds):  # same slots and seeds per round (seed r), in turn, alternating who goes first
        jobs = plan_run(data, target=args.target, max_tries=args.tries, seed=r).jobs()
        for who in (("plain", "ours") if r % 2 == 0 else ("ours", "plain")):
            if who == "plain":
                t, renders, accepted = plain_loop(plain, jobs, args.tries, args.steps, args.size, root / "plain", r)
                ref_s, ref_n, ref_ok = ref_s + t, ref_n + renders, ref_ok + accepted
            else:
                t, report = run_ours(gen, data, root / f"ours{r}", args, settings["batch_size"], r)
                total_s, loop_s = total_s + t, loop_s + report.speed["seconds"]
                n, ok = n + report.speed["renders"], ok + report.speed["accepted"]
    del plain
    per = lambda s, n, ok: f"{s / n:.2f} s per render" + (f", {s / ok:.2f} s per accepted image" if ok else "")  # noqa: E731
    lines = ["| contender | scheduler, steps | renders | accepted | seconds | per image | vs plain loop |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             f"| plain diffusers loop (1 call per image, unfused, check after each) | {plain_sampler(base)}, "
             f"{args.steps} | {ref_n} | {ref_ok} | {ref_s:.1f} | {per(ref_s, ref_n, ref_ok)} | 1.00× |",
             f"| rebalance (fused, batch {settings['batch_size']}, {args.workers} check workers): render+check loop "
             f"| {settings['sampler']}, {args.steps} | {n} | {ok} | {loop_s:.1f} | {per(loop_s, n, ok)} | "
             f"**{loop_s / ref_s:.2f}×** |",
             f"| the same, whole call (worker start, real rows, merge, report) | {settings['sampler']}, {args.steps} "
             f"| {n} | {ok} | {total_s:.1f} | {per(total_s, n, ok)} | {total_s / ref_s:.2f}× |"]
    if getattr(args, "new_defaults", 0):  # steps of the auto scheduler
        steps = args.new_defaults
        gen, new_settings = ours_pipeline(base, adapter, args, "auto", steps)
        _, new = run_ours(gen, data, root / "ours_new", args, new_settings["batch_size"])
        lines.append(f"| rebalance at its new defaults (auto), render+check loop | {new_settings['sampler']}, {steps} "
                     f"| {new.speed['renders']} | {new.speed['accepted']} | {new.speed['seconds']:.1f} | "
                     f"{per(new.speed['seconds'], new.speed['renders'], new.speed['accepted'])} | "
                     f"{new.speed['seconds'] / ref_s:.2f}× |")
    return lines


def gpu_variant(base: Path, root: Path, *, smoke: bool = False) -> list[str]:
    """The comparison on a full-size base on the GPU (``smoke``: the toy base on the CPU, 2 slots, 2 steps):
    fp16, 16 slots, 50 steps, batch size from the memory model, 2 check workers; then the new defaults."""
    args = argparse.Namespace(slots=2 if smoke else 16, tries=1, rounds=1, steps=2 if smoke else 50, batch="auto",
                              workers=0 if smoke else 2, size=32 if smoke else 512,
                              dtype="fp32" if smoke else "fp16", new_defaults=2 if smoke else 25)
    root.mkdir(parents=True, exist_ok=True)
    return [f"rebalance vs a plain diffusers loop: {base.name}, {args.size}², {args.dtype}, LoRA r8 on attention, "
            f"{args.slots} slots x 1 try, guidance 7.5", "", *compare(base, root, args)]


def plain_sampler(base: Path) -> str:
    import json

    return json.loads((base / "scheduler" / "scheduler_config.json").read_text())["_class_name"]


def step_change(args, root: Path) -> list[str]:
    import numpy as np

    from dermdiff_lora.core.models import load_pipeline
    from dermdiff_lora.core.prompts import DEFAULT_TEMPLATE, DEFAULT_VALUE_MAPS, PromptBuilder
    from dermdiff_lora.eval.features import extract, tiny_dinov2
    from dermdiff_lora.eval.fid import fid_from_features
    from dermdiff_lora.generation.schedulers import set_scheduler
    from dermdiff_lora.tone import fidelity
    from dermdiff_lora.tone.synthetic import make_dataset

    builder = PromptBuilder(DEFAULT_TEMPLATE, DEFAULT_VALUE_MAPS)
    seeds = list(range(1000, 1000 + args.seeds))
    real_dir = make_dataset(root / "real", n=6 * args.seeds, size=32, seed=7)
    from PIL import Image

    real = [Image.open(p).convert("RGB") for p in sorted(real_dir.glob("*.png"))]
    extractor = tiny_dinov2()
    real_features = extract(extractor, real)
    lines = [f"tiny, 32 px, guidance 2.0, 6 prompts x {args.seeds} seeds (1000...), FID: tiny-dinov2 (random "
             f"weights) against {len(real)} real synthetic images; in group: ITA border estimate, paper scheme",
             "", "| sampling | in prompted tone group | lesion found | FID | mean abs. pixel difference to 50 steps | "
             "s per image |", "| --- | --- | --- | --- | --- | --- |"]
    reference = None
    for label, scheduler, steps in (("plain loop: base's scheduler, 50 steps", "default", 50),
                                    ("old rebalance default: base's scheduler, 30 steps", "default", 30),
                                    ("new rebalance default: auto, 25 steps", "auto", 25)):
        pipe = load_pipeline("tiny")
        sampler = set_scheduler(pipe, scheduler)
        start = time.perf_counter()
        samples = fidelity.generate_samples(pipe, builder, seeds, steps=steps, guidance_scale=2.0, size=32)
        seconds = (time.perf_counter() - start) / len(samples)
        in_group = sum(s.category == s.words["skin_tone"] for s in samples) / len(samples)
        lesion = sum(s.lesion_fraction >= fidelity.LESION_MIN_FRACTION for s in samples) / len(samples)
        fid = fid_from_features(real_features, extract(extractor, [s.image for s in samples]))
        pixels = np.stack([np.asarray(s.image.convert("RGB"), dtype=np.float32) for s in samples])
        reference = pixels if reference is None else reference
        lines.append(f"| {label} ({sampler}) | {in_group:.0%} | {lesion:.0%} | {fid:.3f} | "
                     f"{np.abs(pixels - reference).mean():.2f} of 255 | {seconds:.3f} |")
    return lines


def write_readme(part: str, text: str) -> None:
    """Replace the README's block of ``part`` (speed, steps) with ``text``."""
    path = Path(__file__).parent / "README.md"
    start, end = f"<!-- rebalance_speed {part}: written by benchmarks/rebalance_speed.py -->", "<!-- /rebalance_speed -->"
    block = f"{start}\n{text}\n{end}"
    readme = path.read_text()
    pattern = re.escape(start) + ".*?" + re.escape(end)
    readme = re.sub(pattern, lambda _: block, readme, flags=re.S) if start in readme else readme + "\n" + block + "\n"
    path.write_text(readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--tries", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of --slots, contenders in turn")
    parser.add_argument("--skip-steps", action="store_true", help="only part (a)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", default="4", help="images per call, or auto (the memory model; GPU)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)
    sc.setup_process(args.threads)
    root = sc.workdir()
    with tempfile.TemporaryDirectory(dir=root):
        for part, run, skip in (("speed", speed, args.skip_speed), ("steps", step_change, args.skip_steps)):
            if not skip:
                text = "\n".join(run(args, root))
                print(text + "\n", flush=True)
                if args.write_readme:
                    write_readme(part, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
