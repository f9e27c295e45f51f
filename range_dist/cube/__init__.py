"""Embedding cubes: Zarr v3 (beta, lat, lon, feature) with CRS, provenance and a completion record."""

from range_dist.cube.store import (
    TILE_COMPUTED,
    TILE_MISSING,
    TILE_SKIPPED,
    CubeLayout,
    finalize_cube,
    open_or_create_cube,
    read_tile_status,
    write_tile,
)

__all__ = [
    "TILE_COMPUTED",
    "TILE_MISSING",
    "TILE_SKIPPED",
    "CubeLayout",
    "finalize_cube",
    "open_or_create_cube",
    "read_tile_status",
    "write_tile",
]
