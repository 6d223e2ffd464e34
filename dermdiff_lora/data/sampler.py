"""Deterministic batches: which images each process sees at each micro-step, and their per-sample seeds.

The order is a pure function of (seed, global position), so a resumed run, a run on N processes and a
1-process run with N× the batch all see the same samples with the same crops, flips, noise and timesteps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def sample_seed(seed: int, position: int) -> int:
    """A 63-bit seed for the sample at a global stream position."""
    return int(np.random.SeedSequence([seed, position]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class StepBatchSampler:
    """Batches ``[(index, sample_seed), ...]`` of one process for micro-steps ``[start, stop)``.

    Epoch ``e`` is a permutation of the dataset seeded by ``(seed, e)``; with ``weights`` it is instead
    ``len(weights)`` draws with replacement in proportion to the weights (tone-balanced sampling).
    Micro-step ``m`` takes the stream positions ``m*G .. m*G+G-1`` (``G`` = batch × processes); process
    ``p`` gets the ``p``-th slice of ``batch_size`` of them.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, start: int, stop: int,
                 num_processes: int = 1, process_index: int = 0, weights: Sequence[float] | None = None):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.stop = start, stop
        self.num_processes, self.process_index = num_processes, process_index
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def epoch_order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            rng = np.random.default_rng([self.seed, epoch, 0xDE4D])
            if self.weights is None:
                order = rng.permutation(self.n)
            else:
                order = rng.choice(self.n, size=self.n, replace=True, p=self.weights / self.weights.sum())
            self._orders = {epoch: order}  # keep one epoch: the stream only moves forward
        return self._orders[epoch]

    def position_to_index(self, position: int) -> int:
        return int(self.epoch_order(position // self.n)[position % self.n])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        global_batch = self.batch_size * self.num_processes
        for micro_step in range(self.start, self.stop):
            first = micro_step * global_batch + self.process_index * self.batch_size
            yield [(self.position_to_index(p), sample_seed(self.seed, p))
                   for p in range(first, first + self.batch_size)]
