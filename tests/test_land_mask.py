"""The packed, memory-mapped land mask answers exactly as global-land-mask does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from range_dist.geo import land


def test_packed_mask_equals_global_land_mask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from global_land_mask import globe

    monkeypatch.setenv("RANGE_DIST_CACHE", str(tmp_path))
    land._packed.cache_clear()
    rng = np.random.default_rng(0)
    random = np.stack([rng.uniform(-180, 180, 200_000), rng.uniform(-90, 90, 200_000)], axis=1)
    lat, lon = np.meshgrid(np.arange(90.0, -90.01, -0.25), np.arange(-180.0, 180.01, 0.25), indexing="ij")
    grid = np.stack([lon.ravel(), lat.ravel()], axis=1)
    edges = np.array([[-180.0, 90.0], [180.0, -90.0], [0.0, 0.0], [179.99999, 89.99999], [8.5, 47.4], [-30.0, 0.0]])
    for points in (random, grid, edges):
        expected = globe.is_land(np.clip(points[:, 1], -89.9999, 89.9999), np.clip(points[:, 0], -179.9999, 179.9999))
        np.testing.assert_array_equal(land.land_mask(points), expected)
    files = sorted(p.name for p in (tmp_path / "land_mask").iterdir())
    assert len(files) == 2 and not any(name.endswith(".tmp") for name in files)  # whole files only
    land._packed.cache_clear()


def test_a_new_process_reads_the_cached_mask_quickly(tmp_path: Path) -> None:
    env = {**os.environ, "RANGE_DIST_CACHE": str(tmp_path)}
    code = "from range_dist.geo.land import land_mask; import numpy as np; print(land_mask(np.array([[8.5, 47.4]]))[0])"
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    again = subprocess.run([sys.executable, "-c", code + "; import sys; print('global_land_mask' in sys.modules)"],
                           env=env, capture_output=True, text=True, check=True)
    # the second process answers from the cache without importing the library (its 933 MB decode)
    assert first.stdout.split() == ["True"] and again.stdout.split() == ["True", "False"]
