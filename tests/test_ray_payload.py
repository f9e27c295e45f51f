"""The payload reaches Ray actors so that a restart can always fetch it (no "constructor arguments
in the object store" warning, ray-project/ray#53727), even though the driver dropped its reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from range_dist.cube.store import TILE_COMPUTED, read_tile_status
from range_dist.executors import embed_grid
from range_dist.jobs.grid.config import GridJobConfig


def _embed(ckpt: Path, db: Path, out: Path, faults: str, fault_log: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_ADDRESS": "", "RANGE_DIST_TEST_FAULTS": faults,
           "RANGE_DIST_TEST_FAULT_LOG": str(fault_log)}
    return subprocess.run(
        [sys.executable, "-m", "range_dist", "embed-grid", "--satclip", str(ckpt), "--db", str(db),
         "--resolution", "30", "--tile-size", "4", "--chunk-size", "2", "--betas", "0,1", "--dtype", "float32",
         "--executor", "ray", "--num-actors", "1", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=420)


def test_restarted_actor_fetches_the_payload_the_driver_no_longer_holds(
        sample_assets: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, db = sample_assets
    # the driver drops its reference as soon as the holder actor has its copy; the worker's first
    # incarnation is then killed after each tile it finishes, so restarts happen mid-run
    fault_log = tmp_path / "faults.log"
    chaos = _embed(ckpt, db, tmp_path / "chaos.zarr", "kill_after_tiles=1", fault_log)
    assert chaos.returncode == 0, chaos.stderr
    assert "constructor arguments in the object store" not in chaos.stderr
    assert (read_tile_status(tmp_path / "chaos.zarr") == TILE_COMPUTED).all()

    assert "kill_after_tiles after 1 tile(s)" in fault_log.read_text()  # the worker really died mid-run
    embed_grid(GridJobConfig(resolution=30, tile_size=4, chunk_size=2, betas=(0.0, 1.0), dtype="float32",
                             satclip=ckpt, db=db, out=tmp_path / "clean.zarr", executor="local"), executor="local")
    a = xr.open_zarr(tmp_path / "chaos.zarr")["embedding"].values
    b = xr.open_zarr(tmp_path / "clean.zarr")["embedding"].values
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)  # Ray threads vs local
