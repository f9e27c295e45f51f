"""Coordinate validation and conversions (pure numpy/torch, no I/O).

Everywhere in range_dist, as in SatCLIP and RANGE, a location is ``(lon, lat)`` in degrees,
float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from range_dist.errors import CoordinateError


def validate_lonlat(
    lonlat: npt.ArrayLike,
    *,
    source: str = "lonlat",
    row_labels: Sequence[int] | npt.NDArray[np.int64] | None = None,
    row_label_name: str = "row",
) -> npt.NDArray[np.float64]:
    """Check and convert locations to a contiguous (N, 2) float64 array of (lon, lat) degrees.

    Args:
        lonlat: array-like of shape (N, 2): longitude, latitude in degrees.
        source: what the locations came from (a file name, an argument), used in messages.
        row_labels: optional label per row used in messages instead of the 0-based index (e.g.
            the 1-based line number of a CSV file).
        row_label_name: what ``row_labels`` count ("row", "CSV line", ...).

    Returns:
        ndarray (N, 2) float64.

    Raises:
        CoordinateError: wrong shape, or the first NaN / infinite / out-of-range row, named.
    """
    arr = np.asarray(lonlat, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise CoordinateError(
            f"{source}: expected an array of shape (N, 2) holding (lon, lat) in degrees, got shape "
            f"{arr.shape}. Pass one row per location with longitude first."
        )
    lon, lat = arr[:, 0], arr[:, 1]
    bad = ~np.isfinite(arr).all(axis=1) | (np.abs(lon) > 180.0) | (np.abs(lat) > 90.0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        label = int(row_labels[i]) if row_labels is not None else i
        what = "is not finite" if not np.isfinite(arr[i]).all() else "is out of range"
        raise CoordinateError(
            f"{source}: {row_label_name} {label} has lon={float(arr[i, 0])}, lat={float(arr[i, 1])}, which "
            f"{what}; expected lon in [-180, 180] and lat in [-90, 90] degrees "
            f"({int(bad.sum())} bad row(s) in all). Fix or drop those rows (are lon and lat swapped?)."
        )
    return np.ascontiguousarray(arr)


def lonlat_to_xyz(lonlat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Unit vectors on the sphere for (lon, lat) degrees.

    Args:
        lonlat: (N, 2) float64 degrees.

    Returns:
        (N, 3) float64: x = cos(lat)cos(lon), y = cos(lat)sin(lon), z = sin(lat).
    """
    lon = np.radians(lonlat[:, 0])
    lat = np.radians(lonlat[:, 1])
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)], axis=1)
