#!/usr/bin/env bash
# Create .venv (Python 3.11 preferred) and install the package with the exact pins of constraints.txt.
# Re-runs only when pyproject.toml or constraints.txt changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.dermdiff-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
py=${PYTHON:-}
if [ -z "$py" ]; then
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then py=$candidate; break; fi
  done
fi
[ -n "$py" ] || { echo "setup: no python3 found; install Python 3.11" >&2; exit 1; }
echo "setup: creating .venv with $($py --version) and installing pinned dependencies (about a minute)..."
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
.venv/bin/python -m pip check
echo "$want" > "$stamp"
