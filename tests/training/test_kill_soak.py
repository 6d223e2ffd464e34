"""kill -9 at the worst moments, resume with train.resume=latest: the final weights equal an uninterrupted
run's bit for bit, and no half-written summary, adapter, checkpoint or cache is ever taken as complete.
The short CI version of scripts/kill_soak.py (LoRA, and full + EMA + AdamW8bit, in parallel)."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from kill_soak import NAMED, passed, soak  # noqa: E402


def test_killed_and_resumed_runs_end_bit_identical(demo_data, tiny_base, tmp_path):
    # 3 kills each, at named crash points; together they cover all four (scripts/kill_soak.py: 50 more)
    points = {"lora": (NAMED[0], NAMED[1], NAMED[3]), "full": NAMED[1:]}
    with ThreadPoolExecutor(2) as pool:  # each soak runs one single-threaded subprocess at a time
        futures = {mode: pool.submit(soak, demo_data, tmp_path / mode, mode, len(points[mode]), steps=6,
                                     named=points[mode]) for mode in points}
        results = {mode: f.result() for mode, f in futures.items()}
    for mode, result in results.items():
        assert result["named_points_hit"] == list(points[mode]), mode
        assert result["same_keys"] and result["max_abs_weight_difference"] == 0.0, result
        # each run resumed from the newest complete checkpoint (not from scratch, which ends the same on a CPU)
        assert result["resume_mismatches"] == [] and result["resumed_from_a_checkpoint"] >= 1, result
        assert result["final_resumed_from"] == result["final_expected_resumed_from"] is not None, result
        assert passed(result)
