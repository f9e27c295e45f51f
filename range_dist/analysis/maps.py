"""RGB maps of embedding cubes: ICA (as in the RANGE paper) or PCA to 3 channels, PNG and GeoTIFF.

The projection is fitted on a subsample of valid (non-NaN) cells and applied to the whole field
block by block (dask), so a map of a large cube never holds the full embedding in memory. Each
channel is stretched between robust percentiles (default 2 % and 98 %) of the fitted sample and
clipped to [0, 1]. ICA components have no natural sign or order: colours are comparable within a
map, not across maps.

The PNG is upscaled by an integer factor and shows the land/ocean boundary of global-land-mask
(30 arc-second mask, evaluated at the PNG's pixel centres) as a dark outline; NaN cells (ocean in
land-only cubes) are light grey. The GeoTIFF (Cloud-Optimised GeoTIFF via rioxarray/GDAL) holds
the same RGB at the cube's resolution, uint8, plus an alpha band (0 where the cell is NaN), in
EPSG:4326 with the cube's cell-edge transform.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from range_dist.cube.store import CRS_CODE
from range_dist.errors import ConfigError

if TYPE_CHECKING:
    import xarray as xr

PROJECTIONS = ("ica", "pca")
NAN_COLOUR = (225, 225, 225)
OUTLINE_COLOUR = (20, 20, 20)
#: Default width in pixels that the PNG is upscaled towards (integer factor).
TARGET_WIDTH = 720


@dataclass(frozen=True)
class RGBProjection:
    """An affine map of embeddings to 3 channels in [0, 1]: ``clip((x - mean) @ matrix - lo) / (hi - lo))``.

    Attributes:
        method: ``ica`` or ``pca``.
        mean: (F,) float64 feature means of the fitted sample.
        matrix: (F, 3) float64 projection (ICA unmixing or PCA components, transposed).
        lo: (3,) float64 lower percentile of each projected channel.
        hi: (3,) float64 upper percentile of each projected channel.
        fitted_cells: cells the projection was fitted on.
    """

    method: str
    mean: npt.NDArray[np.float64]
    matrix: npt.NDArray[np.float64]
    lo: npt.NDArray[np.float64]
    hi: npt.NDArray[np.float64]
    fitted_cells: int

    def apply(self, values: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Project (..., F) embeddings to (..., 3) float32 in [0, 1]; NaN where the input is NaN."""
        x = np.asarray(values, dtype=np.float64)
        invalid = ~np.isfinite(x).all(axis=-1)
        projected = (np.nan_to_num(x) - self.mean) @ self.matrix
        scaled = np.clip((projected - self.lo) / np.where(self.hi > self.lo, self.hi - self.lo, 1.0), 0.0, 1.0)
        scaled[invalid] = np.nan
        return scaled.astype(np.float32)


def fit_rgb_projection(
    samples: npt.NDArray[np.floating], method: str = "ica", percentiles: tuple[float, float] = (2.0, 98.0),
    seed: int = 0,
) -> RGBProjection:
    """Fit a 3-channel ICA or PCA projection on sample embeddings.

    Args:
        samples: (N, F) embeddings; rows with any NaN are ignored.
        method: ``ica`` (scikit-learn FastICA, 3 components, unit-variance whitening, as used for
            the paper's maps) or ``pca`` (3 principal components, scikit-learn PCA).
        percentiles: lower and upper percentile (0..100) of each channel mapped to 0 and 1.
        seed: random state of FastICA.

    Returns:
        The fitted :class:`RGBProjection`.

    Raises:
        ConfigError: unknown method, bad percentiles, or fewer than 4 valid rows.
    """
    from sklearn.decomposition import PCA, FastICA

    if method not in PROJECTIONS:
        raise ConfigError(f"method={method!r}: use one of {', '.join(PROJECTIONS)}")
    low, high = percentiles
    if not 0.0 <= low < high <= 100.0:
        raise ConfigError(f"percentiles={percentiles}: expected 0 <= low < high <= 100, e.g. (2, 98)")
    x = np.asarray(samples, dtype=np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) < 4:
        raise ConfigError(
            f"only {len(x)} valid (non-NaN) cells to fit the {method.upper()} projection; need at least 4. "
            "Is the cube empty (all tiles skipped or not yet computed)?"
        )
    # Both methods start from the top 3 principal components. FastICA(n_components=3) whitens onto
    # exactly that subspace itself; doing it here first is equivalent and avoids its full SVD of
    # the (F, N) data (seconds for F = 1280).
    pca = PCA(n_components=3, random_state=seed).fit(x)
    components = np.asarray(pca.components_, dtype=np.float64)  # (3, F), orthonormal rows
    mean = np.asarray(pca.mean_, dtype=np.float64)
    matrix = components.T
    if method == "ica":
        ica = FastICA(n_components=3, whiten="unit-variance", random_state=seed, max_iter=1000, tol=1e-4)
        ica.fit((x - mean) @ matrix)
        unmixing = np.asarray(ica.components_, dtype=np.float64)  # (3, 3)
        mean = mean + np.asarray(ica.mean_, dtype=np.float64) @ components
        matrix = matrix @ unmixing.T
    projected = (x - mean) @ matrix
    lo, hi = np.percentile(projected, [low, high], axis=0)
    return RGBProjection(method, mean, matrix, lo, hi, len(x))


def assets_note(attrs: Mapping[str, Any]) -> str | None:
    """The label a picture of a cube made from non-published assets carries (None: published assets)."""
    if not attrs.get("range_dist:sample_assets", False):
        return None
    from range_dist.encoders.checkpoints import DEMO_TRAINED_LABEL  # loads torch: only for sample cubes

    if str(attrs.get("range_dist:assets_label", "")).lower().startswith(DEMO_TRAINED_LABEL):
        return f"{DEMO_TRAINED_LABEL}, not the published model"
    return "SAMPLE - untrained, not the published model"


def sample_cells(field: xr.DataArray, max_cells: int, seed: int = 0) -> npt.NDArray[np.float64]:
    """Up to ``max_cells`` valid cells of a (lat, lon, feature) field, read on a regular stride: (N, F) float64."""
    n_lat, n_lon = field.sizes["lat"], field.sizes["lon"]
    stride = max(1, int(np.ceil(np.sqrt(n_lat * n_lon / max(1, max_cells)))))
    picked = field.isel(lat=slice(None, None, stride), lon=slice(None, None, stride)).transpose("lat", "lon", "feature")
    values = np.asarray(picked.values, dtype=np.float64).reshape(-1, field.sizes["feature"])
    values = values[np.isfinite(values).all(axis=1)]
    if len(values) > max_cells:
        values = values[np.random.default_rng(seed).choice(len(values), max_cells, replace=False)]
    return values


def project_field(
    field: xr.DataArray, method: str = "ica", *, max_cells: int = 20000, seed: int = 0,
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> tuple[npt.NDArray[np.float32], RGBProjection]:
    """RGB of an embedding field (one β).

    Args:
        field: (lat, lon, feature) DataArray, lazy or in memory (e.g. :func:`select_beta`).
        method: ``ica`` or ``pca``.
        max_cells: size of the subsample the projection is fitted on.
        seed: sampling and FastICA seed.
        percentiles: robust stretch (see :func:`fit_rgb_projection`).

    Returns:
        ((lat, lon, 3) float32 RGB in [0, 1] with NaN for NaN cells, the fitted projection).
    """
    import dask.array as da

    projection = fit_rgb_projection(sample_cells(field, max_cells, seed), method, percentiles, seed)
    data = field.transpose("lat", "lon", "feature").data
    if isinstance(data, da.Array):
        data = data.rechunk({2: -1})
        rgb = data.map_blocks(projection.apply, dtype=np.float32, chunks=(*data.chunks[:2], (3,)))
        return np.asarray(rgb.compute(), dtype=np.float32), projection
    return projection.apply(np.asarray(data)), projection


def land_boundary(lat_edges: tuple[float, float], lon_edges: tuple[float, float],
                  shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """Pixels on the land/ocean boundary of global-land-mask, for an image covering a lat/lon box.

    Args:
        lat_edges: (north, south) edges of the image in degrees.
        lon_edges: (west, east) edges of the image in degrees.
        shape: (height, width) pixels.

    Returns:
        (height, width) bool: True where a pixel is land and a 4-neighbour is ocean (or the other
        way round, for ocean pixels to the east/south), i.e. a one-pixel coastline.
    """
    from range_dist.geo.land import land_mask

    h, w = shape
    north, south = lat_edges
    west, east = lon_edges
    lat = north - (np.arange(h) + 0.5) * (north - south) / h
    lon = west + (np.arange(w) + 0.5) * (east - west) / w
    lon_g, lat_g = np.meshgrid(lon, lat)
    land = land_mask(np.stack([lon_g.ravel(), lat_g.ravel()], axis=1)).reshape(h, w)
    edge = np.zeros_like(land)
    edge[:-1] |= land[:-1] != land[1:]
    edge[:, :-1] |= land[:, :-1] != land[:, 1:]
    return edge


def rgb_to_uint8(rgb: npt.NDArray[np.floating]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """(H, W, 3) floats in [0, 1] (NaN = no data) -> ((H, W, 3) uint8, (H, W) valid mask)."""
    valid = np.isfinite(rgb).all(axis=-1)
    return np.round(np.nan_to_num(rgb) * 255).astype(np.uint8), valid


def write_png(
    rgb: npt.NDArray[np.floating], path: str | Path, *, lat_edges: tuple[float, float],
    lon_edges: tuple[float, float], scale: int = 1, outline: bool = True, label: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write an RGB field as a PNG, upscaled, with NaN cells grey and a land outline.

    Args:
        rgb: (H, W, 3) float in [0, 1], NaN where there is no data; north-up.
        path: output ``.png``.
        lat_edges: (north, south) edges of the field, degrees (for the outline).
        lon_edges: (west, east) edges of the field, degrees.
        scale: integer upscaling factor (nearest neighbour); the PNG is (H*scale, W*scale).
        outline: draw the global-land-mask coastline.
        label: text drawn in the top-left corner (ASCII).
        metadata: PNG text chunks (tEXt) to store, e.g. provenance and a sample warning.

    Returns:
        The path written.
    """
    from PIL import Image, ImageDraw
    from PIL.PngImagePlugin import PngInfo

    if scale < 1:
        raise ConfigError(f"scale={scale}: expected a positive integer upscaling factor")
    pixels, valid = rgb_to_uint8(rgb)
    pixels[~valid] = NAN_COLOUR
    pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    if outline:
        pixels[land_boundary(lat_edges, lon_edges, pixels.shape[:2])] = OUTLINE_COLOUR
    image = Image.fromarray(pixels, mode="RGB")
    if label:
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, 7 * len(label) + 6, 14), fill=(255, 255, 255))
        draw.text((3, 2), label, fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(key, value)
    image.save(path, format="PNG", optimize=True, pnginfo=info)
    return path


def write_geotiff(rgb: npt.NDArray[np.floating], lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64],
                  path: str | Path, cog: bool = True) -> Path:
    """Write an RGB field as a 4-band uint8 (R, G, B, alpha) GeoTIFF in EPSG:4326.

    Args:
        rgb: (lat, lon, 3) float in [0, 1], NaN = no data (alpha 0).
        lat: (H,) cell-centre latitudes, descending, degrees.
        lon: (W,) cell-centre longitudes, ascending, degrees.
        path: output ``.tif``.
        cog: write a Cloud-Optimised GeoTIFF (GDAL COG driver) instead of a plain GeoTIFF.

    Returns:
        The path written.
    """
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    pixels, valid = rgb_to_uint8(rgb)
    bands = np.concatenate([pixels, (valid * 255).astype(np.uint8)[..., None]], axis=-1).transpose(2, 0, 1)
    arr = xr.DataArray(bands, dims=("band", "y", "x"),
                       coords={"band": [1, 2, 3, 4], "y": np.asarray(lat), "x": np.asarray(lon)})
    arr = arr.rio.write_crs(CRS_CODE).rio.set_spatial_dims(x_dim="x", y_dim="y")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"driver": "COG", "compress": "DEFLATE"} if cog else {"driver": "GTiff", "compress": "DEFLATE",
                                                                   "photometric": "RGB", "alpha": "YES"}
    arr.rio.to_raster(path, **kwargs)
    return path


@dataclass(frozen=True)
class MapResult:
    """What :func:`render_map` wrote for one β.

    Attributes:
        beta: the β level.
        png: the PNG path.
        geotiff: the GeoTIFF path, or None.
        size: (width, height) of the PNG in pixels.
        projection: the fitted projection.
    """

    beta: float
    png: Path
    geotiff: Path | None
    size: tuple[int, int]
    projection: RGBProjection


def default_scale(n_lon: int, target_width: int = TARGET_WIDTH) -> int:
    """Integer upscaling factor bringing a map of ``n_lon`` columns close to ``target_width`` px."""
    return max(1, round(target_width / max(1, n_lon)))


def render_map(
    cube: str | Path | xr.Dataset, beta: float, png: str | Path, *, method: str = "ica",
    geotiff: str | Path | None = None, scale: int | None = None, max_cells: int = 20000, seed: int = 0,
    outline: bool = True,
) -> MapResult:
    """Project one β level of a cube to RGB and write a PNG (and optionally a GeoTIFF/COG).

    Args:
        cube: cube path or opened dataset (:func:`range_dist.analysis.cube.open_cube`).
        beta: β level present in the cube (a heads-layout cube path: any β in [0, 1]).
        png: output PNG path.
        method: ``ica`` (default, as in the paper) or ``pca``.
        geotiff: optional GeoTIFF/COG path (cube resolution, RGBA uint8).
        scale: PNG upscaling factor; default :func:`default_scale` (about 720 px wide).
        max_cells: cells the projection is fitted on.
        seed: sampling and FastICA seed.
        outline: draw the land outline.

    Returns:
        A :class:`MapResult`.

    Raises:
        ConfigError: β not in the cube, unknown method, or no valid cells.
    """
    from range_dist.analysis.cube import GridAxes, _as_dataset, select_beta

    ds = _as_dataset(cube, beta)
    field = select_beta(ds, beta)
    rgb, projection = project_field(field, method, max_cells=max_cells, seed=seed)
    lat, lon = ds["lat"].values, ds["lon"].values
    axes = GridAxes.from_coords(lat, lon, "cube")
    lat_edges = (axes.lat0 + axes.dlat / 2, axes.lat0 - (axes.n_lat - 0.5) * axes.dlat)
    lon_edges = (axes.lon0 - axes.dlon / 2, axes.lon0 + (axes.n_lon - 0.5) * axes.dlon)
    factor = scale or default_scale(axes.n_lon)
    label = f"beta={float(beta):g} {method.upper()}"
    sample = bool(ds.attrs.get("range_dist:sample_assets", False))
    note = assets_note(ds.attrs)
    if note:  # a map of sample or demo assets must say so on the picture itself, not only in the cube
        label = f"{note} | {label}"
    metadata = {"Title": str(ds.attrs.get("title", "RANGE geo-embedding map")), "Label": label,
                "range_dist:beta": f"{float(beta):g}", "range_dist:method": method,
                "range_dist:sample_assets": "true" if sample else "false",
                "Software": f"range-dist {ds.attrs.get('range_dist:version', '')}".strip()}
    png_path = write_png(rgb, png, lat_edges=lat_edges, lon_edges=lon_edges, scale=factor, outline=outline,
                         label=label, metadata=metadata)
    tif_path = write_geotiff(rgb, lat, lon, geotiff) if geotiff is not None else None
    return MapResult(float(beta), png_path, tif_path, (axes.n_lon * factor, axes.n_lat * factor), projection)
