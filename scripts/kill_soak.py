"""kill -9 soak: `dermdiff-lora train` is SIGKILLed again and again and resumed with train.resume=latest;
the final weights must equal an uninterrupted run's bit for bit (CPU, one thread).

Kills come first at the named crash points (``core.killpoints``: during the latent-cache write, inside a
checkpoint save before its state file, during checkpoint pruning, between the adapter and summary.json),
then at random moments. After every kill the run folder is checked: no half-written summary, adapter,
checkpoint or cache file is ever taken as complete. Every run that got as far as saying where it started
(``resumed_from=`` in its log, and in the final ``summary.json``) must have resumed from the latest complete
checkpoint: a run that ignored the checkpoints and started over would end with the same weights on the CPU.

    PYTHONPATH=. .venv/bin/python scripts/kill_soak.py --mode lora --kills 50 --out outputs/soak
    PYTHONPATH=. .venv/bin/python scripts/kill_soak.py --mode full --kills 50 --out outputs/soak
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

MODES = {  # overrides on top of the shared tiny recipe below
    "lora": ["train.mode=lora", "lora.rank=4", "lora.alpha=4", "lora.dropout=0.1"],
    "full": ["train.mode=full", "train.ema_decay=0.9", "optim.name=adamw8bit", "optim.min_8bit_size=64"],
}
COMMON = ["model.base=tiny-random", "data.file_column=image_name", "data.resolution=32", "train.batch_size=2",
          "train.gradient_accumulation=2", "train.checkpoint_every=2", "train.keep_checkpoints=2",
          "optim.lr=1e-3", "logging.tensorboard=false", "logging.progress=false", "validation.at_end=false",
          "prompts.caption_dropout=0.2"]
NAMED = ("cache.writing", "checkpoint.before_state_file", "checkpoint.pruning", "train.before_summary")
WEIGHTS = {"lora": "pytorch_lora_weights.safetensors", "full": "unet/diffusion_pytorch_model.safetensors"}


def command(data: Path, out: Path, mode: str, steps: int) -> list[str]:
    return [sys.executable, "-m", "dermdiff_lora.cli", "train", "demo", f"data.dir={data}", f"output.dir={out}",
            f"train.max_steps={steps}", "train.resume=latest", *COMMON, *MODES[mode]]


def environment(cache: Path, kill_at: str | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "DERMDIFF_CACHE": str(cache), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("DERMDIFF_KILL_AT", None)
    if kill_at:
        env["DERMDIFF_KILL_AT"] = kill_at
    return env


def check_folder(out: Path, mode: str) -> None:
    """What a later command would read is complete: summary JSON, adapter/pipeline, latest checkpoint."""
    from safetensors import safe_open

    from dermdiff_lora.training.checkpoint import STATE_FILE, list_checkpoints

    if (out / "summary.json").exists():
        json.loads((out / "summary.json").read_text())
    if (out / WEIGHTS[mode]).exists():
        with safe_open(str(out / WEIGHTS[mode]), "pt") as f:
            list(f.keys())
    for folder in list_checkpoints(out):
        json.loads((folder / STATE_FILE).read_text())


def latest_step(out: Path) -> int | None:
    """The step of the newest complete checkpoint in ``out`` (None: none), what train.resume=latest must take."""
    from dermdiff_lora.training.checkpoint import list_checkpoints

    found = list_checkpoints(out)
    return int(found[-1].name.removeprefix("step-")) if found else None


def logged_resume(err: str) -> int | None | str:
    """The ``resumed_from`` a run logged (``"absent"`` when killed before it said)."""
    lines = [line for line in err.splitlines() if line.startswith("resumed_from=")]
    if not lines:
        return "absent"
    value = lines[-1].split(":", 1)[0].removeprefix("resumed_from=")
    return None if value == "null" else int(value)


def run_once(cmd: list[str], env: dict[str, str], kill_after: float | None) -> tuple[int, str]:
    """Run to the end, to a kill point, or until SIGKILLed after ``kill_after`` seconds."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def soak(data: Path, root: Path, mode: str, kills: int, *, steps: int = 12, seed: int = 0,
         named: tuple[str, ...] = NAMED, window: tuple[float, float] = (2.0, 9.0)) -> dict:
    """Reference run, then the killed-and-resumed one; returns the figures (and raises on a difference)."""
    from safetensors.torch import load_file

    cache, rng = root / "cache", random.Random(seed)
    reference, soaked = root / "reference", root / "soaked"
    for folder in (reference, soaked):
        shutil.rmtree(folder, ignore_errors=True)
    code, err = run_once(command(data, reference, mode, steps), environment(cache), None)
    if code != 0:
        raise RuntimeError(f"reference run failed ({code}): {err[-2000:]}")
    shutil.rmtree(cache / "latents", ignore_errors=True)  # the soak builds (and is killed in) its own cache
    hit, done, runs, resumes = [], 0, 0, []  # resumes: (latest checkpoint before the run, what it logged)
    while done < kills:
        point = named[done] if done < len(named) else None
        expected = latest_step(soaked)
        code, err = run_once(command(data, soaked, mode, steps), environment(cache, point),
                             None if point else rng.uniform(*window))
        runs += 1
        if (said := logged_resume(err)) != "absent":
            resumes.append((expected, said))
        if code == 0:  # finished before the kill: start the soak's run over so every kill lands in a live run
            shutil.rmtree(soaked)
            continue
        if code != -9:
            raise RuntimeError(f"run {runs} failed ({code}) instead of being killed: {err[-2000:]}")
        hit += [line.split()[1] for line in err.splitlines() if line.startswith("killpoint ")]
        check_folder(soaked, mode)
        done += 1
    expected = latest_step(soaked)
    code, err = run_once(command(data, soaked, mode, steps), environment(cache), None)
    if code != 0:
        raise RuntimeError(f"final resume failed ({code}): {err[-2000:]}")
    final = json.loads((soaked / "summary.json").read_text())["resumed_from"]
    resumes.append((expected, logged_resume(err)))
    a, b = load_file(str(reference / WEIGHTS[mode])), load_file(str(soaked / WEIGHTS[mode]))
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    return {"mode": mode, "kills": done, "runs": runs + 1, "named_points_hit": hit, "steps": steps,
            "tensors": len(a), "same_keys": sorted(a) == sorted(b), "max_abs_weight_difference": diff,
            "final_resumed_from": final, "final_expected_resumed_from": expected,
            "resumes_checked": len(resumes), "resumed_from_a_checkpoint": sum(e is not None for e, _ in resumes),
            "resume_mismatches": [(e, s) for e, s in resumes if e != s]}


def passed(result: dict) -> bool:
    """Same weights, and every run resumed where it had to (the final one from a checkpoint)."""
    return (result["max_abs_weight_difference"] == 0.0 and result["same_keys"] and not result["resume_mismatches"]
            and result["final_resumed_from"] == result["final_expected_resumed_from"] is not None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="lora")
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/soak")
    args = parser.parse_args(argv)
    from dermdiff_lora.tone.synthetic import make_dataset

    root = Path(args.out) / args.mode
    data = make_dataset(root / "data", n=16, size=32, seed=args.seed, overwrite=True)
    t0 = time.time()
    result = soak(data, root, args.mode, args.kills, steps=args.steps, seed=args.seed)
    result["minutes"] = round((time.time() - t0) / 60, 1)
    print(json.dumps(result, indent=2))
    return 0 if passed(result) else 1


if __name__ == "__main__":
    sys.exit(main())
