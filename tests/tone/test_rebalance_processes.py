"""Two real CPU processes (torchrun, gloo) share a rebalance's slots: killed mid-run and resumed, they write
the same files as one process, with no duplicate and no missing (slot, seed)."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from rebalance_worker import Stub

from dermdiff_lora.core.lock import LOCK_NAME
from dermdiff_lora.tone.rebalance import REPORT_FILE, TRIES_FILE, rebalance
from dermdiff_lora.tone.rebalance_engine import Processes
from dermdiff_lora.tone.rebalance_store import PARTS_DIR
from dermdiff_lora.tone.synthetic import make_dataset

HERE = Path(__file__).resolve().parents[1]  # tests/


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "rebalance_worker.py"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file() and p.name not in (REPORT_FILE, LOCK_NAME)}


def test_processes_share_slots_without_gap_or_overlap():
    items = list(range(11))
    shares = [Processes(rank, 3).share(items) for rank in range(3)]
    assert sorted(sum(shares, [])) == items and shares[1] == [1, 4, 7, 10]


def test_two_processes_killed_mid_run_resume_to_the_one_process_result(tmp_path):
    data = make_dataset(tmp_path / "data", size=32, seed=3, tone_counts={"lighter": 6, "brown": 2, "darker": 1})
    one = tmp_path / "one"
    report = rebalance(data, one, Stub(), max_tries=6, target="equal", progress=False)
    assert report.added > 10

    out = tmp_path / "two"
    killed = _torchrun(str(data), str(out), "1", "7")  # rank 1 is killed at its 8th render
    assert killed.returncode != 0
    parts = {d.name: _rows(d / "metadata.csv") for d in sorted((out / PARTS_DIR).iterdir())}
    assert set(parts) == {"rank0", "rank1"} and not (out / REPORT_FILE).exists()
    journals = {d.name: [json.loads(x) for x in (d / TRIES_FILE).read_text().splitlines()]
                for d in sorted((out / PARTS_DIR).iterdir())}
    assert len(journals["rank1"]) == 6  # its 3 finished batches of 2: killed while rendering the 4th
    slots = {rank: {(r["group"], r["slot"]) for r in recs} for rank, recs in journals.items()}
    assert not slots["rank0"] & slots["rank1"]

    alone = tmp_path / "alone"  # the same killed run, resumed by one process instead of two
    shutil.copytree(out, alone)
    again = Stub()
    rebalance(data, alone, again, max_tries=6, target="equal", progress=False)
    assert _files(alone) == _files(one) and not (alone / PARTS_DIR).exists()
    # no try made twice: the journalled ones, and an acceptance whose row was written but not its journal line
    journalled = {r["seed"] for recs in journals.values() for r in recs}
    unjournalled = [r for rows in parts.values() for r in rows if int(r["seed"]) not in journalled]
    total = sum(g["generated"] for g in report.groups.values())
    assert again.calls == total - len(journalled) - len(unjournalled)

    resumed = _torchrun(str(data), str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (out / PARTS_DIR).exists()
    assert _files(out) == _files(one)  # metadata, journal and images, byte for byte
    synthetic = [(r["image_name"], r["seed"]) for r in _rows(out / "metadata.csv") if r["synthetic"] == "true"]
    assert len(synthetic) == len(set(synthetic)) == report.added
    final = json.loads((out / REPORT_FILE).read_text())
    assert final["groups"] == report.groups and final["speed"]["processes"] == 2
