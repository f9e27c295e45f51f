"""End-to-end embed-grid runs: local executor and a real local Ray (actors, shards, faults, resume)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import ray
import rioxarray  # noqa: F401 - registers the .rio accessor (a run no longer imports it)
import xarray as xr
import zarr

from range_dist import RangeEncoder, RetrievalDatabase, load_satclip_location_encoder
from range_dist.cube.store import TILE_COMPUTED, TILE_SKIPPED, read_tile_status
from range_dist.errors import StoreMismatchError
from range_dist.executors import embed_grid
from range_dist.jobs.grid.config import GridJobConfig

BETAS = (0.0, 0.5, 1.0)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture
def config(tmp_path: Path, sample_assets: tuple[Path, Path]) -> GridJobConfig:
    ckpt, db = sample_assets
    return GridJobConfig(resolution=10.0, betas=BETAS, satclip=ckpt, db=db, out=tmp_path / "cube.zarr",
                         tile_size=6, chunk_size=3, executor="local")


def _run(cfg: GridJobConfig) -> xr.Dataset:
    embed_grid(cfg, executor=cfg.executor)
    return xr.open_zarr(cfg.out, decode_coords="all")


def _assert_same_cube(a: xr.Dataset, b: xr.Dataset) -> None:
    np.testing.assert_allclose(a["embedding"].values.astype(np.float32), b["embedding"].values.astype(np.float32),
                               rtol=2e-3, atol=2e-3, equal_nan=True)


def test_cube_layout_crs_and_values_equal_the_encoder(config: GridJobConfig) -> None:
    ds = _run(config)
    emb = ds["embedding"]
    assert emb.dims == ("beta", "lat", "lon", "feature") and emb.shape == (3, 18, 36, 1280)
    assert emb.dtype == np.float16
    assert ds.rio.crs.to_epsg() == 4326
    assert ds["lat"].attrs["units"] == "degrees_north" and ds["lon"].attrs["standard_name"] == "longitude"
    assert float(ds.lat[0]) == 85.0 and float(ds.lon[0]) == -175.0
    assert ds.attrs["proj:code"] == "EPSG:4326" and ds.attrs["geoemb:dimensions"] == 1280
    assert len(ds.attrs["range_dist:satclip_sha256"]) == 64 and ds.attrs["range_dist:database_rows"] == 1200
    assert ds.attrs["range_dist:run_report"]["tiles_computed"] == 18
    zarr_arr = zarr.open_array(str(config.out / "embedding"), mode="r")
    assert zarr_arr.shards == (3, 6, 6, 1280)
    # a cell of the cube equals RangeEncoder.encode at its centre (within float16 rounding)
    enc = RangeEncoder(load_satclip_location_encoder(config.satclip), RetrievalDatabase.open(config.db))
    lat, lon = np.meshgrid(ds.lat.values, ds.lon.values, indexing="ij")
    pts = np.stack([lon.ravel(), lat.ravel()], axis=1)
    expected = enc.encode(pts, BETAS).reshape(3, 18, 36, 1280)
    np.testing.assert_allclose(emb.values.astype(np.float32), expected, rtol=1e-3, atol=1e-3)
    assert (read_tile_status(config.out) == TILE_COMPUTED).all()


def test_land_only_skips_ocean_tiles_and_leaves_nan(config: GridJobConfig) -> None:
    cfg = replace(config, land_only=True, tile_size=3, chunk_size=3)
    ds = _run(cfg)
    status = read_tile_status(cfg.out)
    assert (status == TILE_SKIPPED).any() and (status == TILE_COMPUTED).any()
    from range_dist.geo.land import land_mask

    lat, lon = np.meshgrid(ds.lat.values, ds.lon.values, indexing="ij")
    land = land_mask(np.stack([lon.ravel(), lat.ravel()], axis=1)).reshape(lat.shape)
    values = ds["embedding"].isel(beta=1, feature=0).values
    assert np.isfinite(values[land]).all() and np.isnan(values[~land]).all()
    report = ds.attrs["range_dist:run_report"]
    assert report["tiles_skipped"] == int((status == TILE_SKIPPED).sum())
    assert report["points"] == int(land.sum())


def test_mismatched_store_is_refused_and_kept(config: GridJobConfig) -> None:
    _run(config)
    before = zarr.open_array(str(config.out / "embedding"), mode="r")[0, :2, :2, :4]
    with pytest.raises(StoreMismatchError, match=r"betas: store has \[0.0, 0.5, 1.0\], this run \[0.0, 0.25\]"):
        embed_grid(replace(config, betas=(0.0, 0.25)), executor="local")
    after = zarr.open_array(str(config.out / "embedding"), mode="r")[0, :2, :2, :4]
    np.testing.assert_array_equal(before, after)
    report = embed_grid(replace(config, betas=(0.0, 0.25), overwrite=True), executor="local")
    assert report.tiles_computed == 18
    assert xr.open_zarr(config.out)["beta"].values.tolist() == [0.0, 0.25]


def test_rerun_of_finished_store_computes_nothing(config: GridJobConfig) -> None:
    _run(config)
    report = embed_grid(config, executor="local")
    assert report.tiles_computed == 0 and report.tiles_already_done == 18


def test_ray_actors_equal_local_run(config: GridJobConfig, local_ray: None, tmp_path: Path) -> None:
    local = _run(config)
    on_ray = _run(replace(config, out=tmp_path / "ray.zarr", executor="ray"))
    _assert_same_cube(local, on_ray)


def test_ray_sharded_equals_unsharded(config: GridJobConfig, local_ray: None, tmp_path: Path) -> None:
    whole = _run(replace(config, executor="ray"))
    sharded = _run(replace(config, out=tmp_path / "sharded.zarr", executor="ray", db_shards=3, land_only=False))
    _assert_same_cube(whole, sharded)


def test_ray_actor_killed_midrun_gives_the_clean_result(config: GridJobConfig, local_ray: None,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = _run(config)
    # the test seam (range_dist.util.fault_injection): each actor's first incarnation dies after 3 tiles
    monkeypatch.setenv("RANGE_DIST_TEST_FAULTS", "kill_after_tiles=3")
    chaotic_cfg = replace(config, out=tmp_path / "chaos.zarr", executor="ray")
    chaotic = _run(chaotic_cfg)
    _assert_same_cube(clean, chaotic)
    assert (read_tile_status(chaotic_cfg.out) == TILE_COMPUTED).all()


def _cli(cfg: GridJobConfig) -> list[str]:
    return [sys.executable, "-m", "range_dist", "embed-grid", "--satclip", str(cfg.satclip), "--db", str(cfg.db),
            "--resolution", str(cfg.resolution), "--tile-size", str(cfg.tile_size), "--chunk-size",
            str(cfg.chunk_size), "--betas", ",".join(map(str, cfg.betas)), "--out", str(cfg.out)]


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the driver and every process of its session (Ray workers may sit in other groups)."""
    import psutil

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(50):
        left = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == proc.pid:
                    p.kill()
                    left.append(p)
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
        if not left:
            return
        psutil.wait_procs(left, timeout=2)


def test_resume_after_driver_killed(config: GridJobConfig, tmp_path: Path) -> None:
    cfg = replace(config, resolution=5.0, tile_size=3, chunk_size=3)  # 12 x 24 = 288 tiles
    # a plain shell's environment: nothing Ray-specific set (the job must start its own Ray correctly)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen(_cli(cfg), env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 240
    done_before = 0
    while time.time() < deadline:
        if (cfg.out / "tile_status").exists():
            done_before = int((read_tile_status(cfg.out) > 0).sum())
            if done_before >= 20:
                break
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.2)
    _kill_session(proc)
    status = read_tile_status(cfg.out)
    done_before = int((status > 0).sum())
    assert 20 <= done_before < status.size
    report = embed_grid(replace(cfg, executor="local"), executor="local")
    assert report.tiles_already_done == done_before
    assert report.tiles_computed == status.size - done_before  # no finished tile computed twice
    clean = _run(replace(cfg, out=tmp_path / "clean.zarr"))
    _assert_same_cube(clean, xr.open_zarr(cfg.out))


def test_ray_fast_mode_counts_each_tiles_own_checks(sample_assets: tuple[Path, Path], local_ray: None,
                                                    tmp_path: Path) -> None:
    """Two tiles in flight per actor (one computing, one writing) report the same fast-mode checks as the
    local executor's one at a time: each tile's statistics are its own, none lost or counted twice."""
    from range_dist.jobs.grid.plan import build_plan, load_inputs
    from range_dist.jobs.grid.run import fast_plan_key, fast_plan_path, grid_sample
    from range_dist.retrieval.fast.plan import save_plan
    from range_dist.retrieval.fast.planner import plan_fast

    ckpt, db = sample_assets
    local_cfg = GridJobConfig(resolution=0.25, bbox=(150.0, 50.0, 180.0, 80.0), betas=BETAS, satclip=ckpt, db=db,
                              out=tmp_path / "local.zarr", tile_size=40, chunk_size=20, executor="local",
                              dtype="float32", mode="fast", tolerance=1e-2)
    ray_cfg = replace(local_cfg, out=tmp_path / "ray.zarr", executor="ray", max_in_flight=2)
    # One plan for both runs, planned without the cost model (which computes a run this small exactly), and
    # saved where each run looks for a plan of its settings: both reuse it as a resume would.
    grid_plan = build_plan(local_cfg, load_inputs(local_cfg))
    sample = grid_sample(local_cfg.grid, local_cfg.land_only, 2 * local_cfg.validation_points)
    fast = plan_fast(grid_plan.payload.build("cpu").retrieval_context(), sample, grid_plan.compute_betas,
                     1e-2, local_cfg.validation_points)
    assert fast.fallback is None and fast.spacing
    for cfg in (local_cfg, ray_cfg):
        save_plan(fast, fast_plan_path(cfg.out), fast_plan_key(build_plan(cfg, load_inputs(cfg))))
    local, on_ray = _run(local_cfg), _run(ray_cfg)
    assert local.attrs["range_dist:fast"] == on_ray.attrs["range_dist:fast"] == fast.describe()
    _assert_same_cube(local, on_ray)
    a, b = (ds.attrs["range_dist:run_report"] for ds in (local, on_ray))
    assert a["tiles_computed"] == b["tiles_computed"] == 9
    checks_a, checks_b = a["fast_checks"], b["fast_checks"]
    assert checks_a["checked_points"] > 0 and checks_a["interpolated_heads"] > 0
    # which lattice nodes a tile finds already computed depends on the order tiles ran; their sum does not
    for checks in (checks_a, checks_b):
        checks["nodes"] = checks.pop("lattice_nodes") + checks.pop("shared_nodes")
    assert checks_a == checks_b
