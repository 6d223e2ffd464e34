"""DataLoader settings: how many worker processes decode images beside each training process.

``data.num_workers`` left empty (null) means ``auto_workers``: ``min(8, CPUs per process - 1)``, and 0 when
a process has fewer than 4 CPUs. The CPUs are those this process may run on (``os.sched_getaffinity``:
a container's or ``taskset``'s limit), shared by the training processes of the machine. One CPU per
process stays with the process itself (Python, the CUDA launch queue, the collate); more than 8 workers
rarely pay off with JPEGs decoded at reduced scale; below 4 CPUs a worker only takes turns with the
process it should feed. Workers are persistent (kept between passes), so they start once per run.
"""

from __future__ import annotations

import os

MAX_AUTO_WORKERS = 8
MIN_CPUS_FOR_WORKERS = 4


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_workers(cpus: int, processes: int) -> int:
    """``min(8, cpus // processes - 1)``, 0 below 4 CPUs per process."""
    per_process = cpus // max(1, processes)
    return 0 if per_process < MIN_CPUS_FOR_WORKERS else min(MAX_AUTO_WORKERS, per_process - 1)


def loader_workers(data_cfg, processes: int = 1) -> int:
    """``data.num_workers``, or ``auto_workers`` for this machine when it is null. ``processes``: the
    training processes in the run (torchrun/accelerate's ``LOCAL_WORLD_SIZE``, when set, counts those on
    this machine)."""
    if data_cfg.num_workers is not None:
        return data_cfg.num_workers
    local = int(os.environ.get("LOCAL_WORLD_SIZE", processes) or processes)
    return auto_workers(available_cpus(), local)


def loader_options(data_cfg, processes: int = 1) -> dict:
    """``num_workers`` and ``persistent_workers`` for ``torch.utils.data.DataLoader``."""
    workers = loader_workers(data_cfg, processes)
    return {"num_workers": workers, "persistent_workers": workers > 0}
