"""Similarity maps (PNG + GeoTIFF) and the PCA Cloud-Optimised GeoTIFF export, against a real small cube."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from range_dist.analysis.cog import export_cog
from range_dist.analysis.cube import open_cube
from range_dist.analysis.similarity import similarity_map
from range_dist.cli.main import main
from range_dist.errors import ConfigError, CoordinateError
from tests.analysis_helpers import make_cube

LAND = (25.0, 55.0)  # a cell centre in Lithuania: land in a 10° land-only cube
OCEAN = (-30.0, -40.0)  # South Atlantic: NaN in a land-only cube


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory, sample_assets: tuple[Path, Path]) -> Path:
    return make_cube(tmp_path_factory.mktemp("sim") / "c.zarr", sample_assets, land_only=True)


def _cos_reference(ds: object, beta: float, ref: np.ndarray) -> np.ndarray:
    field = open_cube(ds, beta=beta)["embedding"].sel(beta=beta).values.astype(np.float64)  # type: ignore[arg-type]
    ref = ref / np.linalg.norm(ref)
    return np.asarray((field @ ref) / np.linalg.norm(field, axis=-1))


def test_similarity_is_the_cosine_to_the_point_and_stays_lazy(cube: Path) -> None:
    sim = similarity_map(cube, [LAND], 0.5)
    assert sim.chunks is not None  # dask: computed block by block
    values = sim.values
    field = open_cube(cube, beta=0.5)["embedding"].sel(beta=0.5)
    ref = field.sel(lon=LAND[0], lat=LAND[1], method="nearest").values.astype(np.float64)
    np.testing.assert_allclose(values, _cos_reference(cube, 0.5, ref), rtol=1e-5, atol=1e-6, equal_nan=True)
    i = int(np.argmin(np.abs(sim["lat"].values - LAND[1])))
    j = int(np.argmin(np.abs(sim["lon"].values - LAND[0])))
    assert values[i, j] == pytest.approx(1.0, abs=1e-5)  # the point's own cell
    two = [LAND, (25.0, 5.0)]  # the mean of two points
    refs = [field.sel(lon=p[0], lat=p[1], method="nearest").values.astype(np.float64) for p in two]
    np.testing.assert_allclose(similarity_map(cube, two, 0.5).values, _cos_reference(cube, 0.5, np.mean(refs, 0)),
                               rtol=1e-5, atol=1e-6, equal_nan=True)


def test_similarity_bad_points(cube: Path) -> None:
    with pytest.raises(CoordinateError, match="no embedding"):
        similarity_map(cube, [OCEAN], 0.5)
    with pytest.raises(ConfigError, match=r"beta=0\.3 is not in the cube"):
        similarity_map(cube, [LAND], 0.3)


def test_similar_cli_png_and_geotiff(cube: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png, tif = tmp_path / "sim.png", tmp_path / "sim.tif"
    args = ["similar", str(cube), "--lon", str(LAND[0]), "--lat", str(LAND[1]), "--beta", "0.5"]
    assert main([*args, "--out", str(png), "--tif", str(tif)]) == 0
    assert "wrote" in capsys.readouterr().out
    image = Image.open(png)
    assert image.size[0] >= 36 and image.mode == "RGB"
    with rasterio.open(tif) as src:
        assert src.count == 1 and src.crs.to_epsg() == 4326 and np.isnan(src.nodata)
        assert tuple(src.transform)[:6] == pytest.approx((10.0, 0.0, -180.0, 0.0, -10.0, 90.0))
        np.testing.assert_allclose(src.read(1), similarity_map(cube, [LAND], 0.5).values, rtol=1e-6, equal_nan=True)
    assert main([*args, "--out", str(png)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    points = tmp_path / "pts.csv"
    points.write_text("lon,lat\n25,55\n25,5\n")
    assert main(["similar", str(cube), "--points", str(points), "--beta", "0.5", "--out", str(png),
                 "--overwrite"]) == 0
    cases = {
        "does not exist": ["similar", str(tmp_path / "none.zarr"), "--lon", "0", "--lat", "0", "--beta", "0.5",
                           "--out", str(tmp_path / "a.png")],
        "beta=0.3 is not in the cube": [*args[:-1], "0.3", "--out", str(tmp_path / "b.png")],
        "outside [0, 1]": [*args[:-1], "1.5", "--out", str(tmp_path / "c.png")],
        "no embedding": ["similar", str(cube), "--lon", str(OCEAN[0]), "--lat", str(OCEAN[1]), "--beta", "0.5",
                         "--out", str(tmp_path / "d.png")],
        "give the reference point": ["similar", str(cube), "--beta", "0.5", "--out", str(tmp_path / "e.png")],
        "written as PNG": [*args, "--out", str(tmp_path / "f.jpg")],
        "no overview level 3": [*args, "--level", "3", "--out", str(tmp_path / "g.png")],
    }
    for message, argv in cases.items():
        assert main(argv) == 2, message
        assert message in capsys.readouterr().err


def test_similarity_outside_bbox(tmp_path: Path, sample_assets: tuple[Path, Path]) -> None:
    from range_dist.executors import embed_grid
    from range_dist.jobs.grid.config import GridJobConfig

    ckpt, db = sample_assets
    out = tmp_path / "box.zarr"
    cfg = GridJobConfig(resolution=10.0, bbox=(0.0, 30.0, 40.0, 60.0), betas=(0.5,), satclip=ckpt, db=db, out=out,
                        tile_size=6, chunk_size=3, executor="local", dtype="float32")
    import os

    with open(os.devnull, "w") as quiet:
        embed_grid(cfg, executor="local", log=quiet)
    with pytest.raises(CoordinateError, match="outside the cube"):
        similarity_map(out, [(-100.0, 40.0)], 0.5)
    assert main(["similar", str(out), "--lon", "-100", "--lat", "40", "--beta", "0.5",
                 "--out", str(tmp_path / "x.png")]) == 2


def test_export_cog_is_a_cog_with_the_pca_values(cube: Path, tmp_path: Path) -> None:
    out = tmp_path / "pca.tif"
    result = export_cog(cube, 0.5, out, components=3, blocksize=16)
    field = open_cube(cube, beta=0.5)["embedding"].sel(beta=0.5).values.astype(np.float64)
    with rasterio.open(out) as src:
        assert src.count == 3 and src.dtypes[0] == "float32" and src.crs.to_epsg() == 4326
        assert tuple(src.transform)[:6] == pytest.approx((10.0, 0.0, -180.0, 0.0, -10.0, 90.0))
        assert src.overviews(1), "a COG has internal overviews"
        assert src.profile["tiled"] and src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert np.isnan(src.nodata)
        bands = src.read()
    proj = result.projection
    expected = (field - proj.mean) @ proj.components.T  # (lat, lon, 3)
    valid = np.isfinite(field).all(axis=-1)
    np.testing.assert_allclose(np.moveaxis(bands, 0, -1)[valid], expected[valid], rtol=1e-4, atol=1e-4)
    assert np.isnan(bands[:, ~valid]).all()


def test_export_cog_cli_messages(cube: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.tif"
    assert main(["export-cog", str(cube), "--beta", "1", "--components", "16", "--out", str(out),
                 "--blocksize", "16"]) == 0
    with rasterio.open(out) as src:
        assert src.count == 16
    cases = {
        "already exists; pass --overwrite": ["--components", "3", "--out", str(out)],
        "--components 0": ["--components", "0", "--out", str(tmp_path / "a.tif")],
        "--components 5000: expected 1 to 1280": ["--components", "5000", "--out", str(tmp_path / "b.tif")],
        "needs a .tif name": ["--out", str(tmp_path / "c.png")],
        "multiple of 16": ["--blocksize", "20", "--out", str(tmp_path / "d.tif")],
    }
    for message, extra in cases.items():
        assert main(["export-cog", str(cube), "--beta", "0.5", *extra]) == 2, message
        assert message in capsys.readouterr().err
    assert main(["export-cog", str(cube), "--beta", "0.25", "--out", str(tmp_path / "e.tif")]) == 2
    assert "beta=0.25 is not in the cube" in capsys.readouterr().err
