"""Time `audit_dataset` on 1 000 synthetic 1024×768 images (ISIC-like JPEGs) with 2 worker processes.

    python benchmarks/audit_speed.py [--n 1000] [--workers 2] [--format jpg|png]

Prints the generation time (not part of the figure), then the audit's wall seconds and images/s, and the
worker processes' CPU time per image (a figure that other load on the machine does not inflate).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from dermdiff_lora.tone.audit import audit_dataset
from dermdiff_lora.tone.synthetic import make_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--format", default="jpg", choices=("jpg", "png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        start = time.perf_counter()
        make_dataset(data, args.n, size=(1024, 768), seed=0, hair=10, image_format=args.format)
        print(f"generated {args.n} images of 1024x768 {args.format} in {time.perf_counter() - start:.1f} s")
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        start = time.perf_counter()
        result = audit_dataset(data, Path(tmp) / "audit" / "tones.csv", workers=args.workers, progress=False)
        seconds = time.perf_counter() - start
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - cpu_before
    print(
        f"audit: {seconds:.1f} s for {args.n} images with {args.workers} workers "
        f"({args.n / seconds:.1f} images/s) on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    if args.workers > 1:
        print(f"worker CPU time: {1000 * cpu / args.n:.1f} ms per image")
    print(result.to_text())


if __name__ == "__main__":
    main()
