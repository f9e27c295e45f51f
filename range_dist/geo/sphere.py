"""The one uniform sampler on the sphere (equal-area), optionally restricted to land."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from range_dist.geo.land import land_mask


def sample_sphere(count: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """``count`` points uniform on the sphere: lon ~ U(-180, 180), lat = asin(U(-1, 1)).

    Returns:
        (count, 2) float64 (lon, lat) degrees.
    """
    lon = rng.uniform(-180.0, 180.0, count)
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, count)))
    return np.stack([lon, lat], axis=1)


def sample_land(count: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """``count`` points uniform on the sphere's land (:func:`~range_dist.geo.land.land_mask`).

    Draws batches from :func:`sample_sphere` and keeps the land points, in order, so the result
    is a pure function of the generator's state.

    Returns:
        (count, 2) float64 (lon, lat) degrees.
    """
    kept: list[npt.NDArray[np.float64]] = []
    have = 0
    while have < count:
        batch = sample_sphere(max(1024, 4 * (count - have)), rng)
        batch = batch[land_mask(batch)]
        kept.append(batch)
        have += len(batch)
    return np.concatenate(kept)[:count] if kept else np.empty((0, 2))
