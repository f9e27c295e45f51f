"""The embed-grid job: build an inspectable plan, then execute it locally or on Ray.

``build_plan`` resolves assets, hashes them and fixes the cube layout (cheap: no embedding);
``run_plan`` creates or resumes the cube, hands the missing tiles to an executor, and finishes
with a run report that is printed and stored in the cube's attributes.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from range_dist.cube.store import (
    TILE_COMPUTED,
    TILE_MISSING,
    TILE_SKIPPED,
    CubeLayout,
    finalize_cube,
    open_or_create_cube,
)
from range_dist.database.store import RetrievalDatabase
from range_dist.errors import ConfigError
from range_dist.fast_mode import FastStats, plan_fast
from range_dist.grid.config import GridJobConfig
from range_dist.grid.spec import GridSpec, TileKey, iter_tiles, land_mask
from range_dist.grid.tiles import EncoderPayload, TileResult
from range_dist.progress import Progress
from range_dist.retrieval.engine import VARIANTS
from range_dist.retrieval.plan import FastPlan

FEATURE_LAYOUT = (
    "[0, D): retrieved image embedding H_beta (D = value dim, 1024); "
    "[D, D+K): unit SatCLIP location embedding q_hat (K = 256)"
)


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_assets(config: GridJobConfig, log: Any = sys.stderr) -> GridJobConfig:
    """Fill in missing checkpoint / database paths: published assets if cached, else samples."""
    if config.satclip is not None and config.db is not None:
        return config
    from range_dist.assets import (
        DATABASE_FILES,
        DATABASE_REPO,
        SATCLIP_FILE,
        SATCLIP_REPO,
        default_cache_dir,
        write_sample_assets,
    )

    cache = default_cache_dir()
    try:
        from huggingface_hub import hf_hub_download

        ckpt = Path(hf_hub_download(SATCLIP_REPO, SATCLIP_FILE, cache_dir=cache, local_files_only=True))
        db = Path(hf_hub_download(DATABASE_REPO, DATABASE_FILES["med"], repo_type="dataset", cache_dir=cache,
                                  local_files_only=True))
        print(f"using the published assets from {cache}", file=log)
    except Exception:
        sample_dir = cache / "sample"
        ckpt, db = sample_dir / "sample-satclip-l10.ckpt", sample_dir / "sample-range-db.npz"
        if not (ckpt.exists() and db.exists()):
            paths = write_sample_assets(sample_dir)
            ckpt, db = paths.checkpoint, paths.database
        print(f"NOTE: published assets not fetched (`range-dist fetch-assets`); using UNTRAINED SAMPLE assets "
              f"from {sample_dir}", file=log)
    return config.with_assets(config.satclip or ckpt, config.db or db)


@dataclass(frozen=True)
class GridPlan:
    """A fully resolved run: what will be computed and written (executing it is a separate step)."""

    config: GridJobConfig
    layout: CubeLayout
    tiles: tuple[TileKey, ...]
    payload: EncoderPayload
    signature: dict[str, Any]
    attrs: dict[str, Any]

    @property
    def points(self) -> int:
        return self.layout.grid.points

    @property
    def nbytes(self) -> int:
        b, n_lat, n_lon, f = self.layout.shape
        return b * n_lat * n_lon * f * np.dtype(self.layout.dtype).itemsize

    def __repr__(self) -> str:
        b, n_lat, n_lon, f = self.layout.shape
        cfg = self.config
        return (
            f"GridPlan({cfg.resolution}° grid {n_lat}×{n_lon} = {self.points:,} cells, β={list(cfg.betas)}, "
            f"{len(self.tiles)} tiles of {cfg.tile_size}², {cfg.variant}, "
            f"db {self.payload.database.rows:,} rows "
            f"× {cfg.db_shards} shard(s), cube ({b}, {n_lat}, {n_lon}, {f}) {cfg.dtype} "
            f"= {self.nbytes / 2**30:.2f} GiB "
            f"-> {cfg.out})"
        )


def grid_sample(grid: GridSpec, land_only: bool, count: int, seed: int = 0) -> npt.NDArray[np.float64]:
    """Up to ``count`` distinct cell centres drawn at random from the grid (land cells if ``land_only``)."""
    rng = np.random.default_rng(seed)
    cells = grid.shape[0] * grid.shape[1]
    picks = rng.choice(cells, size=min(cells, 8 * count), replace=False)
    lonlat = np.stack([grid.lon[picks % grid.shape[1]], grid.lat[picks // grid.shape[1]]], axis=1).astype(np.float64)
    if land_only:
        lonlat = lonlat[land_mask(lonlat)]
    return lonlat[:count]


def plan_fast_mode(config: GridJobConfig, payload: EncoderPayload, log: Any = sys.stderr) -> FastPlan:
    """Choose and validate the fast mode's approximations on cells of this grid (on the driver).

    Raises:
        ToleranceError: the tolerance is not met on the sample (nothing is written).
    """
    assert config.tolerance is not None
    sample = grid_sample(config.grid, config.land_only, 2 * config.validation_points)
    if len(sample) == 0:
        raise ConfigError("mode=fast: the grid has no cells to validate on (no land in the bbox?); use mode=exact")
    start = time.perf_counter()
    encoder = payload.build("cpu")
    plan = plan_fast(encoder, sample, config.betas, config.tolerance, config.validation_points)
    print(f"[embed-grid] fast mode: measured error {plan.measured_error:.2e} <= tolerance {plan.tolerance:g} on "
          f"{plan.validation_points} cells (value rank {plan.value_rank}, interpolated {plan.spacing or 'none'}; "
          f"planned in {time.perf_counter() - start:.1f} s)", file=log, flush=True)
    return plan


def build_plan(config: GridJobConfig, log: Any = sys.stderr) -> GridPlan:
    """Resolve assets, load and hash them, and fix the cube layout and provenance."""
    from range_dist import __version__
    from range_dist.encoders.checkpoints import load_satclip_location_encoder

    config = resolve_assets(config, log)
    assert config.satclip is not None and config.db is not None
    location = load_satclip_location_encoder(config.satclip, harmonics=config.harmonics)  # type: ignore[arg-type]
    database = RetrievalDatabase.open(config.db)
    database.check_compatible(location.embed_dim)
    if config.db_shards > database.rows:
        raise ConfigError(f"db_shards={config.db_shards} exceeds the database's {database.rows} rows")
    grid = config.grid
    feature_dim = database.value_dim + database.key_dim
    layout = CubeLayout(grid, config.betas, feature_dim, config.dtype, config.tile_size, config.chunk_size)
    tau_sem, tau_geo = VARIANTS[config.variant]
    db_sha = database.fingerprint()
    ckpt_sha = sha256_file(config.satclip)
    signature = {
        "grid": grid.describe(),
        "land_only": config.land_only,
        "variant": config.variant,
        "betas": list(config.betas),
        "tau_sem": tau_sem,
        "tau_geo": tau_geo,
        "harmonics": location.config.harmonics,
        "satclip_sha256": ckpt_sha,
        "database_sha256": db_sha,
        "database_rows": database.rows,
        "dtype": config.dtype,
        "tile_size": config.tile_size,
        "chunk_size": config.chunk_size,
        "feature_dim": feature_dim,
        "retrieval_mode": config.mode,
        "precision": config.precision,
        "tolerance": config.tolerance if config.mode == "fast" else None,
    }
    west, south, east, north = (float(grid.lon[0] - grid.resolution / 2), float(grid.lat[-1] - grid.resolution / 2),
                                float(grid.lon[-1] + grid.resolution / 2), float(grid.lat[0] + grid.resolution / 2))
    db_info = database.describe()
    attrs = {
        "title": f"RANGE geo-embeddings ({config.variant}) on a {grid.resolution}° grid",
        "Conventions": "CF-1.10",
        "range_dist:version": __version__,
        "range_dist:created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "range_dist:satclip": str(config.satclip),
        "range_dist:satclip_sha256": ckpt_sha,
        "range_dist:database": str(config.db),
        "range_dist:database_sha256": db_sha,
        "range_dist:database_rows": database.rows,
        "range_dist:database_origin": db_info.get("origin", "unknown"),
        "range_dist:sample_assets": bool(db_info.get("sample", False)),
        "range_dist:variant": config.variant,
        "range_dist:tau_sem": tau_sem,
        "range_dist:tau_geo": tau_geo,
        "range_dist:betas": list(config.betas),
        "range_dist:harmonics": location.config.harmonics,
        "range_dist:grid": grid.describe(),
        "range_dist:land_mask": "global-land-mask (30 arc-second), cell centres" if config.land_only else "none",
        "range_dist:retrieval_mode": config.mode,
        "range_dist:precision": f"{config.precision} matrix products on GPU actors, fp32 on CPU actors; "
                                "float32 softmax statistics",
        "proj:code": "EPSG:4326",
        "spatial:dimensions": ["lat", "lon"],
        "spatial:shape": list(grid.shape),
        "spatial:transform": list(grid.transform),
        "spatial:bbox": [west, south, east, north],
        "spatial:registration": "pixel",
        "geoemb:type": "location_embedding",
        "geoemb:dimensions": feature_dim,
        "geoemb:model": f"RANGE {config.variant} (SatCLIP location encoder + soft retrieval)",
        "geoemb:source_data": str(db_info.get("origin", "unknown")),
        "geoemb:data_type": config.dtype,
        "geoemb:quantization": "none" if config.dtype == "float32" else "float16 cast",
        "geoemb:feature_layout": FEATURE_LAYOUT,
    }
    payload = EncoderPayload.from_models(location, database, config.variant, config.memory_budget_mb)
    payload = replace(payload, precision=config.precision)
    if config.mode == "fast":
        fast_plan = plan_fast_mode(config, payload, log)
        payload = replace(payload, fast_plan=fast_plan, betas=tuple(config.betas))
        attrs["range_dist:fast"] = fast_plan.describe()
    return GridPlan(config, layout, tuple(iter_tiles(grid, config.tile_size)), payload, signature, attrs)


@dataclass
class RunReport:
    """Counts and rates of a run (printed at the end and stored in the cube)."""

    tiles_total: int = 0
    tiles_already_done: int = 0
    tiles_computed: int = 0
    tiles_skipped: int = 0
    points: int = 0
    kernel_seconds: float = 0.0
    bytes_written: int = 0
    wall_seconds: float = 0.0
    startup_seconds: float = 0.0
    parallel_workers: int = 1
    executor: str = "local"
    fast_checks: FastStats | None = None

    def add(self, result: TileResult) -> None:
        if result.fast_checks is not None:
            if self.fast_checks is None:
                self.fast_checks = FastStats()
            self.fast_checks.merge(result.fast_checks)
        if result.status == TILE_SKIPPED:
            self.tiles_skipped += 1
        else:
            self.tiles_computed += 1
        self.points += result.points
        self.kernel_seconds += result.kernel_seconds
        self.bytes_written += result.bytes_written

    @property
    def points_per_second(self) -> float:
        """End-to-end points/s of the tile loop (Ray start-up and model loading excluded)."""
        loop = self.wall_seconds - self.startup_seconds
        return self.points / loop if loop > 0 else 0.0

    @property
    def kernel_points_per_second(self) -> float:
        """Points/s over the summed time spent in the kernel (``RangeEncoder.encode``) per worker.

        Each actor runs two tiles at a time so that writes overlap compute; overlapping kernel
        calls then share the CPUs and this figure understates the kernel's own rate. The grid
        benchmark measures the kernel alone for the ratio it reports.
        """
        per_worker = self.kernel_seconds / max(self.parallel_workers, 1)
        return self.points / per_worker if per_worker > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "fast_checks": None if self.fast_checks is None else asdict(self.fast_checks),
            "points_per_second": round(self.points_per_second, 1),
            "kernel_points_per_second": round(self.kernel_points_per_second, 1),
            "write_mb_per_second": round(
                self.bytes_written / 2**20 / max(self.wall_seconds - self.startup_seconds, 1e-9), 1
            ),
        }

    def summary(self, store: Path) -> str:
        d = self.as_dict()
        return (
            f"run report: {self.tiles_computed} tiles computed, {self.tiles_skipped} skipped (no land), "
            f"{self.tiles_already_done} already done, of {self.tiles_total}; {self.points:,} points in "
            f"{self.wall_seconds:.1f} s ({self.startup_seconds:.1f} s start-up) = "
            f"{d['points_per_second']:,.0f} points/s (kernel "
            f"{d['kernel_points_per_second']:,.0f} points/s on {self.parallel_workers} worker(s)); "
            f"{self.bytes_written / 2**20:,.1f} MiB written ({d['write_mb_per_second']} MiB/s); cube: {store}"
            + ("" if self.fast_checks is None else "\n" + self.fast_checks.summary())
        )


def run_plan(plan: GridPlan, executor: str = "ray", log: Any = sys.stderr) -> RunReport:
    """Create or resume the cube and compute the missing tiles.

    Args:
        plan: from :func:`build_plan`.
        executor: ``ray`` (actors; local Ray in-process unless an address is configured) or
            ``local`` (this process, one tile at a time; for debugging).

    Returns:
        The run report (also stored in the cube's ``range_dist:run_report`` attribute).
    """
    cfg = plan.config
    status = open_or_create_cube(cfg.out, plan.layout, plan.signature, plan.attrs, overwrite=cfg.overwrite)
    todo = [t for t in plan.tiles if status[t.row, t.col] == TILE_MISSING]
    report = RunReport(tiles_total=len(plan.tiles), tiles_already_done=len(plan.tiles) - len(todo), executor=executor)
    print(repr(plan), file=log)
    if report.tiles_already_done:
        print(f"resuming: {report.tiles_already_done} tile(s) already done, {len(todo)} to go", file=log)
    progress = Progress(total=len(todo), unit="tiles", label="embed-grid", stream=log)
    start = time.perf_counter()
    if todo:
        if executor == "local":
            from range_dist.executors.local import run_tiles_locally

            report.parallel_workers = 1
            for result in run_tiles_locally(plan, todo):
                report.add(result)
                progress.update(1, result.points)
        elif executor == "ray":
            from range_dist.executors.ray_executor import run_tiles_on_ray

            def on_result(result: TileResult) -> None:
                report.add(result)
                progress.update(1, result.points)

            report.parallel_workers, report.startup_seconds = run_tiles_on_ray(plan, todo, on_result, log=log)
        else:
            from range_dist.errors import ConfigError

            raise ConfigError(f"executor {executor!r}: use 'ray' or 'local'")
    report.wall_seconds = time.perf_counter() - start
    final = open_or_create_cube(cfg.out, plan.layout, plan.signature, plan.attrs)
    missing = int((final == TILE_MISSING).sum())
    if missing:
        from range_dist.errors import RangeDistError

        raise RangeDistError(f"{missing} tile(s) are still missing in {cfg.out}; rerun the same command to resume")
    finalize_cube(cfg.out, {**report.as_dict(), "tiles_computed_total": int((final == TILE_COMPUTED).sum())})
    print(report.summary(cfg.out), file=log)
    return report
