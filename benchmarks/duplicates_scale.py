"""The duplicate finder's near-copy search at ISIC 2020 size: 8 orientations against the mirrors-only 4.

``find_duplicates`` compares every pair of images' 64-bit pHashes, the reference image in each of its
orientations. Since quarter turns were added it tries 8 orientations (as is, 3 flips, 4 turns) instead of 4
(as is, 3 flips). This times that search on ``--n`` fingerprints with random hashes (33 126: ISIC 2020's
training set; random hashes are far apart, so it is the all-pairs hashing cost, not the thumbnail checks
of candidate pairs), both variants side by side in this process, ``--repeats`` times each in turn,
and one ``fingerprint`` of a 4000x3000 RGB image (the part of it that the 4 extra orientations add is
32x32 pHashes).

    PYTHONPATH=. .venv/bin/python benchmarks/duplicates_scale.py [--n 33126] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from PIL import Image

from dermdiff_lora.data import duplicates as dup


def prints(n: int, orientations: int, seed: int = 0) -> list[dup.Fingerprint]:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, size=(n, orientations), dtype=np.int64).astype(object)
    return [dup.Fingerprint(str(i), ("", "", ""), int(h[0]) * 2, tuple(int(x) * 2 for x in h[1:]))
            for i, h in enumerate(hashes)]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=33126)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ids = [str(i) for i in range(args.n)]
    sets = {4: prints(args.n, 4), 8: prints(args.n, 8)}
    times: dict[int, list[float]] = {4: [], 8: []}
    for _ in range(args.repeats):
        for k, fps in sets.items():
            times[k].append(timed(lambda fps=fps: dup.find_duplicates(ids, fps)))
    rng = np.random.default_rng(1)
    big = Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8))
    fp = statistics.median(timed(lambda: dup.fingerprint(big)) for _ in range(args.repeats))
    four, eight = statistics.median(times[4]), statistics.median(times[8])
    print(f"near-copy search, {args.n} images (random pHashes), median of {args.repeats} runs in turn, "
          f"1 process, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"  4 orientations (as is + 3 flips)      {four:8.1f} s")
    print(f"  8 orientations (+ 4 quarter turns)    {eight:8.1f} s   {eight / four:.2f}x")
    print(f"fingerprint of one 4000x3000 RGB image (decoded): {fp * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
