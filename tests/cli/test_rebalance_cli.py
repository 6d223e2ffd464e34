"""``dermdiff-lora rebalance`` on the shipped tiny model: --dry-run writes nothing; a batched run records
its sampling settings and speed; a resumed run with other image settings is refused."""

import json

from dermdiff_lora.cli.app import main
from dermdiff_lora.tone.synthetic import make_dataset

COMMON = ["--model", "tiny", "--steps", "2", "--max-tries", "1", "--target", '{"malignant,2": 2, "benign,1": 1}',
          "--workers", "0"]


def test_dry_run_then_batched_run(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n=6, size=32, seed=4, tone_counts={"lighter": 1, "brown": 0, "darker": 0})
    out = tmp_path / "out"
    assert main(["rebalance", str(data), str(out), *COMMON, "--dry-run", "--pilot", "2"]) == 0
    text = capsys.readouterr().out
    assert "malignant/2" in text and "pilot" in text and "expected:" in text and not out.exists()
    assert main(["rebalance", str(data), str(out), *COMMON, "--batch-size", "2", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    settings = report["settings"]
    assert (settings["scheduler"], settings["sampler"], settings["steps"], settings["batch_size"]) == (
        "auto", "DPMSolverMultistepScheduler", 2, 2)
    assert settings["scheduler_settings"]["use_karras_sigmas"] is False  # tiny: zero terminal SNR
    assert report["speed"]["renders"] == report["totals"]["generated"] == 3
    run = json.loads((out / "rebalance_run.json").read_text())
    assert run["render"]["steps"] == 2 and run["render"]["scheduler"] == "auto"
    assert main(["rebalance", str(data), str(out), *COMMON[:2], "--steps", "3", *COMMON[4:]]) != 0
    assert "holds a rebalance run with other render" in capsys.readouterr().err
