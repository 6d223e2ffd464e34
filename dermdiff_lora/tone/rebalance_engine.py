"""Render and check one process's share of a rebalance's missing images ("slots").

A batch holds the next try of up to ``batch_size`` different slots; each image's noise depends only on its
own seed, and a slot's tries run in order, so every slot accepts the same seed however the slots are
batched, checked or split across processes. Checks (blank, tone, lesion) and the PNG encoding run in CPU
worker processes while the next batch renders; results are written in slot order of completion, the
image before its metadata row before its journal line.
"""

from __future__ import annotations

import heapq
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing import get_context
from pathlib import Path

from PIL import Image

from ..core.progress import progress as progress_bar
from ..generation.grid import save_png

BatchFn = Callable[[list[str], list[int]], list[Image.Image]]


@dataclass
class Job:
    """One missing image: its group, slot, prompt, wanted tone, file stem, and its next try."""

    order: int  # position in the run's list of slots (all processes)
    gi: int  # group index: seeds are seed + 1_000_000·gi + 1000·slot + try
    label: str
    index: int
    values: dict
    prompt: str
    wanted: str
    name: str
    attempt: int = 0

    def seed(self, base: int) -> int:
        return base + 1_000_000 * self.gi + 1000 * self.index + self.attempt

    def __lt__(self, other: Job) -> bool:
        return self.order < other.order


@dataclass
class Processes:
    """This process's rank among ``world`` processes and a barrier between them (one process: no-ops)."""

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = field(default=lambda: None)

    def share(self, items: list) -> list:
        """Every ``world``-th item from ``rank`` on: shares that tile the list with no gap or overlap."""
        return items[self.rank::self.world]


def launched_processes() -> Processes:
    """The processes of an ``accelerate launch`` / ``torchrun`` run (gloo on the CPU, NCCL on GPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    # cpu: torchrun's CPU processes form a gloo group; the last barrier waits for the slowest process's
    # share of the slots, so the group's timeout is a day, not the 10-30 minutes of torch's defaults
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(days=1))
    if state.device.type == "cuda":
        torch.cuda.set_device(state.device)  # "cuda" below means this process's own GPU
    return Processes(state.process_index, state.num_processes, state.wait_for_everyone)


def batch_fn(generate_fn) -> BatchFn:
    """``generate_fn.render_batch`` when it has one, else one ``generate_fn(prompt, seed)`` call per image."""
    batched = getattr(generate_fn, "render_batch", None)
    if batched is not None:
        return batched
    return lambda prompts, seeds: [generate_fn(p, s) for p, s in zip(prompts, seeds)]


def check_image(judge, image, wanted, scheme, path: Path, prompt: str, seed: int):
    """(rejection reason or None, ITA); an accepted image is saved (atomically) with its provenance."""
    reason, ita = judge(image, wanted, scheme)
    if reason is None:
        save_png(image.convert("RGB"), path, {"synthetic": "true", "prompt": prompt, "seed": str(seed)})
    return reason, ita


class Checker:
    """Runs ``check_image`` in ``workers`` spawned CPU processes, or in this process (``workers=0``)."""

    def __init__(self, workers: int) -> None:
        self.pool = (ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 0 else None)

    def submit(self, *args) -> Future:
        if self.pool is not None:
            return self.pool.submit(check_image, *args)
        future: Future = Future()
        future.set_result(check_image(*args))
        return future

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class GroupProgress:
    """Tries and acceptances per group in this run, for the progress line and the report."""

    slots: dict[str, int]
    tries: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)
    start: float = field(default_factory=time.monotonic)

    def add(self, label: str, accepted: bool, finished: bool) -> None:
        self.tries[label] = self.tries.get(label, 0) + 1
        self.accepted[label] = self.accepted.get(label, 0) + accepted
        self.done[label] = self.done.get(label, 0) + finished

    def postfix(self, most: int = 3) -> str:
        """``group accepted/slots acc% eta`` for the first unfinished groups."""
        renders = sum(self.tries.values())
        per_render = (time.monotonic() - self.start) / renders if renders else None
        parts = []
        for label, n in self.slots.items():
            left, tries = n - self.done.get(label, 0), self.tries.get(label, 0)
            if left <= 0 or len(parts) >= most:
                continue
            rate = self.accepted.get(label, 0) / tries if tries else None
            eta = (f" eta {left / max(rate, 0.05) * per_render:.0f}s" if rate is not None and per_render
                   else "")
            acc = f" acc {rate:.0%}" if rate is not None else ""
            parts.append(f"{label} {self.accepted.get(label, 0)}/{n}{acc}{eta}")
        return "; ".join(parts)


def run_jobs(jobs: list[Job], render: BatchFn, judge, scheme, *, out: Path, seed: int, max_tries: int,
             batch_size: int, checker: Checker, on_result, progress: bool = True) -> dict:
    """Render and check ``jobs`` until each is accepted or out of tries; ``on_result(job, seed, reason,
    ita)`` writes each try. One batch is checked while the next renders. Returns the run's counts."""
    pending = [(j.order, j) for j in jobs if j.attempt < max_tries]
    heapq.heapify(pending)
    depth = 1 if checker.pool is not None else 0  # batches checked while the next renders
    groups = GroupProgress({})
    for _, j in sorted(pending):
        groups.slots[j.label] = groups.slots.get(j.label, 0) + 1
    inflight: deque = deque()
    added, start, rendering = 0, time.perf_counter(), 0.0
    with progress_bar(total=len(pending), desc="rebalance", unit="slot", disable=not progress) as bar:
        while pending or inflight:
            if pending:
                take = [heapq.heappop(pending)[1] for _ in range(min(batch_size, len(pending)))]
                seeds = [j.seed(seed) for j in take]
                t0 = time.perf_counter()
                images = render([j.prompt for j in take], seeds)
                rendering += time.perf_counter() - t0
                inflight.append([(j, s, checker.submit(judge, image, j.wanted, scheme, out / f"{j.name}.png",
                                                       j.prompt, s))
                                 for j, s, image in zip(take, seeds, images)])
            if inflight and (not pending or len(inflight) > depth):
                for job, s, future in inflight.popleft():
                    reason, ita = future.result()
                    on_result(job, s, reason, ita)
                    job.attempt += 1
                    finished = reason is None or job.attempt >= max_tries
                    added += reason is None
                    groups.add(job.label, reason is None, finished)
                    if finished:
                        bar.set_postfix(groups=groups.postfix(), refresh=False)
                        bar.update(1)
                    else:
                        heapq.heappush(pending, (job.order, job))
    seconds = time.perf_counter() - start
    renders = sum(groups.tries.values())
    return {"renders": renders, "accepted": added, "seconds": round(seconds, 3),
            "render_seconds": round(rendering, 3),
            "images_per_second": round(added / seconds, 4) if seconds and renders else None,
            "renders_per_second": round(renders / seconds, 4) if seconds and renders else None,
            "acceptance": {k: round(groups.accepted[k] / v, 4) for k, v in groups.tries.items() if v}}
