"""Run under ``torchrun --nproc_per_node 2``: rebalance with a stand-in generator, the slots shared by the
launched processes; ``KILL_AFTER`` renders into the run, rank ``KILL_RANK`` kills itself (SIGKILL)."""

import os
import signal
import sys

import numpy as np
from PIL import Image

from dermdiff_lora.tone.rebalance import rebalance
from dermdiff_lora.tone.rebalance_engine import launched_processes
from dermdiff_lora.tone.synthetic import TONE_ITA_RANGES, draw_skin


class Stub:
    """The prompt's tone and diagnosis, or a blank image for about 40 % of seeds: fixed by (prompt, seed)."""

    def __init__(self, kill_after: int = -1) -> None:
        self.calls, self.kill_after = 0, kill_after

    def __call__(self, prompt: str, seed: int):
        if self.calls == self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        self.calls += 1
        rng = np.random.default_rng(seed)
        if rng.random() < 0.4:
            return Image.new("RGB", (32, 32), (0, 0, 0))
        diagnosis, tone = prompt.split()[0], prompt.split(" on ")[1].split()[0]
        return draw_skin(32, float(rng.uniform(*TONE_ITA_RANGES[tone])), diagnosis, seed=seed)[0]


def main(data_dir: str, out_dir: str, kill_rank: str = "-1", kill_after: str = "-1") -> None:
    procs = launched_processes()
    stub = Stub(int(kill_after) if procs.rank == int(kill_rank) else -1)
    rebalance(data_dir, out_dir, stub, max_tries=6, batch_size=2, processes=procs, target="equal",
              progress=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
