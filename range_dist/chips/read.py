"""Read a chip around a point from a scene's COGs with windowed HTTP range reads (I/O edge).

The chip is ``size`` × ``size`` pixels of the scene's native 10 m UTM grid, centred on the pixel
nearest the point. 20 m and 60 m bands (and SCL) are read over the covering coarse window and
upsampled to 10 m by pixel replication (nearest), which keeps the grids aligned exactly (all
Sentinel-2 grids of a tile share one origin). Parts of the window outside the raster are nodata (0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from range_dist.chips.gdal import gdal_settings
from range_dist.errors import ChipReadError
from range_dist.stac.scenes import SceneRef


@dataclass(frozen=True)
class Chip:
    """A chip read from one scene.

    Attributes:
        dn: (12, size, size) uint16 DN of the L2A bands (``L2A_BANDS`` order), 0 = nodata.
        scl: (size, size) uint8 scene classification.
        center_lonlat: (lon, lat) degrees of the chip's centre.
        crs: the scene's CRS (e.g. ``EPSG:32633``).
        bounds: (left, bottom, right, top) metres in ``crs``.
    """

    dn: npt.NDArray[np.uint16]
    scl: npt.NDArray[np.uint8]
    center_lonlat: tuple[float, float]
    crs: str
    bounds: tuple[float, float, float, float]


@dataclass(frozen=True)
class ChipGeometry:
    """Where the chip lies in the scene's 10 m grid (pure result of :func:`chip_geometry`).

    Attributes:
        left, top: the chip's upper-left corner (metres, scene CRS).
        resolution: pixel size (metres).
        size: pixels per side.
    """

    left: float
    top: float
    resolution: float
    size: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        span = self.resolution * self.size
        return (self.left, self.top - span, self.left + span, self.top)

    @property
    def center(self) -> tuple[float, float]:
        half = self.resolution * self.size / 2
        return (self.left + half, self.top - half)


def chip_geometry(transform: tuple[float, ...], x: float, y: float, size: int) -> ChipGeometry:
    """The ``size``-pixel window of a north-up grid whose centre is nearest to (x, y).

    Args:
        transform: affine (a, b, c, d, e, f) of the 10 m grid (a > 0, e < 0, b = d = 0).
        x, y: the point in the grid's CRS (metres).
        size: pixels per side.
    """
    a, _, c, _, e, f = transform[:6]
    col0 = round((x - c) / a - size / 2)
    row0 = round((y - f) / e - size / 2)
    return ChipGeometry(left=c + col0 * a, top=f + row0 * e, resolution=a, size=size)


def coarse_window(transform: tuple[float, ...], geom: ChipGeometry) -> tuple[int, int, int, int, int, int, int]:
    """(row0, col0, rows, cols, factor, row_off, col_off) to read from a band's grid (pure).

    ``factor`` = band pixel size / chip pixel size (1, 2 or 6); the window read at the band's
    resolution, replicated ``factor`` times and cut at (row_off, col_off), is the chip.
    """
    a, _, c, _, e, f = transform[:6]
    factor = max(1, round(a / geom.resolution))
    cc = (geom.left - c) / a
    rr = (geom.top - f) / e
    col0, row0 = math.floor(cc + 1e-6), math.floor(rr + 1e-6)
    col_off, row_off = round((cc - col0) * factor), round((rr - row0) * factor)
    cols = math.ceil((col_off + geom.size) / factor)
    rows = math.ceil((row_off + geom.size) / factor)
    return row0, col0, rows, cols, factor, row_off, col_off


def _read_padded(ds: Any, row0: int, col0: int, rows: int, cols: int) -> npt.NDArray[Any]:
    """Band 1 over a window, zero outside the raster."""
    from rasterio.windows import Window

    out = np.zeros((rows, cols), dtype=ds.dtypes[0])
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + rows, ds.height), min(col0 + cols, ds.width)
    if r1 > r0 and c1 > c0:
        out[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
    return out


def _classify(exc: Exception) -> str:
    text = str(exc).lower()
    if any(w in text for w in ("http", "curl", "timed out", "connection", "429", "500", "503")):
        return "http_error"
    return "corrupt_file"


def _sign(href: str) -> str:
    try:
        import planetary_computer  # type: ignore[import-not-found]
    except ImportError:
        return href
    return str(planetary_computer.sign(href))


def _read_band(href: str, geom: ChipGeometry, settings: Mapping[str, str | int]) -> npt.NDArray[Any]:
    import rasterio

    with rasterio.Env(**settings), rasterio.open(href) as ds:
        row0, col0, rows, cols, factor, row_off, col_off = coarse_window(tuple(ds.transform), geom)
        data = _read_padded(ds, row0, col0, rows, cols)
    if factor > 1:
        data = np.repeat(np.repeat(data, factor, axis=0), factor, axis=1)
    return data[row_off : row_off + geom.size, col_off : col_off + geom.size]


def read_chip(scene: SceneRef, lon: float, lat: float, size: int = 256,
              settings: Mapping[str, str] | None = None, threads: int = 4) -> Chip:
    """Read the ``size`` × ``size`` chip around (lon, lat) from ``scene``.

    Args:
        scene: the scene's band hrefs (http(s) URLs or local paths).
        lon, lat: the point, degrees.
        size: chip side in 10 m pixels (256 as S2-100K).
        settings: GDAL settings (default :data:`~range_dist.chips.gdal.COG_SETTINGS`).
        threads: bands read concurrently.

    Returns:
        The chip (uint16 DN, uint8 SCL, centre lon/lat).

    Raises:
        ChipReadError: with ``reason`` ``http_error`` (after GDAL's retries) or ``corrupt_file``.
    """
    import rasterio
    from rasterio.warp import transform as warp_transform

    env = gdal_settings(settings)
    hrefs = [*scene.band_hrefs(), scene.scl_href]
    if scene.sign:
        hrefs = [_sign(h) for h in hrefs]
    try:
        with rasterio.Env(**env), rasterio.open(hrefs[3]) as ref:  # B04, a 10 m band
            crs, transform = ref.crs, tuple(ref.transform)
        xs, ys = warp_transform("EPSG:4326", crs, [lon], [lat])
        geom = chip_geometry(transform, xs[0], ys[0], size)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            bands = list(pool.map(lambda h: _read_band(h, geom, env), hrefs))
        clon, clat = warp_transform(crs, "EPSG:4326", [geom.center[0]], [geom.center[1]])
    except (rasterio.errors.RasterioError, OSError, ValueError) as exc:
        reason = _classify(exc)
        raise ChipReadError(f"scene {scene.item_id}: reading the chip at ({lon:.5f}, {lat:.5f}) failed: {exc}",
                            reason=reason) from exc
    dn = np.stack(bands[:-1]).astype(np.uint16, copy=False)
    scl = bands[-1].astype(np.uint8, copy=False)
    return Chip(dn=dn, scl=scl, center_lonlat=(float(clon[0]), float(clat[0])), crs=str(crs), bounds=geom.bounds)
