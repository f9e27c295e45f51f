"""Global regular lat/lon grids and their tiles (pure: no I/O).

Cell centres are north-up (lat descending from 90 - res/2) and lon ascending from -180 + res/2.
A bbox keeps the cells whose centres fall inside it (edges included). Tiles are square blocks of
``tile_size`` cells aligned to the grid origin; a tile is the unit of work and one Zarr shard.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from range_dist.config.values import BBox, parse_bbox
from range_dist.errors import ConfigError

#: Smallest cell size in degrees.
MIN_RESOLUTION = 1e-4


@dataclass(frozen=True)
class GridSpec:
    """A regular lat/lon grid of cell centres.

    Attributes:
        resolution: cell size in degrees (both axes).
        bbox: (west, south, east, north) degrees; cells whose centres fall inside are kept.
    """

    resolution: float
    bbox: BBox = (-180.0, -90.0, 180.0, 90.0)

    def __post_init__(self) -> None:
        res = self.resolution
        if not (isinstance(res, (int, float)) and math.isfinite(res) and 0 < res <= 90):
            raise ConfigError(f"resolution={res!r}: expected a cell size in degrees in (0, 90], e.g. 0.25")
        if res < MIN_RESOLUTION:  # 180/res would also pass the whole-multiple test below by rounding
            raise ConfigError(f"resolution={res!r}: below {MIN_RESOLUTION}° (about 11 m at the equator) is not "
                              "supported; the grid would hold more than 6.5e12 cells")
        if abs(180.0 / res - round(180.0 / res)) > 1e-9:
            raise ConfigError(f"resolution={res}: 180 must be a whole multiple of it (e.g. 1, 0.5, 0.25, 0.1)")
        object.__setattr__(self, "bbox", parse_bbox(self.bbox))
        if self.shape[0] == 0 or self.shape[1] == 0:
            raise ConfigError(f"bbox={self.bbox} contains no cell centre of the {res}° grid; enlarge it")

    @property
    def global_shape(self) -> tuple[int, int]:
        return round(180.0 / self.resolution), round(360.0 / self.resolution)

    def _global_lat(self) -> npt.NDArray[np.float64]:
        n = self.global_shape[0]
        return np.asarray(90.0 - (np.arange(n) + 0.5) * self.resolution, dtype=np.float64)

    def _global_lon(self) -> npt.NDArray[np.float64]:
        n = self.global_shape[1]
        return np.asarray(-180.0 + (np.arange(n) + 0.5) * self.resolution, dtype=np.float64)

    @property
    def _lat_range(self) -> tuple[int, int]:
        lat = self._global_lat()
        idx = np.flatnonzero((lat >= self.bbox[1] - 1e-9) & (lat <= self.bbox[3] + 1e-9))
        return (int(idx[0]), int(idx[-1]) + 1) if len(idx) else (0, 0)

    @property
    def _lon_range(self) -> tuple[int, int]:
        lon = self._global_lon()
        idx = np.flatnonzero((lon >= self.bbox[0] - 1e-9) & (lon <= self.bbox[2] + 1e-9))
        return (int(idx[0]), int(idx[-1]) + 1) if len(idx) else (0, 0)

    @property
    def lat(self) -> npt.NDArray[np.float64]:
        """Cell-centre latitudes, descending (north-up), degrees."""
        a, b = self._lat_range
        return self._global_lat()[a:b]

    @property
    def lon(self) -> npt.NDArray[np.float64]:
        """Cell-centre longitudes, ascending, degrees."""
        a, b = self._lon_range
        return self._global_lon()[a:b]

    @property
    def shape(self) -> tuple[int, int]:
        """(n_lat, n_lon) cells."""
        a, b = self._lat_range
        c, d = self._lon_range
        return b - a, d - c

    @property
    def points(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        """GDAL-order affine of the cell edges: (x0, dx, 0, y0, 0, -dy)."""
        res = self.resolution
        return (float(self.lon[0] - res / 2), res, 0.0, float(self.lat[0] + res / 2), 0.0, -res)

    def describe(self) -> dict[str, object]:
        return {"resolution": self.resolution, "bbox": list(self.bbox), "shape": list(self.shape)}


@dataclass(frozen=True, order=True)
class TileKey:
    """One tile: rows [y0, y1) and columns [x0, x1) of the grid; (row, col) is its tile index."""

    row: int
    col: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def points(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)

    def __str__(self) -> str:
        return f"tile({self.row},{self.col})"


def tile_counts(shape: tuple[int, int], tile_size: int) -> tuple[int, int]:
    return math.ceil(shape[0] / tile_size), math.ceil(shape[1] / tile_size)


def iter_tiles(grid: GridSpec, tile_size: int) -> Iterator[TileKey]:
    """Tiles of ``tile_size`` × ``tile_size`` cells in row-major order (edge tiles may be smaller)."""
    if tile_size < 1:
        raise ConfigError(f"tile_size={tile_size}: expected a positive number of cells, e.g. 256")
    n_lat, n_lon = grid.shape
    rows, cols = tile_counts(grid.shape, tile_size)
    for r in range(rows):
        for c in range(cols):
            yield TileKey(r, c, r * tile_size, min((r + 1) * tile_size, n_lat), c * tile_size,
                          min((c + 1) * tile_size, n_lon))


def tile_lonlat(grid: GridSpec, tile: TileKey) -> npt.NDArray[np.float64]:
    """(h*w, 2) cell-centre (lon, lat) of a tile, row-major (lat descending, then lon ascending)."""
    lon, lat = np.meshgrid(grid.lon[tile.x0 : tile.x1], grid.lat[tile.y0 : tile.y1])
    return np.stack([lon.ravel(), lat.ravel()], axis=1)
