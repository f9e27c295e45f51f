"""Overview pyramid: NaN-aware 2x2 means, odd grids, resumable levels, GeoZarr multiscales, int8 + heads cubes."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
import zarr_cm

from range_dist.analysis.cube import open_cube
from range_dist.cli.main import main
from range_dist.cube.overviews import (
    LevelSpec,
    build_overviews,
    coarsen_nanmean,
    level_path,
    plan_levels,
    root_level,
)
from range_dist.errors import ConfigError, StoreMismatchError
from range_dist.executors import embed_grid
from range_dist.jobs.grid.config import GridJobConfig


def _cube(out: Path, assets: tuple[Path, Path], **kw: object) -> Path:
    ckpt, db = assets
    base: dict[str, object] = {"resolution": 20.0, "betas": (0.0, 0.5, 1.0), "satclip": ckpt, "db": db, "out": out,
                               "tile_size": 4, "chunk_size": 2, "executor": "local", "land_only": True,
                               "dtype": "float32"}
    base.update(kw)
    with open(os.devnull, "w") as quiet:
        embed_grid(GridJobConfig(**base), executor="local", log=quiet)  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory, sample_assets: tuple[Path, Path]) -> Path:
    return _cube(tmp_path_factory.mktemp("ovw") / "c20.zarr", sample_assets)  # 9 x 18 cells: odd rows


def _nanmean2(x: np.ndarray) -> np.ndarray:
    """Reference: loops over the 2x2 blocks of axes 1, 2 (any sizes), mean of the finite cells."""
    b, h, w, f = x.shape
    out = np.full((b, -(-h // 2), -(-w // 2), f), np.nan, dtype=np.float64)
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            block = x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(b, -1, f)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[:, i, j] = np.nanmean(block, axis=1)
    return out


def test_coarsen_nanmean_matches_loops_on_odd_shapes() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    x[:, 0:2, 0:2] = np.nan  # a whole block NaN -> NaN
    x[:, 2, 3] = np.nan  # one cell NaN -> mean of the other three
    got = coarsen_nanmean(x, 1, 2)
    assert got.shape == (2, 3, 4, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, _nanmean2(x), rtol=1e-6, equal_nan=True)
    assert np.isnan(got[:, 0, 0]).all()
    np.testing.assert_allclose(got[:, 2, 3], x[:, 4, 6], rtol=1e-6)  # the corner partial block: one cell


def test_plan_levels_stop_at_min_resolution() -> None:
    root = LevelSpec(0, 0.1, (1800, 3600), -180.0, 90.0)
    levels = plan_levels(root)
    assert [round(s.resolution, 6) for s in levels] == [0.2, 0.4, 0.8, 1.6]
    assert [s.shape for s in levels] == [(900, 1800), (450, 900), (225, 450), (113, 225)]
    assert levels[-1].transform == pytest.approx([1.6, 0.0, -180.0, 0.0, -1.6, 90.0])
    assert [s.resolution for s in plan_levels(root, 0.4)] == pytest.approx([0.2, 0.4])
    with pytest.raises(ConfigError, match="min-resolution"):
        plan_levels(root, 0.0)


def test_levels_are_nan_aware_means_with_their_own_georeferencing(cube: Path, tmp_path: Path) -> None:
    store = tmp_path / "c.zarr"
    shutil.copytree(cube, store)
    reports = build_overviews(store, min_resolution=160)
    assert [(r.level, r.shape) for r in reports] == [(1, (5, 9)), (2, (3, 5)), (3, (2, 3))]
    below = xr.open_zarr(store, decode_coords="all")["embedding"].values.astype(np.float64)
    spec = root_level(store)
    for k in (1, 2, 3):
        ds = xr.open_zarr(store, group=f"overviews/{k}", decode_coords="all")
        got = ds["embedding"].values
        assert got.dtype == np.float32  # the root's dtype
        ref = _nanmean2(below)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, equal_nan=True)
        res = spec.resolution * 2**k
        transform = ds.attrs["spatial:transform"]
        assert transform == pytest.approx([res, 0.0, -180.0, 0.0, -res, 90.0])
        # every cell centre is where the convention's transform puts it
        a, _, c, _, e, f = transform
        cols, rows = np.arange(ds.sizes["lon"]) + 0.5, np.arange(ds.sizes["lat"]) + 0.5
        np.testing.assert_allclose(ds["lon"].values, a * cols + c)
        np.testing.assert_allclose(ds["lat"].values, e * rows + f)
        assert ds.attrs["spatial:shape"] == [ds.sizes["lat"], ds.sizes["lon"]]
        zarr_cm.validate_all(dict(ds.attrs))
        import rioxarray  # noqa: F401

        assert list(ds.rio.transform())[:6] == pytest.approx(transform)
        assert ds.rio.crs.to_epsg() == 4326
        assert set(np.unique(ds["tile_status"].values)) <= {1, 2}
        below = got.astype(np.float64)
    root: Any = zarr.open_group(str(store), mode="r")
    zarr_cm.validate_all(dict(root.attrs))
    layout = root.attrs["multiscales"]["layout"]
    assert [entry["asset"] for entry in layout] == [".", "overviews/1", "overviews/2", "overviews/3"]
    assert layout[2]["derived_from"] == "overviews/1" and layout[2]["transform"]["scale"] == [2.0, 2.0]
    # the same arrays, dtypes and codecs as the root
    level: Any = zarr.open_group(str(store / "overviews" / "1"), mode="r")
    for name, arr in root.arrays():
        other = level[name]
        assert other.dtype == arr.dtype and other.metadata.dimension_names == arr.metadata.dimension_names
        assert type(other.compressors[0]) is type(arr.compressors[0]) if arr.compressors else True
    assert level_path(store, 2) == store / "overviews" / "2"
    with pytest.raises(ConfigError, match="no such overview level"):
        level_path(store, 7)
    # the analysis reader opens a level like the cube itself
    for k in (1, 3):
        lazy = open_cube(store, level=k)["embedding"].values
        np.testing.assert_array_equal(lazy, xr.open_zarr(store, group=f"overviews/{k}")["embedding"].values)
    with pytest.raises(ConfigError, match="no overview level 4"):
        open_cube(store, level=4)
    # a GeoZarr checker finds nothing wrong with the pyramid, root or level
    exe = shutil.which("zarr-lint")
    assert exe is not None, "zarr-lint is a dev dependency"
    for target in (store, store / "overviews" / "2"):
        run = subprocess.run([exe, "check", str(target), "--format", "json", "--fail-on", "warning"],
                             capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
    # a later run with a finer --min-resolution keeps (and lists) the coarser complete levels
    build_overviews(store, min_resolution=40)
    attrs: Any = zarr.open_group(str(store), mode="r").attrs
    assert len(attrs["multiscales"]["layout"]) == 4


def test_resume_redoes_only_missing_tiles(cube: Path, tmp_path: Path) -> None:
    store = tmp_path / "c.zarr"
    shutil.copytree(cube, store)
    build_overviews(store, min_resolution=40)
    first = xr.open_zarr(store, group="overviews/1")["embedding"].values
    record = zarr.open_array(str(store / "overviews" / "1" / "tile_status"), mode="r+")
    record[0, 1] = 0  # as if the run stopped before this tile
    seen: list[tuple[int, int, int]] = []
    (report,) = build_overviews(store, min_resolution=40, on_tile=lambda *t: seen.append(t))
    assert seen == [(1, 0, 1)] and report.computed + report.skipped == 1
    np.testing.assert_array_equal(xr.open_zarr(store, group="overviews/1")["embedding"].values, first)


def test_int8_heads_cube_levels_blend_exactly(tmp_path: Path, sample_assets: tuple[Path, Path]) -> None:
    from range_dist.cube.codec import dequantize_int8

    store = _cube(tmp_path / "h.zarr", sample_assets, layout="heads", quantize="int8")
    build_overviews(store, min_resolution=40)
    root: Any = zarr.open_group(str(store), mode="r")
    level: Any = zarr.open_group(str(store / "overviews" / "1"), mode="r")
    for name in ("H_geo", "H_sem", "q_hat"):
        assert level[name].dtype == np.int8 and level[f"{name}_scale"].dtype == np.float32
        decoded_root = dequantize_int8(root[name][...], root[f"{name}_scale"][...])[None].astype(np.float64)
        decoded = dequantize_int8(level[name][...], level[f"{name}_scale"][...])
        ref = _nanmean2(decoded_root)[0]
        scale = np.asarray(level[f"{name}_scale"][...])
        err = np.abs(decoded - ref)
        # re-quantisation: each value within half a step of its cell's scale
        assert np.all(np.nan_to_num(err) <= np.nan_to_num(scale)[..., None] / 2 + 1e-6)
        assert np.array_equal(np.isnan(scale), np.isnan(ref).all(axis=-1))
    # any β on a level: the blend of the averaged heads (linear, so = the average of the blends)
    blended = open_cube(store, level=1, beta=0.37)["embedding"].values[0]
    geo = dequantize_int8(level["H_geo"][...], level["H_geo_scale"][...])
    sem = dequantize_int8(level["H_sem"][...], level["H_sem_scale"][...])
    q_hat = dequantize_int8(level["q_hat"][...], level["q_hat_scale"][...])
    expected = np.concatenate([0.63 * geo + 0.37 * sem, q_hat], axis=-1)
    np.testing.assert_allclose(blended, expected, rtol=1e-5, atol=1e-6, equal_nan=True)
    # and the product commands read any β of a heads cube, at any level
    png = tmp_path / "sim.png"
    assert main(["similar", str(store), "--lon", "30", "--lat", "50", "--beta", "0.37", "--level", "1",
                 "--out", str(png)]) == 0
    assert png.is_file()


def test_cli_overviews_and_errors(cube: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "c.zarr"
    shutil.copytree(cube, store)
    assert main(["overviews", str(store), "--min-resolution", "40", "--dry-run"]) == 0
    assert "1: 40° 5x9" in capsys.readouterr().out
    assert main(["overviews", str(store), "--min-resolution", "40"]) == 0
    assert "level 1: 40° 5x9 cells" in capsys.readouterr().out
    assert main(["overviews", str(tmp_path / "missing.zarr")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["overviews", str(store), "--min-resolution", "-1"]) == 2
    assert "--min-resolution -1" in capsys.readouterr().err
    # one driver per store: a cube whose lease is held (embed-grid running) is refused
    from range_dist.util.lease import StoreBusyError, StoreLease

    with StoreLease(store, "embed-grid -> test"), pytest.raises(StoreBusyError):
        build_overviews(store, min_resolution=40)
    # an unfinished cube is refused: the pyramid averages a finished cube
    zarr.open_array(str(store / "tile_status"), mode="r+")[0, 0] = 0
    with pytest.raises(StoreMismatchError, match="not complete"):
        build_overviews(store, min_resolution=40)


def test_embed_grid_overviews_option_builds_the_pyramid_after_the_cube(tmp_path: Path,
                                                                       sample_assets: tuple[Path, Path]) -> None:
    out = _cube(tmp_path / "with_pyramid.zarr", sample_assets, overviews=80.0)
    assert list(open_cube(out, level=1)["embedding"].shape) == [3, 5, 9, 1280]  # 40° cells
    assert list(open_cube(out, level=2)["embedding"].shape) == [3, 3, 5, 1280]  # 80° cells
    with pytest.raises(ConfigError, match=r"overviews=-1\.0: give the coarsest cell size in degrees"):
        GridJobConfig(overviews=-1.0)
