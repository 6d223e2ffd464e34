#!/usr/bin/env bash
# Set up if needed, then run the static checks and the whole offline test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bin=.venv/bin
$bin/ruff check dermdiff_lora tests scripts benchmarks
# Layers point one way and no sibling modules import each other in a cycle (pyproject: tool.importlinter).
$bin/lint-imports --no-cache
# Every declared dependency is imported, every import is declared (pyproject: tool.deptry).
$bin/deptry .
$bin/python scripts/check_sizes.py dermdiff_lora benchmarks scripts
# Repeated blocks of 6+ lines inside the package.
$bin/pylint --disable=all --enable=duplicate-code --min-similarity-lines=6 --score=n dermdiff_lora
# One thread per test process: the tiny models are far faster single-threaded, and the 2-process test
# would otherwise oversubscribe a 2-core machine.
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec $bin/python -m pytest "$@"
