"""Loss and step switches against known answers: noise offset, min-SNR, caption dropout, clipping,
gradient accumulation."""

import pytest
import torch
from conftest import make_cfg
from safetensors.torch import load_file

from dermdiff_lora.adapters import lora
from dermdiff_lora.data.dataset import tokenize
from dermdiff_lora.training import train


def _setup(demo_data, tmp_path, *overrides):
    return train.setup(make_cfg(demo_data, tmp_path / "run", *overrides), resuming=False)


def _capture_add_noise(run) -> list:
    """(noise, timesteps) of each ``add_noise`` call of the run's scheduler."""
    sched, seen = run.parts.noise_scheduler, []
    real = sched.add_noise

    def add_noise(latents, noise, timesteps):
        seen.append((noise.clone(), timesteps.clone()))
        return real(latents, noise, timesteps)

    sched.add_noise = add_noise
    return seen


def test_noise_offset_adds_one_offset_per_sample_and_channel(tiny_base, demo_data, tmp_path):
    run = _setup(demo_data, tmp_path)
    seen = _capture_add_noise(run)
    batch = next(iter(train.make_loader(run, 0, 1)))
    with torch.no_grad():
        for offset in (0.0, 0.1, 0.2):
            run.cfg.train.noise_offset = offset
            train.training_loss(run, batch)
    (plain, t0), (small, _), (large, _) = seen
    shift = small - plain
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift))  # constant over each channel's pixels
    assert shift.abs().min() > 0 and torch.allclose(large - plain, 2 * shift, atol=1e-6)  # ∝ noise_offset
    run.accelerator.end_training()


def test_min_snr_weights_each_sample_by_its_timestep(tiny_base, demo_data, tmp_path):
    """Known answer: weight = min(SNR, γ) / SNR with SNR = ᾱ / (1 - ᾱ) of SD's scaled-linear betas."""
    run = _setup(demo_data, tmp_path, "train.batch_size=1")
    seen = _capture_add_noise(run)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alpha_bar = torch.cumprod(1 - betas, 0)
    gamma, ratios, expected = 0.1, [], []
    with torch.no_grad():
        for batch in train.make_loader(run, 0, 6):
            run.cfg.train.snr_gamma = None
            plain = train.training_loss(run, batch).item()
            run.cfg.train.snr_gamma = gamma
            ratios.append(train.training_loss(run, batch).item() / plain)
            snr = (alpha_bar / (1 - alpha_bar))[seen[-1][1]].item()
            expected.append(min(snr, gamma) / snr)
    assert ratios == pytest.approx(expected, rel=1e-5)
    assert min(expected) < 0.9 and max(expected) == 1.0, [t.item() for _, t in seen]  # bites on some only
    run.accelerator.end_training()


@pytest.mark.parametrize("cache", ["on", "off"])
def test_dropped_captions_get_the_empty_prompt(cache, tiny_base, demo_data, tmp_path):
    run = _setup(demo_data, tmp_path, f"speed.cache_latents={cache}")
    batch = next(iter(train.make_loader(run, 0, 1)))
    te = run.parts.text_encoder.to("cpu", torch.float32)
    with torch.no_grad():
        empty = te(tokenize(run.parts.tokenizer, "").unsqueeze(0), return_dict=False)[0]
        dropped = train._text_embeddings(run, batch, torch.tensor([True, False]))
        kept = train._text_embeddings(run, batch, torch.tensor([False, False]))
    assert torch.allclose(dropped[0], empty[0], atol=1e-5) and torch.equal(dropped[1], kept[1])
    assert not torch.allclose(kept[0], empty[0], atol=1e-3)
    run.accelerator.end_training()


def test_gradients_are_clipped_to_max_grad_norm(tiny_base, demo_data, tmp_path):
    norms = {}
    for limit in (None, 0.01):
        run = _setup(demo_data, tmp_path / str(limit), "train.mode=full",
                     f"train.max_grad_norm={'null' if limit is None else limit}")
        inner, seen = run.optimizer.optimizer, []
        real = inner.step

        def step(*args, seen=seen, real=real, params=run.params, **kwargs):
            seen.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item())
            return real(*args, **kwargs)

        inner.step = step
        train.micro_step(run, next(iter(train.make_loader(run, 0, 1))))
        norms[limit] = seen[0]
        run.accelerator.end_training()
    assert norms[None] > 0.1 and norms[0.01] == pytest.approx(0.01, rel=1e-3)


def test_accumulating_two_batches_of_one_equals_one_batch_of_two(tiny_base, demo_data, tmp_path):
    """Step s takes stream positions 2s, 2s+1 either way: the same samples, the same mean loss."""
    weights = {}
    for name, batch, accum in (("b2", 2, 1), ("b1x2", 1, 2), ("b1", 1, 1)):
        train.train(make_cfg(demo_data, tmp_path / name, f"train.batch_size={batch}",
                             f"train.gradient_accumulation={accum}", "train.max_steps=2"))
        weights[name] = load_file(tmp_path / name / lora.WEIGHT_NAME)

    def gap(a, b):
        return max((weights[a][k] - weights[b][k]).abs().max().item() for k in weights[a])

    assert gap("b1x2", "b2") < 1e-6 and gap("b1", "b2") > 1e-4
