#!/usr/bin/env bash
# Fresh machine -> the main job: set up ./.venv, then
#  * with the published assets cached (`range-dist fetch-assets` has run): a global 1° RANGE+ cube on a
#    local Ray, `range-dist embed-grid --config workflows/global_1deg.yaml` (extra arguments go to it);
#  * otherwise: `range-dist demo`, the whole chain offline on a generated sample world (scenes, local STAC
#    API, database build, Ray grid, maps, probes) with labelled random-weight sample assets.
set -euo pipefail
cd "$(dirname "$0")/.."
bash workflows/setup_env.sh
. .venv/bin/activate
# the same check as range_dist.assets.resolve_assets: both files in the huggingface_hub cache, no network
if python -c "import sys; from range_dist.assets import cached_published_assets; sys.exit(cached_published_assets() is None)"
then
    range-dist embed-grid --config workflows/global_1deg.yaml "$@"
    echo
    echo "Open it:  python -c \"import xarray as xr; print(xr.open_zarr('runs/global_1deg.zarr', decode_coords='all'))\""
else
    echo "published assets not cached (range-dist fetch-assets); running the offline demo on a sample world"
    range-dist demo --out runs/demo
fi
