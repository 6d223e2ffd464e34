"""Two rebalance runs into one folder: the second is refused while the first lives; a killed one's lock
does not block the next run (the resume)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from PIL import Image

from dermdiff_lora.core.errors import ConfigError
from dermdiff_lora.tone.rebalance import rebalance
from dermdiff_lora.tone.synthetic import make_dataset

HOLD = ("import sys, time; from dermdiff_lora.core.lock import folder_lock\n"
        "with folder_lock(sys.argv[1], 'rebalance'):\n    print('held', flush=True); time.sleep(60)\n")


def test_second_rebalance_into_a_live_folder_is_refused(tmp_path):
    data = make_dataset(tmp_path / "data", n=6, size=16, seed=1)
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert holder.stdout.readline().strip() == "held"
    blank = lambda prompt, seed: Image.new("RGB", (16, 16))  # noqa: E731
    try:
        with pytest.raises(ConfigError, match=rf"in use by another rebalance \(pid {holder.pid} "):
            rebalance(data, out, blank, max_tries=1, progress=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    report = rebalance(data, out, blank, max_tries=1, progress=False)  # the killed holder blocks nothing
    assert report.path.is_file()
