"""PCA-reduced Cloud-Optimised GeoTIFF export of one β level of a cube, for GIS tools.

GDAL (and so QGIS, rasterio's bundled GDAL 3.10) cannot read sharded Zarr v3; a COG it can. The
embedding (F features per cell) is reduced to ``components`` principal components, fitted
(scikit-learn PCA) on up to ``fit_cells`` valid cells read on a regular stride, and every cell is
projected: ``band_k = (e - mean) · component_k`` (float32; NaN cells are nodata = NaN).

Writing streams: the projection is computed block by block (dask) into a tiled GeoTIFF next to the
output, which GDAL's COG driver then copies with internal overviews (average resampling) into
the final file; the temporary is removed. Peak memory is about one dask block of the cube plus
GDAL's own cache, not the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from range_dist.analysis.maps import sample_cells
from range_dist.cube.store import CRS_CODE
from range_dist.errors import ConfigError

if TYPE_CHECKING:
    import xarray as xr


@dataclass(frozen=True)
class PCAProjection:
    """``bands = (x - mean) @ components.T``.

    Attributes:
        mean: (F,) float64 feature means of the fitted sample.
        components: (K, F) float64 orthonormal principal axes.
        explained_variance_ratio: (K,) float64.
        fitted_cells: cells the PCA was fitted on.
    """

    mean: npt.NDArray[np.float64]
    components: npt.NDArray[np.float64]
    explained_variance_ratio: npt.NDArray[np.float64]
    fitted_cells: int

    def apply(self, values: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """(…, F) embeddings -> (…, K) float32 projections; NaN where the input vector has NaN."""
        x = np.asarray(values, dtype=np.float32)
        invalid = ~np.isfinite(x).all(axis=-1)
        out = (np.nan_to_num(x) - self.mean.astype(np.float32)) @ self.components.T.astype(np.float32)
        out[invalid] = np.nan
        return np.asarray(out, dtype=np.float32)


def fit_pca(samples: npt.NDArray[np.floating], components: int, seed: int = 0) -> PCAProjection:
    """Fit a ``components``-dimensional PCA on (N, F) samples (rows with NaN ignored).

    Raises:
        ConfigError: ``components`` outside [1, min(F, valid rows)].
    """
    from sklearn.decomposition import PCA

    x = np.asarray(samples, dtype=np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    limit = min(x.shape[1], len(x))
    if not 1 <= components <= limit:
        raise ConfigError(f"--components {components}: expected 1 to {limit} (the cube has {x.shape[1]} features "
                          f"and {len(x)} valid cells were sampled to fit the PCA), e.g. 3 or 16")
    pca = PCA(n_components=components, random_state=seed).fit(x)
    return PCAProjection(np.asarray(pca.mean_, np.float64), np.asarray(pca.components_, np.float64),
                         np.asarray(pca.explained_variance_ratio_, np.float64), len(x))


@dataclass(frozen=True)
class CogResult:
    """What :func:`export_cog` wrote: the path, the projection, and the raster's size (width, height)."""

    path: Path
    projection: PCAProjection
    size: tuple[int, int]


def export_cog(
    cube: str | Path | xr.Dataset, beta: float, out: str | Path, *, components: int = 3, fit_cells: int = 20000,
    seed: int = 0, blocksize: int = 256,
) -> CogResult:
    """Write one β level as a ``components``-band float32 COG with overviews (EPSG:4326, the cube's transform).

    Args:
        cube: cube path or opened dataset.
        beta: β level of the cube.
        out: output ``.tif`` (replaced if it exists: the caller checks ``--overwrite``).
        components: bands (principal components), 1 … min(F, fitted cells).
        fit_cells: cells the PCA is fitted on.
        seed: sampling / PCA seed.
        blocksize: COG tile size in pixels (a multiple of 16).

    Returns:
        A :class:`CogResult`.

    Raises:
        ConfigError: β not in the cube, or ``components`` out of range.
    """
    import dask.array as da
    import rasterio
    import rasterio.shutil
    from rasterio.windows import Window

    from range_dist.analysis.cube import GridAxes, _as_dataset, select_beta

    ds = _as_dataset(cube, beta)  # a heads-layout cube path: blended at this β on open
    field = select_beta(ds, beta).transpose("lat", "lon", "feature")
    if components < 1 or components > field.sizes["feature"]:
        raise ConfigError(f"--components {components}: expected 1 to {field.sizes['feature']} (the cube's "
                          "features), e.g. 3 or 16")
    projection = fit_pca(sample_cells(field, fit_cells, seed), components, seed)
    axes = GridAxes.from_coords(ds["lat"].values, ds["lon"].values, "cube")
    transform = rasterio.transform.from_origin(axes.lon0 - axes.dlon / 2, axes.lat0 + axes.dlat / 2,
                                               axes.dlon, axes.dlat)
    data = field.data if isinstance(field.data, da.Array) else da.from_array(np.asarray(field.data),
                                                                               chunks=(512, 512, -1))
    bands = data.rechunk({2: -1}).map_blocks(projection.apply, dtype=np.float32,
                                             chunks=(*data.chunks[:2], (components,)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.tif")
    profile = {"driver": "GTiff", "width": axes.n_lon, "height": axes.n_lat, "count": components,
               "dtype": "float32", "crs": CRS_CODE, "transform": transform, "nodata": np.nan, "tiled": True,
               "blockxsize": blocksize, "blockysize": blocksize, "BIGTIFF": "IF_SAFER"}
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            row_starts = np.cumsum((0, *bands.chunks[0]))
            col_starts = np.cumsum((0, *bands.chunks[1]))
            for i, j in np.ndindex(len(bands.chunks[0]), len(bands.chunks[1])):
                block = np.asarray(bands.blocks[i, j].compute())  # (h, w, K): one cube block at a time
                window = Window(int(col_starts[j]), int(row_starts[i]), block.shape[1], block.shape[0])
                dst.write(np.moveaxis(block, -1, 0), window=window)
            for k in range(components):
                dst.set_band_description(k + 1, f"PC{k + 1} of RANGE embedding at beta={float(beta):g}")
            dst.update_tags(range_dist_beta=f"{float(beta):g}", range_dist_method="PCA",
                            range_dist_fitted_cells=str(projection.fitted_cells),
                            range_dist_explained_variance=",".join(f"{v:.4f}" for v in
                                                                   projection.explained_variance_ratio))
        rasterio.shutil.copy(tmp, out, driver="COG", compress="DEFLATE", predictor="3", blocksize=blocksize,
                             overview_resampling="average", overviews="AUTO", bigtiff="IF_SAFER")
    finally:
        tmp.unlink(missing_ok=True)
    return CogResult(out, projection, (axes.n_lon, axes.n_lat))
