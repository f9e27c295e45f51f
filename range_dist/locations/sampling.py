"""Sample locations uniformly on the sphere's land, with stable ids (pure core + a Parquet edge).

Uniform on the sphere = equal-area: lon ~ U(-180, 180), lat = asin(U(-1, 1)). Land is decided by
``global-land-mask`` (30 arc-seconds). The same ``(count, seed)`` always gives the same points.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from range_dist.errors import ConfigError
from range_dist.geo.sphere import sample_land, sample_sphere

ID_COLUMN = "location_id"


@dataclass(frozen=True)
class Locations:
    """Locations to build database rows for.

    Attributes:
        ids: (N,) unique string ids (a row of the database is matched to its location by id).
        lonlat: (N, 2) float64 (lon, lat) degrees.
    """

    ids: tuple[str, ...]
    lonlat: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.lonlat):
            raise ConfigError(f"{len(self.ids)} ids for {len(self.lonlat)} locations")
        if len(set(self.ids)) != len(self.ids):
            seen: set[str] = set()
            dup = next(i for i in self.ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise ConfigError(f"location ids must be unique; {dup!r} is repeated")

    def __len__(self) -> int:
        return len(self.ids)


def sample_locations(count: int, seed: int = 0, land_only: bool = True, id_prefix: str = "loc") -> Locations:
    """Sample ``count`` locations uniform on the sphere (on land when ``land_only``).

    Args:
        count: number of locations (> 0).
        seed: random seed; the result is a pure function of (count, seed, land_only).
        land_only: reject ocean points (global-land-mask) and draw again until ``count`` remain.
        id_prefix: ids are ``{prefix}-{index:07d}``.

    Returns:
        Locations with ids in sampling order.

    Raises:
        ConfigError: count < 1.
    """
    if count < 1:
        raise ConfigError(f"--count {count}: need at least one location")
    rng = np.random.default_rng(seed)
    lonlat = sample_land(count, rng) if land_only else sample_sphere(count, rng)
    ids = tuple(f"{id_prefix}-{i:07d}" for i in range(count))
    return Locations(ids, lonlat)


def write_locations(locations: Locations, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``location_id, lon, lat`` to a Parquet or CSV file."""
    import pandas as pd

    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists; pass --overwrite to replace it")
    frame = pd.DataFrame({ID_COLUMN: list(locations.ids), "lon": locations.lonlat[:, 0],
                          "lat": locations.lonlat[:, 1]})
    if path.suffix.lower() == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        raise ConfigError(f"--out {path}: use a .parquet or .csv file")
    return path


def read_locations(path: str | Path) -> Locations:
    """Read locations from CSV/Parquet (``lon``, ``lat`` and optionally ``location_id`` columns).

    Without an id column, ids are ``row-{index}`` (the 0-based row of the file), so a rerun on the
    same file resumes correctly.
    """
    import pandas as pd

    from range_dist.locations.points_io import read_points

    path = Path(path)
    lonlat = read_points(path)
    frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    cols = {c.lower(): c for c in frame.columns}
    if ID_COLUMN in cols:
        ids = tuple(str(v) for v in frame[cols[ID_COLUMN]])
    else:
        ids = tuple(f"row-{i:07d}" for i in range(len(lonlat)))
    return Locations(ids, lonlat)
