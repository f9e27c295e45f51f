#!/usr/bin/env bash
# Fresh machine -> a RANGE+ cube: set up ./.venv, then run the main job on embedded defaults
# (local Ray in-process, local files). Uses the published assets if `range-dist fetch-assets` has
# run, else labelled untrained sample assets. Extra arguments go to `range-dist embed-grid`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash workflows/setup_env.sh
. .venv/bin/activate
range-dist embed-grid --config workflows/global_1deg.yaml "$@"
echo
echo "Open it:  python -c \"import xarray as xr; print(xr.open_zarr('runs/global_1deg.zarr', decode_coords='all'))\""
