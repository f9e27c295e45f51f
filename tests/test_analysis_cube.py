"""Opening cubes and sampling them at points (nearest, bilinear, antimeridian, NaN cells)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rioxarray  # noqa: F401 - registers the .rio accessor (a run no longer imports it)
import xarray as xr

from range_dist import RangeEncoder, RetrievalDatabase, load_satclip_location_encoder
from range_dist.analysis.cube import open_cube, sample_cube, select_beta, to_dataframe, to_numpy
from range_dist.errors import ConfigError, CoordinateError
from tests.analysis_helpers import BETAS, make_cube, memory_cube


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory, sample_assets: tuple[Path, Path]) -> Path:
    return make_cube(tmp_path_factory.mktemp("cube") / "cube.zarr", sample_assets)


def _bilinear(ds: xr.Dataset, lon: float, lat: float, beta: int = 0) -> np.ndarray:
    """Straightforward bilinear interpolation on a global grid (for checking)."""
    lats, lons = ds.lat.values, ds.lon.values
    res = lons[1] - lons[0]
    i0 = int(np.floor((lats[0] - lat) / res))
    wy = (lats[0] - lat) / res - i0
    fj = ((lon - lons[0]) / res) % len(lons)
    j0 = int(np.floor(fj))
    wx = fj - j0
    v = ds.embedding.values[beta]
    j1 = (j0 + 1) % len(lons)
    return ((1 - wy) * ((1 - wx) * v[i0, j0] + wx * v[i0, j1]) + wy * ((1 - wx) * v[i0 + 1, j0] + wx * v[i0 + 1, j1]))


def test_open_cube_is_lazy_with_whole_features(cube: Path) -> None:
    ds = open_cube(cube)
    emb = ds["embedding"]
    assert emb.chunks is not None and emb.chunks[0] == (1, 1, 1) and emb.chunks[3] == (1280,)
    assert emb.chunks[1][0] == 6  # a whole shard (6 cells) of 3-cell inner chunks, under 64 MiB
    assert ds.rio.crs.to_epsg() == 4326
    assert select_beta(ds, 0.5).dims == ("lat", "lon", "feature")


def test_nearest_at_cell_centres_equals_direct_encoding(cube: Path, sample_assets: tuple[Path, Path]) -> None:
    ds = open_cube(cube)
    lat, lon = np.meshgrid(ds.lat.values[::3], ds.lon.values[::4], indexing="ij")
    pts = np.stack([lon.ravel(), lat.ravel()], axis=1)
    ckpt, db = sample_assets
    expected = RangeEncoder(load_satclip_location_encoder(ckpt), RetrievalDatabase.open(db)).encode(pts, BETAS)
    for method in ("nearest", "bilinear"):
        got = to_numpy(sample_cube(ds, pts, method=method))
        assert got.shape == (3, len(pts), 1280) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # a point off-centre (less than half a cell) takes its cell's value with nearest
    shifted = to_numpy(sample_cube(ds, pts + np.array([4.0, -4.0]), betas=[0.5], method="nearest"))
    np.testing.assert_array_equal(shifted[0], to_numpy(sample_cube(ds, pts, betas=0.5))[0])


def test_bilinear_is_exact_at_centres_and_linear_between() -> None:
    ds = memory_cube()
    v = ds.embedding.values
    centres = np.array([[-175.0, 85.0], [5.0, -5.0], [175.0, -85.0]])
    got = to_numpy(sample_cube(ds, centres, method="bilinear"))
    np.testing.assert_allclose(got[:, 0], v[:, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(got[:, 1], v[:, 9, 18], rtol=1e-6)
    # halfway between two centres in lon, and a quarter of the way in lat
    mid = to_numpy(sample_cube(ds, [[10.0, -5.0]], betas=0.0, method="bilinear"))[0, 0]
    np.testing.assert_allclose(mid, (v[0, 9, 18] + v[0, 9, 19]) / 2, rtol=1e-6)
    quarter = to_numpy(sample_cube(ds, [[5.0, -7.5]], betas=0.0, method="bilinear"))[0, 0]
    np.testing.assert_allclose(quarter, 0.75 * v[0, 9, 18] + 0.25 * v[0, 10, 18], rtol=1e-6)
    rng = np.random.default_rng(0)
    for lon, lat in zip(rng.uniform(-180, 180, 20), rng.uniform(-84, 84, 20)):
        got1 = to_numpy(sample_cube(ds, [[lon, lat]], betas=0.0, method="bilinear"))[0, 0]
        np.testing.assert_allclose(got1, _bilinear(ds, lon, lat), rtol=1e-5, atol=1e-6)


def test_bilinear_wraps_the_antimeridian_and_clamps_at_the_poles() -> None:
    ds = memory_cube()
    v = ds.embedding.values[0]
    for lon in (180.0, -180.0):  # halfway between the columns at 175 and -175
        got = to_numpy(sample_cube(ds, [[lon, 5.0]], betas=0.0, method="bilinear"))[0, 0]
        np.testing.assert_allclose(got, (v[8, 35] + v[8, 0]) / 2, rtol=1e-6)
    near = to_numpy(sample_cube(ds, [[179.0, 5.0]], betas=0.0, method="bilinear"))[0, 0]
    np.testing.assert_allclose(near, 0.6 * v[8, 35] + 0.4 * v[8, 0], rtol=1e-6)
    # nearest across the antimeridian: lon -179 is nearest to the column at -175, 179.9 to 175
    np.testing.assert_allclose(to_numpy(sample_cube(ds, [[-179.0, 5.0]], betas=0.0))[0, 0], v[8, 0], rtol=1e-6)
    # beyond the outermost centres in latitude the value is constant in lat
    pole = to_numpy(sample_cube(ds, [[-175.0, 90.0], [-175.0, 87.0]], betas=0.0, method="bilinear"))[0]
    np.testing.assert_allclose(pole, [v[0, 0], v[0, 0]], rtol=1e-6)


def test_bilinear_gives_nan_cells_zero_weight() -> None:
    ds = memory_cube()
    values = ds.embedding.values.copy()
    values[:, 9, 19] = np.nan  # one NaN (ocean) cell
    values[:, 0:2, 0:2] = np.nan  # a NaN block
    ds["embedding"] = (("beta", "lat", "lon", "feature"), values)
    got = to_numpy(sample_cube(ds, [[10.0, -7.5]], betas=0.0, method="bilinear"))[0, 0]
    w = np.array([0.75 * 0.5, 0.25 * 0.5, 0.25 * 0.5])  # corners (9,18), (10,18), (10,19); (9,19) is NaN
    expected = (w[0] * values[0, 9, 18] + w[1] * values[0, 10, 18] + w[2] * values[0, 10, 19]) / w.sum()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    inside_nan = to_numpy(sample_cube(ds, [[-170.0, 80.0]], betas=0.0, method="bilinear"))[0, 0]
    assert np.isnan(inside_nan).all()
    assert np.isnan(to_numpy(sample_cube(ds, [[15.0, -5.0]], betas=0.0, method="nearest"))[0, 0]).all()


def test_land_only_cube_samples_land_and_nan_ocean(tmp_path: Path, sample_assets: tuple[Path, Path]) -> None:
    ds = open_cube(make_cube(tmp_path / "land.zarr", sample_assets, land_only=True))
    got = to_numpy(sample_cube(ds, [[-140.0, 0.0], [20.0, 10.0]], betas=0.5, method="bilinear"))[0]
    assert np.isnan(got[0]).all() and np.isfinite(got[1]).all()  # mid-Pacific, Sahara


def test_bbox_cube_refuses_points_outside() -> None:
    ds = memory_cube(res=1.0, bbox=(5, 45, 11, 48))
    ok = to_numpy(sample_cube(ds, [[5.0, 45.0], [11.0, 48.0]], method="bilinear"))
    np.testing.assert_allclose(ok[:, 0], ds.embedding.values[:, -1, 0], rtol=1e-6)  # clamped at the edge
    with pytest.raises(CoordinateError, match=r"point 1 \(lon=20.0, lat=46.0\) lies outside the cube, which covers "
                                              r"lon \[5, 11\], lat \[45, 48\]"):
        sample_cube(ds, [[6.0, 46.0], [20.0, 46.0]])


def test_outputs_as_pandas_and_xarray() -> None:
    ds = memory_cube()
    samples = sample_cube(ds, [[1.0, 2.0], [3.0, 4.0]])
    assert samples.dims == ("beta", "point", "feature") and samples["lon"].values.tolist() == [1.0, 3.0]
    frame = to_dataframe(samples)
    assert len(frame) == 4 and list(frame.columns[:4]) == ["point", "lon", "lat", "beta"]
    assert frame["f3"].dtype == np.float32


def test_errors_name_the_input_and_the_fix(tmp_path: Path) -> None:
    ds = memory_cube()
    with pytest.raises(ConfigError, match=r"beta=0.5 is not in the cube; it holds beta = 0, 1"):
        sample_cube(ds, [[0.0, 0.0]], betas=0.5)
    with pytest.raises(ConfigError, match=r"method='cubic': use one of nearest, bilinear"):
        sample_cube(ds, [[0.0, 0.0]], method="cubic")
    with pytest.raises(CoordinateError, match=r"row 0 has lon=200\.0"):
        sample_cube(ds, [[200.0, 0.0]])
    with pytest.raises(ConfigError, match=r"cube .*missing.zarr does not exist; pass the .zarr store"):
        open_cube(tmp_path / "missing.zarr")
    xr.Dataset({"other": ("x", np.arange(3))}).to_zarr(tmp_path / "other.zarr", zarr_format=3, consolidated=False)
    with pytest.raises(ConfigError, match=r"has no variable embedding\(beta, lat, lon, feature\)"):
        open_cube(tmp_path / "other.zarr")
