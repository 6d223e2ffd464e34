#!/usr/bin/env bash
# Set up if needed, then run the tiny offline demo (train a LoRA, export it, render a diagnosis x tone grid).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The demo's models are tiny: one thread is several times faster than two contending ones.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/dermdiff-lora demo "$@"
