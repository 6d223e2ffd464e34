#!/usr/bin/env bash
# Set up if needed, then run the whole offline test suite (lint first).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check dermdiff_lora tests scripts benchmarks
# One thread per test process: the tiny models are far faster single-threaded, and the 2-process test
# would otherwise oversubscribe a 2-core machine.
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest "$@"
