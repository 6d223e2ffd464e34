"""Train mode in every training mode: LoRA dropout and gradient checkpointing really act, grids render in eval."""

import pytest
import torch
from conftest import count_forwards, make_cfg

from dermdiff_lora.training import train

MODES = {"lora": [], "lora+text_encoder": ["lora.text_encoder=true"], "full": ["train.mode=full"]}


@pytest.mark.parametrize("overrides", MODES.values(), ids=MODES.keys())
def test_trained_modules_train_with_dropout_and_checkpointing(overrides, tiny_base, demo_data, tmp_path):
    run = train.setup(make_cfg(demo_data, tmp_path / "m", "train.gradient_checkpointing=true", "lora.dropout=0.5",
                               *overrides), resuming=False)
    unwrap = run.accelerator.unwrap_model
    unet, text_encoder = unwrap(run.parts.unet), unwrap(run.parts.text_encoder)
    trains_text = len(run.trained) == 2
    assert trains_text == ("lora.text_encoder=true" in overrides)
    assert all(m.training for model in run.trained for m in unwrap(model).modules())
    assert text_encoder.training == trains_text and not run.parts.vae.training  # frozen parts stay in eval
    with torch.no_grad():  # lora_B starts at zero, where LoRA dropout changes nothing
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    # Checkpointing: a checkpointed block runs its forward again in the backward pass.
    counted = [count_forwards(unet.up_blocks[-1].resnets[-1].norm1)]
    if trains_text:
        counted.append(count_forwards(dict(text_encoder.named_modules())["encoder.layers.0.mlp"]))
    batch = next(iter(train.make_loader(run, 0, 1)))
    first = train.training_loss(run, batch)
    first.backward()
    assert [c[0] for c in counted] == [2] * len(counted)
    # Dropout: the same batch through the same weights gives another loss (LoRA dropout 0.5).
    with torch.no_grad():
        second = train.training_loss(run, batch)
    assert (first.item() != second.item()) == (run.cfg.train.mode == "lora")
    run.accelerator.end_training()


def test_validation_grid_renders_in_eval_mode(tiny_base, demo_data, tmp_path, monkeypatch):
    from dermdiff_lora.generation import generate

    run = train.setup(make_cfg(demo_data, tmp_path / "v", "lora.text_encoder=true", "lora.dropout=0.5"),
                      resuming=False)
    real, seen = generate.render_grid, []

    def render(pipe, *args, **kwargs):
        seen.append([m.training for m in (pipe.unet, pipe.text_encoder)])
        return real(pipe, *args, **kwargs)

    monkeypatch.setattr(generate, "render_grid", render)
    assert train.validate(run, 0).is_file()
    assert seen == [[False, False]]  # no LoRA dropout in a grid
    assert all(run.accelerator.unwrap_model(m).training for m in run.trained)  # and train mode after
    run.accelerator.end_training()
