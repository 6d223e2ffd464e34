#!/usr/bin/env bash
# Set up if needed, then run the tiny offline demo (train a LoRA, export it, render a diagnosis x tone grid).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dermdiff-lora demo "$@"
