"""Run folders and checkpoints: where things go, resume from the latest, keep the last K.

Checkpoints are accelerate states (optimizer, LR schedule, RNG, EMA) in ``checkpoints/step-NNNNNN``;
in LoRA mode they hold only the adapter, not the frozen base UNet.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..core import killpoints
from ..core.errors import ConfigError
from ..core.fsutil import atomic_write, disk_errors

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
SUMMARY_FILE = "summary.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainState:
    """The loop's counters, saved as ``trainer_state.json`` in each checkpoint."""

    step: int = 0  # optimizer steps applied
    micro_step: int = 0  # micro-batches consumed: the sampler's position
    images_seen: int = 0
    loss: float | None = None  # mean loss of the last applied step
    skipped_steps: int = 0  # optimizer steps skipped for fp16 overflow
    skipped_in_a_row: int = 0

    @classmethod
    def from_json(cls, data: dict, accumulation: int) -> TrainState:
        """Read a saved state; older files have no skip counters and no ``micro_step`` (then step × accumulation)."""
        known = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in known})
        if "micro_step" not in data:
            state.micro_step = state.step * accumulation
        return state


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint folder to resume from: ``latest`` (None if there is none yet) or a path."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"train.resume: {path} is not a checkpoint folder (no {STATE_FILE}); "
                          f"use 'latest' or one of {run_dir / CHECKPOINTS}/step-*")
    return path


def prepare_run_dir(run_dir: Path, *, overwrite: bool, resuming: bool) -> None:
    """Refuse to clobber a finished run unless asked; create the folder."""
    run_dir = Path(run_dir)
    if (run_dir / SUMMARY_FILE).is_file() and not resuming:
        if not overwrite:
            raise ConfigError(f"output.dir {run_dir} already holds a finished run; pass output.overwrite=true "
                              "to replace it, train.resume=latest to continue it, or choose another folder")
        for name in (CHECKPOINTS, "validation", "logs", SUMMARY_FILE):
            target = run_dir / name
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)


def save(accelerator, run_dir: Path, state: TrainState, keep: int) -> Path:
    """Save the accelerate state + our counters, then prune to the last ``keep`` checkpoints."""
    folder = Path(run_dir) / CHECKPOINTS / f"step-{state.step:06d}"
    with disk_errors(folder.parent, "checkpoint"):
        (folder / STATE_FILE).unlink(missing_ok=True)  # an older save of this step is no longer complete
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            killpoints.reached("checkpoint.before_state_file")
            atomic_write(folder / STATE_FILE, json.dumps(dataclasses.asdict(state), indent=2))  # last: complete
    if accelerator.is_main_process:
        for old in list_checkpoints(run_dir)[:-keep]:
            (old / STATE_FILE).unlink()  # first: a half-deleted folder is never taken as a checkpoint
            killpoints.reached("checkpoint.pruning")
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder


def load(accelerator, folder: Path, accumulation: int) -> TrainState:
    """Restore the accelerate state of a checkpoint folder; return its counters."""
    accelerator.load_state(str(folder))
    return TrainState.from_json(json.loads((Path(folder) / STATE_FILE).read_text()), accumulation)


def register_lora_hooks(accelerator, unet, text_encoder) -> None:
    """Make accelerate checkpoints hold only the adapters (not the frozen base weights)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for name, model in (("unet", unet), ("text_encoder", text_encoder)):
                if model is not None and getattr(accelerator.unwrap_model(model), "peft_config", None):
                    state = get_peft_model_state_dict(accelerator.unwrap_model(model))
                    save_file({k: v.contiguous() for k, v in state.items()},
                              os.path.join(output_dir, f"{name}_lora.safetensors"))
        weights.clear()

    def load_hook(models, input_dir):
        models.clear()
        for name, model in (("unet", unet), ("text_encoder", text_encoder)):
            path = os.path.join(input_dir, f"{name}_lora.safetensors")
            if model is not None and os.path.isfile(path):
                set_peft_model_state_dict(accelerator.unwrap_model(model), load_file(path))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
