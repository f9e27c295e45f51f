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
# torchvision must match torch (timm needs it): the pair below is on local disk on these machines.
python -c "import torch, torchvision" 2>/dev/null || python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" \
  || python -m pip install -q torch torchvision
python -m pip install -q -e ".[test,demo]"
