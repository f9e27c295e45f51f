"""Small cubes for the analysis tests: 10° grids made by the real grid job, and in-memory cubes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from range_dist.executors import embed_grid
from range_dist.jobs.grid.config import GridJobConfig

BETAS = (0.0, 0.5, 1.0)


def make_cube(out: Path, assets: tuple[Path, Path], *, land_only: bool = False, dtype: str = "float32",
              resolution: float = 10.0) -> Path:
    """Embed a small global cube with the local executor (no Ray) and return its path."""
    ckpt, db = assets
    cfg = GridJobConfig(resolution=resolution, betas=BETAS, satclip=ckpt, db=db, out=out, tile_size=6,
                        chunk_size=3, executor="local", land_only=land_only, dtype=dtype)
    with open(os.devnull, "w") as quiet:
        embed_grid(cfg, executor="local", log=quiet)
    return out


def memory_cube(res: float = 10.0, bbox: tuple[float, float, float, float] = (-180, -90, 180, 90),
                features: int = 4, seed: int = 0) -> xr.Dataset:
    """An in-memory cube with random float64 values on a regular north-up grid (same layout as embed-grid)."""
    west, south, east, north = bbox
    lat = np.arange(north - res / 2, south, -res)
    lon = np.arange(west + res / 2, east, res)
    values = np.random.default_rng(seed).normal(size=(2, len(lat), len(lon), features))
    return xr.Dataset({"embedding": (("beta", "lat", "lon", "feature"), values)},
                      coords={"beta": [0.0, 1.0], "lat": lat, "lon": lon, "feature": np.arange(features)})
