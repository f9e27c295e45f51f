"""Similarity maps: the cosine similarity of every cell of a cube to the embedding at a point (or points).

The reference vector is the cube's embedding at the point (nearest cell), or the mean of the
embeddings at several points. The map is ``cos(e_cell, ref) = e·ref / (|e| |ref|)`` over the whole
feature vector, computed block by block with dask (one β, one lat/lon block of the cube at a time),
so a global 0.1° cube (1800 × 3600 cells × 1280 features) never sits in memory: only the (lat, lon)
float32 map does (26 MB at 0.1°). NaN cells (not embedded) are NaN in the map.

Outputs: a PNG (colour ramp between robust percentiles of the map, the land outline of
:mod:`range_dist.analysis.maps`, NaN grey) and a single-band float32 GeoTIFF (COG, nodata NaN) via
rioxarray with the cube's transform and CRS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from range_dist.cube.store import CRS_CODE
from range_dist.errors import CoordinateError

if TYPE_CHECKING:
    import xarray as xr

# viridis at 5 evenly spaced stops (sRGB 0..1), linearly interpolated: a perceptually ordered ramp
# without a matplotlib dependency for one colour map.
_RAMP = np.array([[0.267, 0.005, 0.329], [0.229, 0.322, 0.546], [0.128, 0.567, 0.551], [0.369, 0.789, 0.383],
                  [0.993, 0.906, 0.144]])


def colour_ramp(values: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """(…) values in [0, 1] (NaN = no data) -> (…, 3) RGB floats in [0, 1] (viridis; NaN stays NaN)."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    pos = v * (len(_RAMP) - 1)
    lo = np.clip(np.floor(np.nan_to_num(pos)).astype(int), 0, len(_RAMP) - 2)
    frac = (np.nan_to_num(pos) - lo)[..., None]
    rgb = _RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac
    rgb[~np.isfinite(v)] = np.nan
    return rgb.astype(np.float32)


#: Cells converted to float32 at once inside one dask block (bounds the temporary copies: 8192 × F × 4 B).
CELL_BATCH = 8192


def cosine_to(values: npt.NDArray[np.floating], ref: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """Cosine similarity of (…, F) vectors to one (F,) unit vector ``ref``: (…) float32, NaN for NaN vectors.

    Works through the cells :data:`CELL_BATCH` at a time, so a float16 block is never copied to
    float32 whole (a dask block of the cube is up to 64 MiB as stored).
    """
    x = np.asarray(values)
    flat = x.reshape(-1, x.shape[-1])
    ref32 = ref.astype(np.float32)
    out = np.empty(len(flat), dtype=np.float32)
    for start in range(0, len(flat), CELL_BATCH):
        part = flat[start : start + CELL_BATCH].astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + CELL_BATCH] = (part @ ref32) / np.linalg.norm(part, axis=-1)
    return out.reshape(x.shape[:-1])


def reference_vector(cube: str | Path | xr.Dataset, points: npt.ArrayLike, beta: float) -> npt.NDArray[np.float64]:
    """The unit reference embedding: the mean of the cube's embeddings (nearest cell) at ``points``.

    Args:
        cube: cube path or opened dataset.
        points: (N, 2) or (2,) (lon, lat) degrees.
        beta: β level.

    Returns:
        (F,) float64, unit L2 norm.

    Raises:
        CoordinateError: a point outside the cube's bbox, or on a cell with no embedding (NaN).
        ConfigError: β not in the cube.
    """
    from range_dist.analysis.cube import sample_cube

    lonlat = np.atleast_2d(np.asarray(points, dtype=np.float64))
    samples = np.asarray(sample_cube(cube, lonlat, betas=beta, method="nearest").values[0], dtype=np.float64)
    bad = ~np.isfinite(samples).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CoordinateError(
            f"point {i} (lon={lonlat[i, 0]}, lat={lonlat[i, 1]}) falls on a cell with no embedding (NaN: ocean in "
            f"a land-only cube, or a tile not computed; {int(bad.sum())} such point(s)). Pick a point on an "
            "embedded cell.")
    mean = samples.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm == 0.0:
        raise CoordinateError("the mean embedding of the points is the zero vector; the similarity is undefined")
    return np.asarray(mean / norm, dtype=np.float64)


def similarity_map(cube: str | Path | xr.Dataset, points: npt.ArrayLike, beta: float) -> xr.DataArray:
    """Cosine similarity of every cell at β to the embedding at ``points`` (mean of several).

    Args:
        cube: cube path or opened dataset (:func:`range_dist.analysis.cube.open_cube`).
        points: (N, 2) or (2,) (lon, lat) degrees.
        beta: β level of the cube.

    Returns:
        Lazy (dask) DataArray (lat, lon) float32 in [-1, 1], NaN where the cell is NaN, with the cube's
        lat/lon coordinates and CRS; ``.compute()`` (or ``.values``) reads the cube block by block.

    Raises:
        CoordinateError: a point outside the bbox or on a NaN cell.
        ConfigError: β not in the cube.
    """
    import dask.array as da
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    from range_dist.analysis.cube import _as_dataset, select_beta

    ds = _as_dataset(cube, beta)  # a heads-layout cube path: blended at this β on open
    ref = reference_vector(ds, points, beta)
    field = select_beta(ds, beta).transpose("lat", "lon", "feature")
    data = field.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(512, 512, -1))
    data = data.rechunk({2: -1})
    sim = data.map_blocks(cosine_to, ref, drop_axis=2, dtype=np.float32)
    lonlat = np.atleast_2d(np.asarray(points, dtype=np.float64))
    out = xr.DataArray(sim, dims=("lat", "lon"), coords={"lat": ds["lat"].values, "lon": ds["lon"].values},
                       name="similarity",
                       attrs={"long_name": "cosine similarity to the reference embedding", "units": "1",
                              "beta": float(beta), "reference_points": lonlat.tolist()})
    return out.rio.write_crs(CRS_CODE).rio.set_spatial_dims(x_dim="lon", y_dim="lat")


@dataclass(frozen=True)
class SimilarityResult:
    """What :func:`render_similarity` wrote.

    Attributes:
        png: the PNG. geotiff: the GeoTIFF or None.
        low, high: the similarity mapped to the ends of the colour ramp.
        valid_cells: cells with a value.
    """

    png: Path
    geotiff: Path | None
    low: float
    high: float
    valid_cells: int


def write_similarity_geotiff(sim: xr.DataArray, path: str | Path) -> Path:
    """Write a (lat, lon) similarity map as a single-band float32 Cloud-Optimised GeoTIFF, nodata NaN."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import rioxarray  # noqa: F401 - registers the .rio accessor

    band = sim.astype(np.float32).rio.set_spatial_dims(x_dim="lon", y_dim="lat").rio.write_crs(CRS_CODE)
    band = band.rio.write_nodata(np.nan, encoded=False)
    band.rio.to_raster(path, driver="COG", compress="DEFLATE")
    return path


def render_similarity(
    cube: str | Path | xr.Dataset, points: npt.ArrayLike, beta: float, png: str | Path, *,
    geotiff: str | Path | None = None, scale: int | None = None, percentiles: tuple[float, float] = (2.0, 99.5),
) -> SimilarityResult:
    """Compute a similarity map and write it as PNG (colour ramp, land outline) and optionally GeoTIFF.

    Args:
        cube: cube path or opened dataset.
        points: (N, 2) or (2,) (lon, lat) degrees.
        beta: β level.
        png: output PNG.
        geotiff: optional GeoTIFF (float32 cosine values, COG).
        scale: PNG upscaling factor (default: about 720 px wide).
        percentiles: the map's percentiles mapped to the ends of the ramp.

    Returns:
        A :class:`SimilarityResult`.
    """
    from range_dist.analysis.cube import GridAxes, _as_dataset
    from range_dist.analysis.maps import assets_note, default_scale, write_png

    ds = _as_dataset(cube, beta)  # a heads-layout cube path: blended at this β on open
    sim = similarity_map(ds, points, beta).compute()
    values = np.asarray(sim.values, dtype=np.float32)
    valid = values[np.isfinite(values)]
    low, high = (np.percentile(valid, percentiles) if len(valid) else (0.0, 1.0))
    span = high - low if high > low else 1.0
    rgb = colour_ramp((values - low) / span)
    axes = GridAxes.from_coords(ds["lat"].values, ds["lon"].values, "cube")
    lat_edges = (axes.lat0 + axes.dlat / 2, axes.lat0 - (axes.n_lat - 0.5) * axes.dlat)
    lon_edges = (axes.lon0 - axes.dlon / 2, axes.lon0 + (axes.n_lon - 0.5) * axes.dlon)
    n = len(np.atleast_2d(np.asarray(points)))
    where = f"{n} points" if n > 1 else "({:g}, {:g})".format(*np.atleast_2d(np.asarray(points, float))[0])
    label = f"cos sim to {where}, beta={float(beta):g}: {low:.2f} .. {high:.2f}"
    note = assets_note(ds.attrs)
    if note:
        label = f"{note} | {label}"
    metadata = {"Title": "RANGE embedding similarity map", "Label": label, "range_dist:beta": f"{float(beta):g}"}
    png_path = write_png(rgb, png, lat_edges=lat_edges, lon_edges=lon_edges,
                         scale=scale or default_scale(axes.n_lon), label=label, metadata=metadata)
    tif = write_similarity_geotiff(sim, geotiff) if geotiff is not None else None
    return SimilarityResult(png_path, tif, float(low), float(high), len(valid))
