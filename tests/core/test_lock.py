"""One writer per output folder: a second live writer is refused, a killed one's lock is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from dermdiff_lora.core.errors import ConfigError
from dermdiff_lora.core.lock import LOCK_NAME, folder_lock

HOLD = ("import sys, time; from dermdiff_lora.core.lock import folder_lock\n"
        "with folder_lock(sys.argv[1], 'train'):\n    print('held', flush=True); time.sleep(60)\n")


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_naming_the_first_and_a_killed_one_frees_the_folder(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(ConfigError, match=rf"in use by another train \(pid {proc.pid} "):
            with folder_lock(tmp_path, "train"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (tmp_path / LOCK_NAME).is_file()  # the file stays; the kernel dropped the lock with the process
    with folder_lock(tmp_path, "train"):
        pass


def test_lock_is_released_when_the_block_ends(tmp_path):
    with folder_lock(tmp_path / "new", "rebalance"):
        assert (tmp_path / "new" / LOCK_NAME).is_file()
    with folder_lock(tmp_path / "new", "rebalance"):  # would raise if the first block had kept the lock
        pass


def test_a_second_train_into_a_live_output_folder_is_refused(tiny_base, demo_data, tmp_path):
    from conftest import make_cfg

    from dermdiff_lora.training.train import train

    proc = _holder(tmp_path / "run")
    try:
        with pytest.raises(ConfigError, match=r"run is in use by another train"):
            train(make_cfg(demo_data, tmp_path / "run", "train.max_steps=1"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert train(make_cfg(demo_data, tmp_path / "run", "train.max_steps=1"))["steps"] == 1
