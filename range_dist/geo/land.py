"""The one land mask of range_dist: global-land-mask (GLOBE, 30 arc-seconds), by point."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def land_mask(lonlat: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """True where a (lon, lat) point is on land.

    Args:
        lonlat: (N, 2) float64 degrees.

    Returns:
        (N,) bool.
    """
    from global_land_mask import globe

    # The mask's own grid is open at the poles and the antimeridian: clip onto it.
    lat = np.clip(lonlat[:, 1], -89.9999, 89.9999)
    lon = np.clip(lonlat[:, 0], -179.9999, 179.9999)
    return np.asarray(globe.is_land(lat, lon), dtype=bool)
