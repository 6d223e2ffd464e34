"""Work-around for a oneDNN bug in bf16 convolution gradients on the CPU.

torch 2.13.0 (CPU wheel, oneDNN v3.12) computes the *weight* gradient of a strided ``Conv2d`` from memory it
never wrote when the input is one pixel wide and autocast runs in bf16: NaN, inf or 1e16 at random, more often
with two threads. Minimal reproduction (about 4 in 10 trials fail on an AVX-512 EPYC; input gradients are right;
stride 1, fp32 and ``torch.backends.mkldnn.flags(enabled=False)`` are right)::

    conv = torch.nn.Conv2d(32, 32, 3, stride=2, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(torch.randn(1, 32, 1, 1))
    y.float().sum().backward()
    torch.isfinite(conv.weight.grad).all()   # False in ~40 % of runs

SD's UNet meets it when its deepest downsampler sees a 1-pixel-wide latent (SD v1-4's layout at 32 px).
``guard_strided_convs`` makes every strided convolution of the trained models compute such inputs in fp32,
outside autocast (the result cast to bf16, as autocast would return it); every other input takes the
usual bf16 path. It is applied only on the CPU under bf16.
"""

from __future__ import annotations

import functools


def guard_strided_convs(models, device_type: str, mixed_precision: str) -> int:
    """Patch the strided ``Conv2d`` layers of ``models`` (on the CPU under bf16); returns how many."""
    import torch

    if device_type != "cpu" or mixed_precision != "bf16":
        return 0
    patched = 0
    for model in models:
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and max(module.stride) > 1 and not _is_guarded(module):
                module._conv_forward = functools.partial(_fp32_when_one_wide, module._conv_forward)
                patched += 1
    return patched


def _is_guarded(module) -> bool:
    forward = module.__dict__.get("_conv_forward")
    return isinstance(forward, functools.partial) and forward.func is _fp32_when_one_wide


def _fp32_when_one_wide(conv_forward, x, weight, bias):
    import torch

    if min(x.shape[-2:]) > 1 or not torch.is_autocast_enabled("cpu"):
        return conv_forward(x, weight, bias)
    dtype = torch.get_autocast_dtype("cpu")  # the dtype the layers after it expect (a bf16 base's norms)
    with torch.autocast("cpu", enabled=False):
        return conv_forward(x.float(), weight.float(), None if bias is None else bias.float()).to(dtype)
