"""The oneDNN bf16 strided-convolution work-around (training/cpu_bf16.py): weight gradients of a 1-pixel-wide
input match an fp64 reference, and only the CPU under bf16 is patched."""

import pytest
import torch

from dermdiff_lora.training.cpu_bf16 import guard_strided_convs


def _weight_grad(conv, x):
    conv.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    y.float().sum().backward()
    return conv.weight.grad


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (1, 2)])
def test_guarded_conv_gradients_match_fp64(threads, shape):
    """Unguarded, ~4 in 10 of these trials give NaN/inf/1e16 gradients on this torch (watched fail)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(32, 32, 3, stride=2, padding=1))
        assert guard_strided_convs([model], "cpu", "bf16") == 1
        conv = model[0]
        reference = torch.nn.Conv2d(32, 32, 3, stride=2, padding=1).double()
        for _ in range(40):
            with torch.no_grad():
                for p, q in zip(conv.parameters(), reference.parameters()):
                    p.copy_(torch.randn(p.shape, generator=gen))
                    q.copy_(p)
            x = torch.randn(1, 32, *shape, generator=gen)
            got = _weight_grad(conv, x)
            reference.zero_grad(set_to_none=True)
            reference(x.double()).sum().backward()
            assert torch.allclose(got.double(), reference.weight.grad, rtol=0, atol=1e-4)
    finally:
        torch.set_num_threads(old)


def test_wider_inputs_keep_the_bf16_path_and_other_settings_are_not_patched():
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1))
    assert guard_strided_convs([model], "cuda", "bf16") == 0
    assert guard_strided_convs([model], "cpu", "fp16") == 0
    assert guard_strided_convs([model], "cpu", "bf16") == 1  # the strided one only
    assert guard_strided_convs([model], "cpu", "bf16") == 0  # not twice
    bf16_base = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.GroupNorm(4, 8))
    guard_strided_convs([bf16_base.to(torch.bfloat16)], "cpu", "bf16")  # a LoRA run's frozen base
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model[0](torch.randn(1, 8, 4, 4)).dtype == torch.bfloat16
        assert model[0](torch.randn(1, 8, 1, 1)).dtype == torch.bfloat16  # computed in fp32, returned as bf16
        assert bf16_base(torch.randn(1, 8, 1, 1)).dtype == torch.bfloat16
