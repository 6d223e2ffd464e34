"""Adapter file size for rank 4/8/16 on the full-size SD v1-4 UNet architecture vs the UNet itself.

The UNet is built from SD v1-4's config (no download). By default it is built on the meta device (shapes
only): the LoRA tensors are real (zeros of the right shapes) and written by the package's own writer, so
the sizes are those of real files. ``--materialize`` builds the UNet with random weights instead and goes
through peft + ``lora.save_adapter`` (the training path), to check that both agree.

    PYTHONPATH=. python benchmarks/adapter_size.py [--materialize]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

SD14_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
TARGETS = {"attention (to_q,to_k,to_v,to_out.0)": ["to_q", "to_k", "to_v", "to_out.0"],
           "broad (+ff, proj_in/out, resnet convs, time_emb_proj)":
               ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out",
                "conv1", "conv2", "conv_shortcut", "time_emb_proj"]}


def build_unet(materialize: bool):
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    if materialize:
        torch.manual_seed(0)
        return UNet2DConditionModel(**SD14_UNET)
    with init_empty_weights():
        return UNet2DConditionModel(**SD14_UNET)


def adapter_bytes(unet, targets: list[str], rank: int, materialize: bool, folder: Path) -> tuple[int, int]:
    """(file size, LoRA parameters) of a rank-``rank`` adapter on ``targets``."""
    if materialize:
        from peft import LoraConfig
        from safetensors import safe_open

        from dermdiff_lora.adapters import lora

        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets))
        file = lora.save_adapter(folder, unet, meta={"base_model": "sd-v1-4-architecture"})
        unet.delete_adapters("default")

        with safe_open(str(file), "pt") as f:
            params = sum(torch.Size(f.get_slice(k).get_shape()).numel() for k in f.keys())
        return file.stat().st_size, params
    from dermdiff_lora.adapters import io
    from dermdiff_lora.adapters.layers import Adapter, Layer, derived_meta

    layers = {}
    for name, module in unet.named_modules():
        if any(name == t or name.endswith("." + t) for t in targets):
            shape = tuple(module.weight.shape)
            kernel = (1,) * (len(shape) - 2)
            layers[f"unet.{name}"] = Layer(torch.zeros(rank, *shape[1:]), torch.zeros(shape[0], rank, *kernel),
                                           float(rank))
    meta = derived_meta(layers, {"base_model": "sd-v1-4-architecture"})
    file = io.save(Adapter(layers, meta), folder / f"r{rank}", overwrite=True)
    return file.stat().st_size, Adapter(layers).parameters()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--materialize", action="store_true", help="random weights + peft (slow, ~3.5 GB RAM)")
    args = parser.parse_args()
    unet = build_unet(args.materialize)
    unet_params = sum(p.numel() for p in unet.parameters())
    unet_bytes = unet_params * 4
    print(f"SD v1-4 UNet architecture ({'random weights' if args.materialize else 'meta device'}): "
          f"{unet_params / 1e6:.2f} M parameters = {unet_bytes / 1e9:.3f} GB in fp32")
    print("| targets | rank | LoRA parameters | file (fp32) | share of the UNet | UNet / adapter |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, targets in TARGETS.items():
            for rank in (4, 8, 16):
                size, params = adapter_bytes(unet, targets, rank, args.materialize, Path(tmp) / f"{rank}")
                print(f"| {label} | {rank} | {params / 1e6:.3f} M | {size / 1e6:.2f} MB | "
                      f"{size / unet_bytes:.3%} | {unet_bytes / size:,.0f}× |")


if __name__ == "__main__":
    main()
