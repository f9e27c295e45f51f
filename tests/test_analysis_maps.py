"""RGB maps: ICA/PCA projections, PNGs with a land outline, GeoTIFF/COG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from range_dist.analysis.maps import fit_rgb_projection, land_boundary, render_map
from range_dist.errors import ConfigError
from tests.analysis_helpers import make_cube


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory, sample_assets: tuple[Path, Path]) -> Path:
    return make_cube(tmp_path_factory.mktemp("mapcube") / "cube.zarr", sample_assets, land_only=True,
                     dtype="float16")


@pytest.mark.parametrize("method", ["ica", "pca"])
def test_png_and_geotiff_have_the_expected_size(cube: Path, tmp_path: Path, method: str) -> None:
    result = render_map(cube, 0.5, tmp_path / "map.png", method=method, geotiff=tmp_path / "map.tif")
    assert result.size == (720, 360)
    with Image.open(result.png) as img:
        assert img.format == "PNG" and img.size == (720, 360) and img.mode == "RGB"
        pixels = np.asarray(img)
    assert (pixels == (20, 20, 20)).all(axis=-1).sum() > 500  # the land outline is drawn
    assert (pixels == (225, 225, 225)).all(axis=-1).mean() > 0.3  # NaN (ocean) cells are grey
    assert result.geotiff is not None
    with rasterio.open(result.geotiff) as tif:
        assert (tif.width, tif.height, tif.count) == (36, 18, 4)
        assert tif.crs.to_epsg() == 4326 and tif.dtypes == ("uint8",) * 4
        assert tif.transform.a == 10.0 and tif.transform.c == -180.0 and tif.transform.f == 90.0
        alpha = tif.read(4)
    assert 0 < (alpha == 255).mean() < 0.6  # land cells opaque, ocean transparent


def test_scale_sets_the_png_size(cube: Path, tmp_path: Path) -> None:
    result = render_map(cube, 0.0, tmp_path / "small.png", scale=3, outline=False)
    with Image.open(result.png) as img:
        assert img.size == (108, 54)


def test_projection_is_a_robust_stretch_into_unit_range() -> None:
    rng = np.random.default_rng(0)
    latent = rng.laplace(size=(2000, 3))
    x = latent @ rng.normal(size=(3, 50)) + 0.01 * rng.normal(size=(2000, 50))
    x[:5] = np.nan
    for method in ("ica", "pca"):
        proj = fit_rgb_projection(x, method)
        assert proj.fitted_cells == 1995
        rgb = proj.apply(x)
        assert rgb.shape == (2000, 3) and np.isnan(rgb[:5]).all()
        valid = rgb[5:]
        assert valid.min() == 0.0 and valid.max() == 1.0
        assert (valid == 0.0).mean(axis=0).min() > 0.02 and (valid == 1.0).mean(axis=0).max() < 0.04
        # 3 channels span the 3-d latent space
        assert np.linalg.matrix_rank(np.corrcoef(valid.T)) == 3


def test_projection_errors() -> None:
    with pytest.raises(ConfigError, match=r"method='tsne': use one of ica, pca"):
        fit_rgb_projection(np.zeros((10, 4)), "tsne")
    with pytest.raises(ConfigError, match=r"only 0 valid \(non-NaN\) cells to fit the ICA projection"):
        fit_rgb_projection(np.full((10, 4), np.nan), "ica")
    with pytest.raises(ConfigError, match=r"percentiles=\(50, 10\)"):
        fit_rgb_projection(np.ones((10, 4)), "pca", percentiles=(50, 10))


def test_land_boundary_follows_coastlines() -> None:
    edge = land_boundary((90.0, -90.0), (-180.0, 180.0), (180, 360))
    assert 0.01 < edge.mean() < 0.2
    assert not edge[90, 170]  # mid-Pacific, far from land
    # the west coast of Africa near 15°W..17°W at 15°N is on the boundary
    assert edge[73:77, 160:166].any()


def test_a_map_of_sample_assets_says_so_on_the_picture_and_in_the_png(cube: Path, tmp_path: Path) -> None:
    import zarr

    assert zarr.open_group(str(cube), mode="r").attrs["range_dist:sample_assets"] is True
    result = render_map(cube, 0.5, tmp_path / "map.png")
    with Image.open(result.png) as img:
        text = dict(img.text)  # type: ignore[attr-defined]
        pixels = np.asarray(img)
    assert text["range_dist:sample_assets"] == "true" and text["Label"].startswith("SAMPLE - untrained")
    assert text["range_dist:beta"] == "0.5" and text["range_dist:method"] == "ica"
    # the label box: white across the top-left, as wide as the sample warning
    assert (pixels[1:13, 2 : 7 * len(text["Label"])] == 255).all(axis=-1).mean() > 0.5
