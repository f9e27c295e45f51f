"""The plan of a database build: a pure value, made by reading only (a dry run prints it)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from range_dist.database.append import ExistingDatabase, inspect_database
from range_dist.errors import ConfigError
from range_dist.jobs.build.config import BuildConfig
from range_dist.locations.sampling import Locations, read_locations
from range_dist.util.hashing import sha256_file
from range_dist.util.outputs import check_output_location

#: One location id, lon, lat (degrees): the unit a reader works on.
LocationRow = tuple[str, float, float]


@dataclass(frozen=True)
class BuildPlan:
    """What a build will read, compute and write.

    Attributes:
        config: the settings.
        locations: all locations of the run (after ``limit``).
        todo: indices into ``locations`` still without a row.
        existing: what is at ``config.out`` now (create, resume or replace).
        attrs: the database attributes the run writes (identity keys are checked on resume).
    """

    config: BuildConfig
    locations: Locations
    todo: tuple[int, ...]
    existing: ExistingDatabase
    attrs: Mapping[str, Any]

    @property
    def done(self) -> int:
        return len(self.locations) - len(self.todo)

    def batches(self) -> list[list[LocationRow]]:
        """The work units: ``batch_size`` locations each (nearby ones together with grouped searches)."""
        todo = list(self.todo)
        cell = self.config.search_group_deg
        if cell is not None:  # batches of nearby locations, so that grouped searches cover several
            lonlat = self.locations.lonlat
            todo.sort(key=lambda i: (math.floor(lonlat[i, 1] / cell), math.floor(lonlat[i, 0] / cell), i))
        rows = [(self.locations.ids[i], float(self.locations.lonlat[i, 0]), float(self.locations.lonlat[i, 1]))
                for i in todo]
        size = self.config.batch_size
        return [rows[i : i + size] for i in range(0, len(rows), size)]

    def describe(self) -> str:
        """The full plan, for ``--dry-run`` and the start of a run."""
        c = self.config
        action = {"create": "create it", "resume": f"resume it ({self.existing.rows} rows there)",
                  "replace": "DELETE and replace the existing database (--overwrite)"}[self.existing.action]
        search = c.search_config()
        return "\n".join([
            "build-db plan:",
            f"  read:     {c.locations} ({len(self.locations)} locations"
            f"{'' if c.limit is None else f', limit {c.limit}'}); "
            f"STAC {search.url} [{search.collection}], {c.datetime}, cloud <= {c.max_cloud}%",
            f"  compute:  {len(self.todo)} chips of {c.chip_size}² px in {len(self.batches())} batch(es) of "
            f"{c.batch_size} ({self.done} already done); keys {c.key_encoder}, values {c.value_encoder}, "
            f"radiometry {c.radiometry}; executor {c.executor}",
            f"  write:    {c.out}: {action}",
        ])

    def __repr__(self) -> str:
        return self.describe()


def _sha256(path: Path | None) -> str | None:
    return sha256_file(path) if path is not None and Path(path).exists() else None


def database_attrs(config: BuildConfig) -> dict[str, Any]:
    """Group attributes describing how the rows were made (identity keys checked on resume)."""
    from range_dist import __version__
    from range_dist.encoders.image import RGB_RENDERING, get_spec

    key_spec, value_spec = get_spec(config.key_encoder), get_spec(config.value_encoder)
    search = config.search_config()
    return {
        "origin": f"stac:{search.url} collection={search.collection}",
        "key_model": f"{key_spec.name}: {key_spec.architecture}, {key_spec.dim}-d",
        "value_model": f"{value_spec.name}: {value_spec.architecture}, {value_spec.dim}-d",
        "key_encoder": key_spec.describe(),
        "value_encoder": value_spec.describe(),
        "key_checkpoint_sha256": _sha256(config.key_checkpoint),
        "value_checkpoint_sha256": _sha256(config.value_checkpoint),
        "radiometry": config.radiometry,
        "rgb_rendering": RGB_RENDERING,
        "chip_size": config.chip_size,
        "chip_resampling": "20/60 m bands and SCL upsampled to 10 m by pixel replication (nearest)",
        "datetime": config.datetime,
        "max_cloud_percent": config.max_cloud,
        "max_nodata": config.max_nodata,
        "rows_made_by": "range-dist build-db: one chip per location id; rows aligned by location_id",
        "range_dist_version": __version__,
    }


def build_plan(config: BuildConfig) -> BuildPlan:
    """Read the locations and what is at ``out`` (nothing is written), and list the locations to do.

    Raises:
        ConfigError, CoordinateError: a bad locations file.
        StoreMismatchError, DatabaseError: ``out`` holds something this run may not resume or replace.
    """
    for flag, path in (("--key-checkpoint", config.key_checkpoint), ("--value-checkpoint", config.value_checkpoint)):
        if path is None:
            raise ConfigError(f"build-db needs {flag} (the SatCLIP image encoder's .ckpt and the SatMAE .pth or "
                              ".safetensors); there is no default checkpoint")
        if not Path(path).is_file():
            raise ConfigError(f"{flag} {path} does not exist (or is not a file)")
    locations = read_locations(config.locations)
    if config.limit is not None:
        locations = Locations(locations.ids[: config.limit], locations.lonlat[: config.limit])
    attrs = database_attrs(config)
    check_output_location(config.out)
    existing = inspect_database(config.out, attrs, overwrite=config.overwrite)
    todo = tuple(i for i, loc in enumerate(locations.ids) if loc not in existing.done_ids)
    return BuildPlan(config, locations, todo, existing, attrs)
