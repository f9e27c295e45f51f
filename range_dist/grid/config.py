"""Configuration of the embed-grid job: typed, frozen, loaded from YAML and/or flags.

YAML keys equal the field names below; command-line flags override the YAML. Loose input (a
bbox as "w,s,e,n" text, β as "0,0.5,1") is converted to canonical form here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from range_dist.errors import ConfigError
from range_dist.grid.spec import BBox, GridSpec
from range_dist.retrieval.engine import PRECISIONS

DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class GridJobConfig:
    """Everything the embed-grid job needs.

    Attributes:
        resolution: grid cell size in degrees.
        bbox: (west, south, east, north) degrees; None = the whole globe.
        land_only: embed only cells whose centre is on land (global-land-mask); ocean cells are NaN
            and all-ocean tiles are skipped without computing.
        variant: ``range+`` or ``range``.
        betas: β levels of the cube (RANGE+).
        satclip: SatCLIP checkpoint; None = the published one if fetched, else the sample assets.
        db: retrieval database (.npz or .zarr); None as for ``satclip``.
        out: output Zarr store.
        dtype: ``float16`` (default) or ``float32`` cube values.
        tile_size: cells per tile side; one tile = one unit of work = one Zarr shard.
        chunk_size: cells per inner Zarr chunk side (must divide tile_size); sets analysis read size.
        num_actors: database replicas (actor groups); None = one per GPU, else per cpus_per_actor CPUs.
        gpus_per_actor: GPUs per actor; None = 1 when the cluster has GPUs, else 0.
        cpus_per_actor: CPUs (and torch threads) per actor; None = all CPUs of a node / num_actors.
        db_shards: actors per replica, each holding 1/db_shards of the rows (merged exactly).
        ray_address: None = start a local Ray in-process (or join $RAY_ADDRESS inside a Ray job);
            ``auto`` or ``ray://...`` / ``host:port`` to join a cluster.
        overwrite: replace an existing store made with different settings.
        harmonics: spherical-harmonics mode (default: as the checkpoint was trained).
        max_in_flight: tiles queued per actor (bounded backlog).
        memory_budget_mb: per-actor bound on the retrieval working memory.
        executor: ``ray`` (default) or ``local`` (this process, no Ray; for debugging).
        mode: retrieval ``exact`` (default) or ``fast`` (approximations validated to ``tolerance`` on a
            sample of the grid's own points before the run; see :mod:`range_dist.fast_mode`).
        tolerance: the fast mode's bound on ``||fast - exact|| / ||exact||`` per cell and β.
        validation_points: cells in each of the fast mode's two validation samples.
        precision: matrix products on GPU actors: ``fp32`` (default), ``tf32`` or ``bf16`` (float32
            softmax statistics in all); CPU actors always use float32.
        extra: testing knobs, not part of the YAML schema (``kill_after_tiles`` injects actor deaths).
    """

    resolution: float = 1.0
    bbox: BBox | None = None
    land_only: bool = False
    variant: str = "range+"
    betas: tuple[float, ...] = (0.0, 0.5, 1.0)
    satclip: Path | None = None
    db: Path | None = None
    out: Path = Path("runs/range_grid.zarr")
    dtype: str = "float16"
    tile_size: int = 256
    chunk_size: int = 32
    num_actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: int | None = None
    db_shards: int = 1
    ray_address: str | None = None
    overwrite: bool = False
    harmonics: str | None = None
    max_in_flight: int = 2
    memory_budget_mb: float = 512.0
    executor: str = "ray"
    mode: str = "exact"
    tolerance: float | None = None
    validation_points: int = 256
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        from range_dist.cli import parse_betas

        if self.variant not in ("range+", "range"):
            raise ConfigError(f"variant={self.variant!r}: use 'range+' or 'range'")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype={self.dtype!r}: use one of {', '.join(DTYPES)}")
        object.__setattr__(self, "betas", parse_betas(",".join(str(b) for b in self.betas)))
        if self.tile_size < 1 or self.chunk_size < 1 or self.tile_size % self.chunk_size:
            raise ConfigError(
                f"tile_size={self.tile_size}, chunk_size={self.chunk_size}: both must be positive and "
                "chunk_size must divide tile_size (e.g. 256 and 32)"
            )
        if self.db_shards < 1:
            raise ConfigError(f"db_shards={self.db_shards}: expected >= 1")
        if self.num_actors is not None and self.num_actors < 1:
            raise ConfigError(f"num_actors={self.num_actors}: expected >= 1")
        if self.max_in_flight < 1:
            raise ConfigError(f"max_in_flight={self.max_in_flight}: expected >= 1")
        if self.executor not in ("ray", "local"):
            raise ConfigError(f"executor={self.executor!r}: use 'ray' or 'local'")
        if self.mode not in ("exact", "fast"):
            raise ConfigError(f"mode={self.mode!r}: use 'exact' or 'fast'")
        if self.mode == "fast":
            if self.tolerance is None or not 0.0 < self.tolerance < 1.0:
                raise ConfigError(f"mode=fast needs a tolerance in (0, 1), got {self.tolerance!r}; "
                                  "e.g. --tolerance 1e-3 (relative error per cell)")
            if self.db_shards > 1:
                raise ConfigError(f"mode=fast with db_shards={self.db_shards}: shards merge exact statistics; "
                                  "use db_shards=1 (replicas) with the fast mode")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}: use {', '.join(PRECISIONS)} (GPU actors only)")
        if self.validation_points < 16:
            raise ConfigError(f"validation_points={self.validation_points}: expected >= 16")
        if Path(self.out).suffix != ".zarr":
            raise ConfigError(f"out={self.out}: the output store must end in .zarr")
        self.grid  # noqa: B018 - validates resolution and bbox

    @property
    def grid(self) -> GridSpec:
        return GridSpec(self.resolution, self.bbox or (-180.0, -90.0, 180.0, 90.0))

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "extra"]

    @classmethod
    def from_mapping(cls, values: dict[str, Any], source: str = "config") -> GridJobConfig:
        """Build from a mapping of field names (YAML or parsed flags), converting loose values."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; known keys: {', '.join(cls.field_names())}")
        clean: dict[str, Any] = {}
        for key, value in values.items():
            if value is None:
                clean[key] = None
            elif key == "bbox":
                clean[key] = _parse_bbox(value, source)
            elif key == "betas":
                clean[key] = tuple(float(b) for b in (value.split(",") if isinstance(value, str) else value))
            elif key in ("satclip", "db", "out"):
                clean[key] = Path(value)
            elif key in ("tile_size", "chunk_size", "num_actors", "cpus_per_actor", "db_shards", "max_in_flight",
                         "validation_points"):
                clean[key] = _as_int(value, key, source)
            elif key in ("resolution", "gpus_per_actor", "memory_budget_mb", "tolerance"):
                clean[key] = _as_float(value, key, source)
            elif key in ("land_only", "overwrite"):
                if not isinstance(value, bool):
                    raise ConfigError(f"{source}: {key}={value!r} must be true or false")
                clean[key] = value
            else:
                clean[key] = str(value)
        return cls(**clean)

    @classmethod
    def load(cls, path: Path | None, overrides: dict[str, Any]) -> GridJobConfig:
        """YAML file (optional) with flag overrides (None values are ignored)."""
        import yaml

        values: dict[str, Any] = {}
        if path is not None:
            if not Path(path).exists():
                raise ConfigError(f"config file {path} does not exist")
            try:
                loaded = yaml.safe_load(Path(path).read_text()) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
            if not isinstance(loaded, dict):
                raise ConfigError(f"config file {path}: expected a mapping of settings at the top level")
            values.update(loaded)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values, source=str(path) if path else "flags")

    def with_assets(self, satclip: Path, db: Path) -> GridJobConfig:
        return replace(self, satclip=satclip, db=db)


def _parse_bbox(value: Any, source: str) -> BBox:
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        bbox = tuple(float(p) for p in parts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: bbox={value!r}: expected four numbers west,south,east,north") from exc
    if len(bbox) != 4:
        raise ConfigError(f"{source}: bbox={value!r}: expected four numbers west,south,east,north")
    return bbox  # type: ignore[return-value]


def _as_int(value: Any, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{source}: {key}={value!r} must be an integer")
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"{source}: {key}={value!r} must be an integer") from exc


def _as_float(value: Any, key: str, source: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {key}={value!r} must be a number") from exc
