"""Build a retrieval database from STAC: locations -> scenes -> chips -> (key, value) rows in Zarr.

Every step is a plain function over one work unit, run by the local executor here or by Ray
tasks/actors (:mod:`range_dist.executors.ray_build`):

* :func:`fetch_chip`: search the scenes covering one location, read the chip from the best one,
  and reject it (trying the next candidate) when nodata > ``max_nodata`` or the SCL cloud
  fraction > ``max_cloud``; failures come back as :class:`ChipOutcome` with a reason, never raised.
* :func:`read_batch`: :func:`fetch_chip` over a batch of locations (concurrent reads).
* :class:`RowEncoder`: the key (SatCLIP image) and value (SatMAE) encoders, loaded once per worker,
  turning accepted chips into a :class:`~range_dist.database.append.RowBatch` aligned by location id.
* :func:`run_build`: the driver appends batches to the database (single writer, crash-safe commit),
  keeps the failure table, skips done ids on a rerun, prints progress and a summary.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from range_dist.chips.radiometry import RADIOMETRY_MODES, cloud_fraction, nodata_mask, scene_offset, to_reflectance
from range_dist.chips.read import Chip, read_chip
from range_dist.errors import ChipReadError, ConfigError, RangeDistError, StacError
from range_dist.sampling import Locations, read_locations
from range_dist.stac.presets import PRESETS
from range_dist.stac.scenes import SceneRef
from range_dist.stac.search import SearchConfig, group_by_cell, searcher_for

FAILURE_REASONS = ("no_scene", "too_cloudy", "nodata", "http_error", "corrupt_file", "stac_error", "encoder_error")


@dataclass(frozen=True)
class BuildConfig:
    """Settings of ``range-dist build-db`` (YAML keys = field names; flags override).

    Attributes:
        locations: CSV/Parquet of ``location_id, lon, lat`` (``sample-locations`` writes one).
        out: the Zarr database to create or resume (``.zarr``).
        stac_url: STAC API root (default from ``preset``).
        preset: ``earth-search`` or ``planetary-computer`` (URL, collection, URL signing), or None.
        collection: STAC collection id.
        datetime: ``start/end`` acquisition interval.
        max_cloud: maximum cloud cover, percent: the scene's ``eo:cloud_cover`` and the chip's SCL fraction.
        max_nodata: maximum nodata fraction of a chip (0..1).
        chip_size: chip side in 10 m pixels.
        radiometry: ``faithful`` (DN/10000, as published) or ``harmonised`` (offset by baseline).
        key_encoder, key_checkpoint: SatCLIP image encoder name and Lightning checkpoint.
        value_encoder, value_checkpoint: SatMAE encoder name and ``.pth``/safetensors checkpoint.
        candidates: scenes tried per location. max_items: items fetched per search.
        server_filter: ``auto`` or ``client`` (see :mod:`range_dist.stac.search`).
        batch_size: locations per work unit (one append per batch).
        executor: ``local`` (threads in this process) or ``ray``.
        ray_address: Ray cluster address (None: $RAY_ADDRESS or a local instance).
        num_readers: concurrent chip readers (threads locally, Ray tasks on Ray).
        device: ``auto`` (cuda when available), ``cpu``, ``cuda``, ``cuda:1``.
        read_retries: attempts per chip read on HTTP errors (each with GDAL's own retries).
        gdal: extra GDAL settings (name, value).
        overwrite: replace an existing database instead of resuming.
        limit: only the first ``limit`` locations (tests, benchmarks).
        search_group_deg: None (default) searches each location on its own; a cell size in degrees
            orders the work by cell and searches once per cell of each batch (its bounding box), then
            gives each location the items whose footprint contains it: far fewer API requests for
            dense location sets.
        extra: test hooks (``sleep_after_batch`` seconds).
    """

    locations: Path
    out: Path
    stac_url: str | None = None
    preset: str | None = None
    collection: str = "sentinel-2-l2a"
    datetime: str | None = "2021-01-01/2023-05-17"
    max_cloud: float = 20.0
    max_nodata: float = 0.10
    chip_size: int = 256
    radiometry: Literal["faithful", "harmonised"] = "faithful"
    key_encoder: str = "satclip-vit16"
    key_checkpoint: Path | None = None
    value_encoder: str = "satmae-vitl16-fmow-rgb"
    value_checkpoint: Path | None = None
    candidates: int = 3
    max_items: int = 50
    server_filter: Literal["auto", "client"] = "auto"
    batch_size: int = 16
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    num_readers: int = 2
    device: str = "auto"
    read_retries: int = 2
    gdal: tuple[tuple[str, str], ...] = ()
    overwrite: bool = False
    limit: int | None = None
    search_group_deg: float | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.radiometry not in RADIOMETRY_MODES:
            raise ConfigError(f"radiometry {self.radiometry!r}: expected one of {RADIOMETRY_MODES}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError(f"preset {self.preset!r}: expected one of {sorted(PRESETS)}")
        if self.stac_url is None and self.preset is None:
            raise ConfigError("give --stac-url or --preset (earth-search, planetary-computer)")
        if not 0 <= self.max_cloud <= 100:
            raise ConfigError(f"max_cloud {self.max_cloud}: a percentage in [0, 100]")
        if not 0 <= self.max_nodata <= 1:
            raise ConfigError(f"max_nodata {self.max_nodata}: a fraction in [0, 1]")
        if self.chip_size < 224:
            raise ConfigError(f"chip_size {self.chip_size}: the encoders need at least 224 px")
        if self.batch_size < 1 or self.num_readers < 1 or self.candidates < 1:
            raise ConfigError("batch_size, num_readers and candidates must be >= 1")
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"executor {self.executor!r}: expected local or ray")
        if Path(self.out).suffix != ".zarr":
            raise ConfigError(f"--out {self.out}: the database store must end in .zarr")
        if self.search_group_deg is not None and not 0 < self.search_group_deg <= 10:
            raise ConfigError(f"search_group_deg {self.search_group_deg}: a cell size in (0, 10] degrees, or unset")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def load(cls, path: str | Path | None, overrides: Mapping[str, Any]) -> BuildConfig:
        """Settings from a YAML file (optional) updated with the non-None ``overrides``.

        Raises:
            ConfigError: unknown keys, missing required settings or invalid values.
        """
        raw: dict[str, Any] = {}
        if path is not None:
            import yaml

            with open(path, encoding="utf-8") as fh:
                raw = dict(yaml.safe_load(fh) or {})
        raw.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(raw) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"{path or 'build-db'}: unknown setting(s) {unknown}; known: {cls.field_names()}")
        for key in ("locations", "out"):
            if key not in raw:
                raise ConfigError(f"build-db needs --{key}")
        for key in ("locations", "out", "key_checkpoint", "value_checkpoint"):
            if raw.get(key) is not None:
                raw[key] = Path(raw[key])
        if isinstance(raw.get("gdal"), Mapping):
            raw["gdal"] = tuple((str(k), str(v)) for k, v in raw["gdal"].items())
        if isinstance(raw.get("extra"), Mapping):
            raw["extra"] = tuple(raw["extra"].items())
        return cls(**raw)

    def search_config(self) -> SearchConfig:
        preset = PRESETS[self.preset] if self.preset else None
        return SearchConfig(url=self.stac_url or (preset.url if preset else ""),
                            collection=self.collection if self.collection else (preset.collection if preset else ""),
                            datetime=self.datetime, max_cloud=self.max_cloud, max_items=self.max_items,
                            candidates=self.candidates, sign=bool(preset and preset.sign),
                            server_filter=self.server_filter)


# ---------------------------------------------------------------------------- one location
@dataclass(frozen=True)
class ChipOutcome:
    """What happened at one location: an accepted chip (with provenance) or a failure reason.

    Attributes:
        location_id, lonlat: the location.
        chip: the accepted chip's DN, or None on failure.
        scene: the scene the chip came from (None on failure).
        offset: DN offset the radiometry subtracts. cloud, nodata: the chip's fractions.
        reason: failure class (:data:`FAILURE_REASONS`) or None. detail: human-readable detail.
        bytes_read: not measured here (0); kept for executors that count.
    """

    location_id: str
    lonlat: tuple[float, float]
    chip: Chip | None = None
    scene: SceneRef | None = None
    offset: int = 0
    cloud: float = float("nan")
    nodata: float = float("nan")
    reason: str | None = None
    detail: str = ""


def judge_chip(chip: Chip, max_nodata: float, max_cloud_pct: float) -> tuple[str | None, float, float]:
    """(rejection reason or None, cloud fraction, nodata fraction) of a chip (pure)."""
    mask = nodata_mask(chip.dn, chip.scl)
    nodata = float(mask.mean())
    cloud = cloud_fraction(chip.scl, ~mask)
    if nodata > max_nodata:
        return "nodata", cloud, nodata
    if cloud * 100.0 > max_cloud_pct:
        return "too_cloudy", cloud, nodata
    return None, cloud, nodata


def _read_with_retries(scene: SceneRef, lon: float, lat: float, config: BuildConfig) -> Chip:
    last: ChipReadError | None = None
    for attempt in range(max(1, config.read_retries)):
        try:
            return read_chip(scene, lon, lat, config.chip_size, dict(config.gdal))
        except ChipReadError as exc:
            last = exc
            if exc.reason != "http_error":
                raise
            time.sleep(0.2 * 2**attempt)
    assert last is not None
    raise last


def fetch_chip(location_id: str, lon: float, lat: float, config: BuildConfig,
               scenes: Sequence[SceneRef] | StacError | None = None) -> ChipOutcome:
    """Search, read and judge one location's chip; every failure becomes an outcome with a reason.

    Args:
        scenes: candidates already found by a grouped search (or its error); None searches here.
    """
    base = ChipOutcome(location_id, (lon, lat))
    if scenes is None:
        try:
            scenes = searcher_for(config.search_config()).search(lon, lat)
        except StacError as exc:
            scenes = exc
    if isinstance(scenes, StacError):
        return replace(base, reason="stac_error", detail=str(scenes))
    if not scenes:
        return replace(base, reason="no_scene",
                       detail=f"no scene with cloud cover <= {config.max_cloud}% in {config.datetime}")
    rejections: list[tuple[str, str]] = []
    for scene in scenes:
        try:
            chip = _read_with_retries(scene, lon, lat, config)
        except ChipReadError as exc:
            rejections.append((exc.reason, str(exc)))
            continue
        reason, cloud, nodata = judge_chip(chip, config.max_nodata, config.max_cloud)
        if reason is None:
            offset = scene_offset(config.radiometry, scene.processing_baseline, scene.boa_offset_applied)
            return replace(base, chip=chip, scene=scene, offset=offset, cloud=cloud, nodata=nodata)
        rejections.append((reason, f"{scene.item_id}: cloud {cloud:.1%}, nodata {nodata:.1%}"))
    reason, _ = rejections[-1]
    detail = "; ".join(f"{r}: {d}" for r, d in rejections)
    return replace(base, reason=reason, detail=detail)


def read_batch(batch: Sequence[tuple[str, float, float]], config: BuildConfig, threads: int = 1) -> list[ChipOutcome]:
    """:func:`fetch_chip` over a batch of (location id, lon, lat), ``threads`` at a time, in order."""
    found: list[Sequence[SceneRef] | StacError | None] = [None] * len(batch)
    if config.search_group_deg is not None:
        searcher = searcher_for(config.search_config())
        for group in group_by_cell([(lon, lat) for _, lon, lat in batch], config.search_group_deg):
            if len(group) < 2:
                continue
            try:
                per_point = searcher.search_many([(batch[i][1], batch[i][2]) for i in group])
            except StacError as exc:
                per_point = [exc] * len(group)  # type: ignore[list-item]
            for i, scenes in zip(group, per_point):
                found[i] = scenes
    jobs = [(i, lon, lat, scenes) for (i, lon, lat), scenes in zip(batch, found)]
    if threads <= 1:
        return [fetch_chip(i, lon, lat, config, scenes) for i, lon, lat, scenes in jobs]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda t: fetch_chip(t[0], t[1], t[2], config, t[3]), jobs))


# ---------------------------------------------------------------------------- encoding
def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass
class RowEncoder:
    """The key and value encoders of a build, loaded once per worker."""

    config: BuildConfig
    threads: int | None = None
    _models: tuple[Any, Any] | None = field(default=None, repr=False)

    def models(self) -> tuple[Any, Any]:
        if self._models is None:
            import torch

            from range_dist.encoders.image import load_image_encoder

            if self.threads:
                torch.set_num_threads(self.threads)
            device = resolve_device(self.config.device)
            if self.config.key_checkpoint is None or self.config.value_checkpoint is None:
                raise ConfigError("build-db needs --key-checkpoint (SatCLIP .ckpt) and --value-checkpoint (SatMAE)")
            self._models = (load_image_encoder(self.config.key_encoder, self.config.key_checkpoint, device),
                            load_image_encoder(self.config.value_encoder, self.config.value_checkpoint, device))
        return self._models

    def encode(self, outcomes: Sequence[ChipOutcome]) -> tuple[Any, list[ChipOutcome]]:
        """Accepted outcomes -> (RowBatch, failures); an encoder error fails the batch's chips, not the run."""
        from range_dist.database.append import RowBatch

        ok = [o for o in outcomes if o.chip is not None]
        failed = [o for o in outcomes if o.chip is None]
        if not ok:
            return None, failed
        try:
            key_model, value_model = self.models()
            refl = np.stack([to_reflectance(o.chip.dn, o.offset) for o in ok if o.chip is not None])
            keys = key_model.encode(refl)
            values = value_model.encode(refl)
        except RangeDistError:
            raise
        except Exception as exc:  # a model failure on this batch is recorded per chip
            return None, failed + [replace(o, chip=None, reason="encoder_error", detail=str(exc)) for o in ok]
        return RowBatch(
            locations=np.array([o.chip.center_lonlat for o in ok if o.chip is not None], dtype=np.float64),
            keys=keys.astype(np.float32), values=values.astype(np.float32),
            provenance=provenance_columns(ok)), failed


def provenance_columns(ok: Sequence[ChipOutcome]) -> dict[str, npt.NDArray[Any]]:
    """The provenance columns of accepted outcomes (pure)."""
    scenes = [o.scene for o in ok]
    assert all(s is not None for s in scenes)
    return {
        "location_id": np.array([o.location_id for o in ok], dtype=str),
        "query_lon": np.array([o.lonlat[0] for o in ok], np.float64),
        "query_lat": np.array([o.lonlat[1] for o in ok], np.float64),
        "item_id": np.array([s.item_id for s in scenes if s], dtype=str),
        "datetime": np.array([s.datetime for s in scenes if s], dtype=str),
        "processing_baseline": np.array([s.processing_baseline for s in scenes if s], dtype=str),
        "offset_applied": np.array([o.offset for o in ok], np.int32),
        "provider_offset_applied": np.array([s.boa_offset_applied for s in scenes if s], bool),
        "scene_cloud_cover": np.array([s.cloud_cover for s in scenes if s], np.float32),
        "cloud_fraction": np.array([o.cloud for o in ok], np.float32),
        "nodata_fraction": np.array([o.nodata for o in ok], np.float32),
        "chip_crs": np.array([o.chip.crs for o in ok if o.chip is not None], dtype=str),
    }


# ---------------------------------------------------------------------------- plan + run
@dataclass(frozen=True)
class BuildPlan:
    """What a run will do (a dry run prints it)."""

    config: BuildConfig
    locations: Locations
    todo: tuple[int, ...]
    done: int
    attrs: Mapping[str, Any]

    def batches(self) -> list[list[tuple[str, float, float]]]:
        todo = list(self.todo)
        cell = self.config.search_group_deg
        if cell is not None:  # batches of nearby locations, so that grouped searches cover several
            lonlat = self.locations.lonlat
            todo.sort(key=lambda i: (math.floor(lonlat[i, 1] / cell), math.floor(lonlat[i, 0] / cell), i))
        rows = [(self.locations.ids[i], float(self.locations.lonlat[i, 0]), float(self.locations.lonlat[i, 1]))
                for i in todo]
        size = self.config.batch_size
        return [rows[i : i + size] for i in range(0, len(rows), size)]

    def __repr__(self) -> str:
        c = self.config
        return (f"BuildPlan(out={c.out}, locations={len(self.locations)}, done={self.done}, todo={len(self.todo)}, "
                f"batches={-(-len(self.todo) // c.batch_size)}, stac={c.search_config().url} "
                f"[{c.collection}], radiometry={c.radiometry}, keys={c.key_encoder}, values={c.value_encoder}, "
                f"executor={c.executor})")


def _sha256(path: Path | None) -> str | None:
    if path is None or not Path(path).exists():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


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


def build_plan(config: BuildConfig) -> tuple[BuildPlan, Any]:
    """Read the locations, open or create the database, and list the locations still to do.

    Returns:
        (plan, appender).
    """
    from range_dist.database.append import DatabaseAppender
    from range_dist.encoders.image import get_spec

    locations = read_locations(config.locations)
    if config.limit is not None:
        locations = Locations(locations.ids[: config.limit], locations.lonlat[: config.limit])
    attrs = database_attrs(config)
    appender = DatabaseAppender.open_or_create(config.out, get_spec(config.key_encoder).dim,
                                               get_spec(config.value_encoder).dim, attrs, overwrite=config.overwrite)
    done = appender.done_ids()
    todo = tuple(i for i, loc in enumerate(locations.ids) if loc not in done)
    return BuildPlan(config, locations, todo, len(locations) - len(todo), attrs), appender


@dataclass
class BuildReport:
    """Counts and timings of a run (written to the database attributes as ``build_report``)."""

    locations: int = 0
    skipped_done: int = 0
    rows_written: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"locations": self.locations, "skipped_done": self.skipped_done, "rows_written": self.rows_written,
                "failures": dict(self.failures), "wall_s": round(self.wall_s, 3),
                "chips_per_s": round(self.rows_written / self.wall_s, 3) if self.wall_s else None}

    def summary(self) -> str:
        fails = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) or "none"
        rate = self.rows_written / self.wall_s if self.wall_s else 0.0
        return (f"build-db: {self.rows_written} rows written, {self.skipped_done} already done, "
                f"{sum(self.failures.values())} failed ({fails}) of {self.locations} locations in "
                f"{self.wall_s:.1f} s ({rate:.2f} chips/s)")


BatchRunner = Callable[[BuildPlan], Iterable[tuple[Any, list[ChipOutcome]]]]


def run_local(plan: BuildPlan) -> Iterable[tuple[Any, list[ChipOutcome]]]:
    """The local executor: reads with ``num_readers`` threads, encodes in this process."""
    encoder = RowEncoder(plan.config)
    for batch in plan.batches():
        yield encoder.encode(read_batch(batch, plan.config, threads=plan.config.num_readers))


def run_build(plan: BuildPlan, appender: Any, runner: BatchRunner | None = None, quiet: bool = False) -> BuildReport:
    """Execute a plan: append each encoded batch, keep the failure table, report progress and a summary."""
    import io
    import sys

    from range_dist.progress import Progress

    if runner is None:
        if plan.config.executor == "ray":
            from range_dist.executors.ray_build import run_ray

            runner = run_ray
        else:
            runner = run_local
    report = BuildReport(locations=len(plan.locations), skipped_done=plan.done)
    failures = appender.failures()
    for loc_id in appender.done_ids():
        failures.pop(loc_id, None)
    progress = Progress(total=len(plan.todo), unit="locations", label="build-db",
                        stream=io.StringIO() if quiet else sys.stderr)
    sleep_after = float(dict(plan.config.extra).get("sleep_after_batch", 0.0))
    start = time.perf_counter()
    for rows, failed in runner(plan):
        if rows is not None:
            appender.append(rows)
            report.rows_written += len(rows)
            for loc_id in rows.provenance["location_id"]:
                failures.pop(str(loc_id), None)
        for outcome in failed:
            failures[outcome.location_id] = (outcome.reason or "unknown", outcome.detail)
            report.failures[outcome.reason or "unknown"] += 1
        appender.set_failures(failures)
        progress.update((len(rows) if rows is not None else 0) + len(failed))
        if sleep_after:
            time.sleep(sleep_after)
    report.wall_s = time.perf_counter() - start
    appender.finish(report.as_dict())
    if not quiet:
        print(report.summary())
    return report


def build_database(config: BuildConfig, quiet: bool = False) -> BuildReport:
    """Plan and run a build (what ``range-dist build-db`` calls)."""
    plan, appender = build_plan(config)
    return run_build(plan, appender, quiet=quiet)
