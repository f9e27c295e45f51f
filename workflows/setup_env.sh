#!/usr/bin/env bash
# Create ./.venv with range-dist and its test tools (idempotent). Used by .ci/run and the quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build of torch (on these machines it is on local disk); a CUDA machine may pick its own.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0" || python -m pip install -q torch
python -m pip install -q -e ".[test]"
