"""Settings of ``range-dist embed-grid``, declared once: YAML keys and flags both come from here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from range_dist.config.schema import option
from range_dist.config.values import (
    BBox,
    check_tolerance,
    parse_bbox,
    parse_betas,
    parse_mode,
    parse_precision,
    parse_storage_options,
    parse_store,
    parse_variant,
)
from range_dist.errors import ConfigError
from range_dist.grid.spec import GridSpec
from range_dist.util.downloads import parse_input, parse_remote
from range_dist.util.stores import OBJECT_STORES, StoreLocation, register_storage_options

GLOBE: BBox = (-180.0, -90.0, 180.0, 90.0)


def parse_satclip(value: Any) -> Path | str | None:
    """``satclip``: a local Path, or URL text (s3/gs/az/https/http, optional ``#sha256=``) downloaded at load."""
    if value is None:  # not given (a YAML round trip writes `satclip: null`)
        return None
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError(value)
    return parse_input(value, "satclip")


def parse_db(value: Any) -> Path | str | None:
    """``db``: a local Path, or URL text (an ``.npz`` is downloaded at load; Zarr on s3/gs/az is read in place)."""
    if value is None:  # not given (a YAML round trip writes `db: null`)
        return None
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError(value)
    return parse_input(value, "db")


@dataclass(frozen=True)
class GridJobConfig:
    """Everything the embed-grid job needs (YAML keys = field names; flags override the YAML)."""

    resolution: float = option(1.0, help="grid cell size in degrees (180 must be a whole multiple of it)")
    bbox: BBox | None = option(None, parse=parse_bbox, metavar="W,S,E,N",
                               help="keep the cells whose centres fall in WEST,SOUTH,EAST,NORTH degrees "
                                    "(default: the globe)")
    land_only: bool = option(False, help="embed land cells only; ocean cells are NaN, all-ocean tiles are skipped")
    variant: str = option("range+", parse=parse_variant, help="range+ (semantic + spatial heads) or range")
    betas: tuple[float, ...] = option((0.0, 0.5, 1.0), parse=parse_betas, metavar="B1,B2,...",
                                      help="β levels of the cube, each in [0, 1]")
    satclip: Path | str | None = option(
        None, parse=parse_satclip,
        help="SatCLIP checkpoint: a local path, or an s3://, gs://, az://, https:// URL (downloaded once into the "
             "cache, SHA-256 checked; pin with #sha256=HEX) (default: the published one, fetched)")
    db: Path | str | None = option(
        None, parse=parse_db,
        help="retrieval database, .npz or .zarr: a local path, or a URL (an .npz is downloaded like --satclip; a "
             ".zarr on s3://, gs://, az:// is read in place) (default: the published one, fetched)")
    trust_checkpoint: bool = option(False, help="allow a --satclip checkpoint that needs full pickle loading, "
                                                "which can run code: only for files whose origin you know")
    sample_assets: bool = option(False, help="without --satclip/--db, use UNTRAINED sample assets instead of the "
                                             "published ones (demos and tests only)")
    out: Path | str = option(Path("runs/range_grid.zarr"), parse=parse_store,
                             help="output Zarr store (.zarr): a local path, or s3://, gs://, az:// (credentials "
                                  "from the environment, e.g. AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL)")
    storage_options: tuple[tuple[str, str], ...] = option(
        (), parse=parse_storage_options, cli=False,
        help="YAML only (a flag would show secrets in the process list): fsspec options of an object-store "
             "--out (and of --satclip / --db URLs on that kind of store), e.g. {endpoint_url: http://host:8333, "
             "region: eu-west-1}; never stored or printed")
    dtype: Literal["float16", "float32"] = option("float16", help="cube values (with --quantize int8: unused, the "
                                                                  "values are quantised from float32)")
    layout: Literal["beta", "heads"] = option(
        "beta", help="beta: one [H_beta | q_hat] per β level (K·(D+256) values per cell); heads: H_geo, H_sem and "
                     "q_hat once per cell (2·D+256; RANGE: D+256), any β in [0, 1] blended exactly on read")
    quantize: Literal["none", "int8"] = option(
        "none", help="int8: int8 codes plus one float32 scale (max|x|/127) per cell and part; decoded on read")
    overviews: float | None = option(
        None, help="after the cube, add its overview pyramid (2× means, `range-dist overviews`) down to this cell "
                   "size in degrees, e.g. 2 (default: none)")
    tile_size: int = option(256, help="cells per tile side: one tile = one unit of work = one Zarr shard")
    chunk_size: int = option(32, help="cells per inner chunk side (divides tile_size; sets analysis read size)")
    num_actors: int | None = option(None, help="database replicas (default: one per GPU, else 1)")
    gpus_per_actor: float | None = option(None, help="GPUs per actor (default 1 when the cluster has GPUs, else 0)")
    cpus_per_actor: int | None = option(None, help="CPUs and torch threads per actor (default: shared out)")
    db_shards: int = option(1, help="actors per replica, each holding 1/S of the rows (merged exactly)")
    ray_address: str | None = option(None, help="Ray cluster to join ('auto', host:port); default: a local Ray, "
                                                "or $RAY_ADDRESS inside a Ray job")
    overwrite: bool = option(False, help="replace an existing cube made with other settings (after validation)")
    verify: bool = option(False, help="on resume, read back every done tile and compare its checksum (default: "
                                      "check that each done tile's data exists)")
    takeover: bool = option(False, help="take over the lease of an earlier run whose heartbeat is stale (a driver "
                                        "that died on another host); a live driver's lease is never taken over")
    harmonics: Literal["published", "exact", "closed-form"] | None = option(
        None, help="spherical harmonics (default: as the checkpoint was trained)")
    max_in_flight: int = option(2, help="tiles queued per replica")
    memory_budget_mb: float = option(512.0, help="retrieval working memory per actor, MiB")
    executor: Literal["ray", "local"] = option("ray", help="ray (actors) or local (this process, no Ray)")
    mode: str = option("exact", parse=parse_mode, help="retrieval: exact, or fast (approximations validated to "
                                                       "--tolerance on the grid's own cells)")
    tolerance: float | None = option(None, help="fast mode: largest ||fast - exact|| / ||exact|| per cell and β")
    validation_points: int = option(256, help="fast mode: cells in each of the two validation samples")
    precision: str = option("fp32", parse=parse_precision, help="matrix products on GPU actors: fp32, tf32 or bf16 "
                                                                "(CPU actors always use fp32)")

    def __repr__(self) -> str:
        # the dataclass repr would show storage_options' values, which may be secrets
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["storage_options"] = tuple((name, "***") for name, _ in self.storage_options)
        return f"GridJobConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def __post_init__(self) -> None:
        # Library callers construct the dataclass directly: the same parsers as the YAML and flags.
        object.__setattr__(self, "betas", parse_betas(self.betas))
        object.__setattr__(self, "out", parse_store(self.out))
        if self.satclip is not None:
            object.__setattr__(self, "satclip", parse_satclip(self.satclip))
        if self.db is not None:
            object.__setattr__(self, "db", parse_db(self.db))
        if isinstance(self.storage_options, Mapping):
            object.__setattr__(self, "storage_options", parse_storage_options(self.storage_options))
        if self.storage_options:
            # registered for the bucket in this process: the store is passed on as text (module notes of
            # range_dist.util.stores); they are never part of the plan, the attributes or the report. Inputs
            # on an object store of the same kind (--satclip / --db s3://...) are read with them too: one
            # YAML block configures the job's one object store
            register_storage_options(self.out, dict(self.storage_options))
            out_scheme = StoreLocation.parse(self.out).scheme
            for value in (self.satclip, self.db):
                remote = parse_remote(value) if isinstance(value, str) else None
                if remote is not None and remote.scheme in OBJECT_STORES and \
                        (out_scheme == remote.scheme or out_scheme == "file"):
                    register_storage_options(remote.url, dict(self.storage_options))
        parse_variant(self.variant)
        parse_precision(self.precision)
        object.__setattr__(self, "tolerance", check_tolerance(self.mode, self.tolerance))
        if self.dtype not in ("float16", "float32"):
            raise ConfigError(f"dtype={self.dtype!r}: use float16 or float32")
        if self.layout not in ("beta", "heads"):
            raise ConfigError(f"layout={self.layout!r}: use beta (one embedding per β level) or heads (the heads "
                              "once per cell, any β on read)")
        if self.overviews is not None and not self.overviews > 0:
            raise ConfigError(f"overviews={self.overviews!r}: give the coarsest cell size in degrees, e.g. 2")
        if self.quantize not in ("none", "int8"):
            raise ConfigError(f"quantize={self.quantize!r}: use none or int8")
        if self.executor not in ("ray", "local"):
            raise ConfigError(f"executor={self.executor!r}: use ray or local")
        if self.tile_size < 1 or self.chunk_size < 1 or self.tile_size % self.chunk_size:
            raise ConfigError(
                f"tile_size={self.tile_size}, chunk_size={self.chunk_size}: both must be positive and "
                "chunk_size must divide tile_size (e.g. 256 and 32)"
            )
        for name in ("db_shards", "max_in_flight"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: expected >= 1")
        for name in ("num_actors", "cpus_per_actor"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: expected >= 1, or unset")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise ConfigError(f"gpus_per_actor={self.gpus_per_actor}: expected >= 0")
        if self.memory_budget_mb <= 0:
            raise ConfigError(f"memory_budget_mb={self.memory_budget_mb}: expected > 0")
        if self.mode == "fast" and self.db_shards > 1:
            raise ConfigError(f"mode=fast with db_shards={self.db_shards}: shards merge exact statistics; "
                              "use db_shards=1 (replicas) with the fast mode")
        if self.validation_points < 16:
            raise ConfigError(f"validation_points={self.validation_points}: expected >= 16")
        if Path(self.out).suffix != ".zarr":
            raise ConfigError(f"out={self.out}: the output store must end in .zarr")
        self.grid  # noqa: B018 - validates resolution and bbox

    @property
    def grid(self) -> GridSpec:
        return GridSpec(self.resolution, self.bbox or GLOBE)
