"""Our training step vs a plain reference loop, side by side in one process, on the CPU.

The reference is written like diffusers' ``examples/text_to_image/train_text_to_image.py``: VAE encode
and text encoder every step, ``latent_dist.sample()``, torch AdamW with its defaults, EMA (full),
gradient clipping, no caching; for LoRA ``train_text_to_image_lora.py``. Ours is ``train.setup`` + the
loop body of ``train.train`` with the package defaults (latent cache, SDPA, fused AdamW, foreach EMA),
plus variants that switch one speed option. Same model, same images, same batch, fp32 (or all under bf16
autocast with ``--precision bf16``, the frozen parts cast to bf16 as the example does); full UNet + EMA
and LoRA r16 on the attention projections. Variants run in turn, repeatedly (so machine load hits
all alike); each figure is the median seconds per step.

Two models: the tiny-random one (32²) and a mid-size SD-architecture one whose VAE share of the FLOPs
at 128² (33 %) is the full-size model's at 512² (32 %).

    PYTHONPATH=. python benchmarks/step_vs_reference.py [--repeats 5] [--steps 3] [--threads 1] [--precision bf16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import speed_common as sc  # noqa: E402
import torch  # noqa: E402

VARIANTS = {  # mode → label → config overrides on top of the package defaults
    "full": {"ours (defaults)": [], "ours, no latent cache": ["speed.cache_latents=off"],
             "ours + channels_last": ["speed.channels_last=true"]},
    "lora": {"ours (defaults)": [], "ours, no latent cache": ["speed.cache_latents=off"]},
}
REFERENCE = "reference (diffusers example)"


class Reference:
    """The diffusers examples' training step (``train_text_to_image.py`` for full + EMA,
    ``train_text_to_image_lora.py`` for LoRA) on the same parts and batches as ours."""

    def __init__(self, cfg):
        import torch.nn.functional as F  # noqa: N812
        from accelerate import Accelerator
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        from dermdiff_lora.adapters import lora
        from dermdiff_lora.core import models

        self.F, self.cfg = F, cfg
        self.parts = p = models.load_parts(cfg.model.base)
        precision = cfg.train.mixed_precision
        self.acc = Accelerator(gradient_accumulation_steps=1, mixed_precision=precision, cpu=True)
        p.vae.requires_grad_(False)
        p.text_encoder.requires_grad_(False)
        if precision != "no":  # the example casts the frozen parts to the weight dtype
            dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
            p.vae.to(dtype)
            p.text_encoder.to(dtype)
        self.ema = None
        if cfg.train.mode == "full":
            p.unet.train()
            self.ema = EMAModel(p.unet.parameters(), model_cls=type(p.unet), model_config=p.unet.config)
        else:
            p.unet.requires_grad_(False)
            lc = cfg.lora
            p.unet.add_adapter(lora.peft_config(lc.rank, lc.alpha, lc.target_modules))
        self.params = [q for q in p.unet.parameters() if q.requires_grad]
        o = cfg.optim
        optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=tuple(o.betas),
                                      weight_decay=o.weight_decay, eps=o.eps)
        scheduler = get_scheduler("constant", optimizer=optimizer)
        self.unet, self.optimizer, self.scheduler = self.acc.prepare(p.unet, optimizer, scheduler)

    def step(self, batch) -> float:
        p, acc, F = self.parts, self.acc, self.F
        with acc.accumulate(self.unet):
            pixels = batch["pixel_values"].to(p.vae.dtype)
            latents = p.vae.encode(pixels).latent_dist.sample() * p.vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, p.noise_scheduler.config.num_train_timesteps, (latents.shape[0],))
            noisy_latents = p.noise_scheduler.add_noise(latents, noise, timesteps.long())
            encoder_hidden_states = p.text_encoder(batch["input_ids"], return_dict=False)[0]
            model_pred = self.unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
            loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(self.params, self.cfg.train.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        if acc.sync_gradients and self.ema is not None:
            self.ema.step(self.unet.parameters())
        return loss.item()


def contenders(cfg_for, mode: str) -> dict:
    """label → (step function, batch iterator); each loads its own data as a real run would."""
    from dermdiff_lora.core import prompts
    from dermdiff_lora.data import dataset as data
    from dermdiff_lora.training import train

    out = {}
    for label, overrides in VARIANTS[mode].items():
        run = train.setup(cfg_for(label, overrides), resuming=False)
        out[label] = (lambda b, run=run: sc.train_step(run, b), iter(train.make_loader(run, 0, 10**6)))
    cfg = cfg_for("reference", ["speed.cache_latents=off"])
    ref = Reference(cfg)
    index = data.index_dataset(cfg.data, prompts.from_config(cfg.prompts))
    dataset = data.ImageCaptionDataset(index, cfg.data, ref.parts.tokenizer)
    ref_run = train.Run(cfg, ref.acc, ref.parts, None, index, dataset, [])
    out[REFERENCE] = (ref.step, iter(train.make_loader(ref_run, 0, 10**6)))
    return out


def time_side_by_side(runners: dict, repeats: int, steps: int) -> dict[str, float]:
    """Median seconds per step of each contender; contenders alternate, including their data loading."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    for fn, batches in runners.values():  # warm-up: caches built, optimizer states allocated
        fn(next(batches))
    for _ in range(repeats):
        for label, (fn, batches) in runners.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn(next(batches))
            times[label].append((time.perf_counter() - start) / steps)
    return {k: statistics.median(v) for k, v in times.items()}


def bench(name: str, base: str, data_dir: Path, resolution: int, batch: int, root: Path, args) -> None:
    for mode in ("full", "lora"):
        def cfg_for(label, overrides, mode=mode):
            return sc.make_cfg(data_dir, root / "runs" / name / mode / label.replace(" ", "_"),
                               f"model.base={base}", f"data.resolution={resolution}",
                               f"train.batch_size={batch}", f"train.mode={mode}", "optim.lr=1e-5",
                               "lora.rank=16", "lora.alpha=16", f"train.mixed_precision={args.precision}",
                               *overrides)

        t0 = time.time()
        result = time_side_by_side(contenders(cfg_for, mode), args.repeats, args.steps)
        ref = result[REFERENCE]
        what = "full UNet + EMA" if mode == "full" else "LoRA r16 (attention)"
        precision = "fp32" if args.precision == "no" else "bf16 autocast"
        print(f"\n{name}: {resolution}², batch {batch}, {what}, AdamW, {precision} ({time.time() - t0:.0f} s)")
        for label, sec in result.items():
            print(f"  {label:<32}{sec:8.3f} s/step   {sec / ref:5.2f}× reference", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed block")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--only", choices=("tiny", "mid"), default=None)
    parser.add_argument("--precision", choices=("no", "bf16"), default="no",
                        help="mixed precision of every contender (one per process: accelerate's state is global)")
    args = parser.parse_args()
    sc.setup_process(args.threads)
    root = sc.workdir()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if args.only in (None, "tiny"):
        bench("tiny-random", "tiny-random", sc.make_data(root / "data32", 16, 32), 32, 4, root, args)
    if args.only in (None, "mid"):
        mid = sc.build_mid(root / "mid")
        bench("mid-size", str(mid), sc.make_data(root / "data128", 16, sc.MID_RESOLUTION),
              sc.MID_RESOLUTION, 2, root, args)


if __name__ == "__main__":
    main()
