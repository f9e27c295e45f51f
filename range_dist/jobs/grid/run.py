"""Run a grid plan: plan the fast mode (if asked), create or resume the cube, hand the missing
tiles to an executor, and finish with a run report (printed, and stored in the cube)."""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from range_dist.cube.integrity import check_tiles, reset_tiles
from range_dist.cube.overviews import build_overviews
from range_dist.cube.store import (
    TILE_COMPUTED,
    TILE_MISSING,
    finalize_cube,
    open_or_create_cube,
    read_tile_status,
)
from range_dist.errors import STOP_SIGNALS, ConfigError, Interrupted, RangeDistError
from range_dist.geo.land import land_mask
from range_dist.grid.spec import GridSpec, TileKey
from range_dist.jobs.grid.plan import GridPlan
from range_dist.jobs.grid.report import RunReport
from range_dist.jobs.grid.steps import TileResult, tile_points
from range_dist.retrieval.fast.plan import FastPlan, Workload, load_plan, save_plan
from range_dist.util.lease import StoreLease
from range_dist.util.progress import Progress
from range_dist.util.stores import StoreLocation


class TileExecutor(Protocol):
    """HOW tiles are computed (:mod:`range_dist.executors`); the plan says WHAT."""

    name: str

    def run_tiles(self, plan: GridPlan, tiles: Sequence[TileKey], on_result: Callable[[TileResult], None],
                  log: Any = sys.stderr) -> tuple[int, float]:
        """Compute and write ``tiles``, calling ``on_result`` for each as it finishes.

        Returns:
            (workers that ran in parallel, start-up seconds before the first tile).
        """
        ...


def grid_sample(grid: GridSpec, land_only: bool, count: int, seed: int = 0) -> npt.NDArray[np.float64]:
    """Up to ``count`` distinct cell centres drawn at random from the grid (land cells if ``land_only``)."""
    return _grid_draw(grid, land_only, count, seed)[0]


def _grid_draw(grid: GridSpec, land_only: bool, count: int, seed: int = 0) -> tuple[npt.NDArray[np.float64], float]:
    """(up to ``count`` random cells, share of the drawn cells that are embedded: land, or all)."""
    rng = np.random.default_rng(seed)
    cells = grid.shape[0] * grid.shape[1]
    picks = rng.choice(cells, size=min(cells, 8 * count), replace=False)
    lonlat = np.stack([grid.lon[picks % grid.shape[1]], grid.lat[picks // grid.shape[1]]], axis=1).astype(np.float64)
    if land_only:
        lonlat = lonlat[land_mask(lonlat)]
    return lonlat[:count], len(lonlat) / max(1, len(picks))


def grid_patches(grid: GridSpec, land_only: bool, centres: npt.NDArray[np.float64], count: int,
                 side: int = 8) -> npt.NDArray[np.float64]:
    """Up to ``count`` cells in side × side patches of neighbouring cells around ``centres`` (the
    final check of the fast plan: neighbouring cells share their lattice nodes, so it stays cheap)."""
    res = grid.resolution
    out = []
    for lon, lat in centres:
        i = int(np.clip(np.searchsorted(grid.lon, lon - res / 2), 0, grid.shape[1] - 1))
        j = int(np.clip(np.searchsorted(-grid.lat, -lat - res / 2), 0, grid.shape[0] - 1))
        lo_i, lo_j = max(0, i - side // 2), max(0, j - side // 2)
        glon, glat = np.meshgrid(grid.lon[lo_i : lo_i + side], grid.lat[lo_j : lo_j + side])
        patch = np.stack([glon.ravel(), glat.ravel()], axis=1)
        out.append(patch[land_mask(patch)] if land_only else patch)
    return np.concatenate(out)[:count] if out else np.empty((0, 2))


def run_workload(plan: GridPlan, land_share: float, sample: npt.NDArray[np.float64]) -> Workload:
    """The run's points (estimated from the land share of a random draw) and a typical tile's points."""
    cfg = plan.config
    grid = plan.layout.grid
    points = max(1, round(grid.points * land_share))
    res, size = grid.resolution, cfg.tile_size
    # the tile holding the first sampled cell
    col = int(np.clip(np.searchsorted(grid.lon, sample[0, 0] - res / 2), 0, grid.shape[1] - 1)) // size
    row = int(np.clip(np.searchsorted(-grid.lat, -sample[0, 1] - res / 2), 0, grid.shape[0] - 1)) // size
    tile = next((t for t in plan.tiles if (t.row, t.col) == (row, col)), plan.tiles[0])
    lonlat, mask = tile_points(grid, tile, cfg.land_only)
    call = lonlat[mask] if mask.any() else sample
    return Workload(points=points, call=call)


def fast_plan_path(out: Path) -> Path:
    """Where a run keeps its fast plan beside a local cube (``STORE.fastplan.npz``), for a resume to reuse."""
    out = Path(out)
    return out.with_name(out.name + ".fastplan.npz")


def fast_plan_location(out: Path | str) -> StoreLocation:
    """Where a run keeps its fast plan beside the cube, local or on an object store."""
    return StoreLocation.parse(out).sibling(".fastplan.npz")


def _load_fast_plan(where: StoreLocation, key: str) -> FastPlan | None:
    if where.is_local:
        return load_plan(where.local, key)
    data = where.read_bytes()  # the object, through a local temporary file (np.load reads files)
    if data is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "plan.npz"
        local.write_bytes(data)
        return load_plan(local, key)


def _save_fast_plan(fast: FastPlan, where: StoreLocation, key: str) -> None:
    if where.is_local:
        where.local.parent.mkdir(parents=True, exist_ok=True)
        save_plan(fast, where.local, key)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "plan.npz"
        save_plan(fast, local, key)
        # one PUT of the whole object: a resume reads the whole plan or none (then it plans again)
        where.write_bytes(local.read_bytes())


def fast_plan_key(plan: GridPlan) -> str:
    """What a saved plan must have been made for: the run's signature and validation size."""
    text = json.dumps({"signature": plan.signature, "validation_points": plan.config.validation_points},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def plan_fast_mode(plan: GridPlan, log: Any = sys.stderr) -> FastPlan:
    """Choose and validate the fast mode's approximations on cells of this grid (on the driver).

    With the run's size and a typical tile, the planner may decide that the fast mode would not pay
    (the plan then has ``fallback`` set, with the reason) and the run computes exactly.

    Raises:
        ToleranceError: the tolerance is not met on the sample (nothing is written).
    """
    from range_dist.retrieval.fast.planner import plan_fast

    config = plan.config
    assert config.tolerance is not None
    sample, share = _grid_draw(config.grid, config.land_only, 2 * config.validation_points)
    if len(sample) == 0:
        raise ConfigError("mode=fast: the grid has no cells to validate on (no land in the bbox?); use mode=exact")
    start = time.perf_counter()
    encoder = plan.payload.build("cpu")
    check = grid_patches(config.grid, config.land_only, sample[-4:], config.validation_points)
    fast = plan_fast(encoder.retrieval_context(), sample, plan.compute_betas, config.tolerance,
                     config.validation_points, workload=run_workload(plan, share, sample),
                     check_lonlat=check if len(check) else None)
    seconds = time.perf_counter() - start
    if fast.fallback is not None:
        print(f"[embed-grid] fast mode -> exact: {fast.fallback} (decided in {seconds:.1f} s)", file=log, flush=True)
    else:
        estimate = fast.estimate
        checked = (f"measured error {fast.measured_error:.2e} <= tolerance {fast.tolerance:g} on "
                   f"{fast.validation_points} cells" if fast.validation_points else
                   f"tolerance {fast.tolerance:g}, checked on every lattice cell of every tile as it runs")
        print(f"[embed-grid] fast mode: {checked} (value rank {fast.value_rank}, interpolated "
              f"{fast.spacing or 'none'}; "
              f"planned in {seconds:.1f} s; estimated {estimate.get('fast', float('nan')):.1f} s against "
              f"{estimate.get('exact', float('nan')):.1f} s exact)", file=log, flush=True)
    return fast


def with_fast_plan(plan: GridPlan, log: Any = sys.stderr) -> GridPlan:
    """The plan with its fast mode planned and validated (unchanged in exact mode).

    The plan is saved beside the cube (:func:`fast_plan_path`) and a later run of the same settings
    (a resume) loads it instead of planning again. A plan that falls back to exact leaves the
    payload exact; either way the cube's ``range_dist:fast`` attribute says what was decided and why.
    """
    if plan.config.mode != "fast":
        return plan
    path, key = fast_plan_location(plan.config.out), fast_plan_key(plan)
    fast = _load_fast_plan(path, key)
    if fast is not None:
        what = f"exact ({fast.fallback})" if fast.fallback else \
            f"value rank {fast.value_rank}, interpolated {fast.spacing or 'none'}"
        print(f"[embed-grid] fast mode: reusing the plan saved by an earlier run of these settings ({path}): {what}",
              file=log, flush=True)
    else:
        fast = plan_fast_mode(plan, log)
        _save_fast_plan(fast, path, key)
    attrs = {**plan.attrs, "range_dist:fast": fast.describe()}
    if fast.fallback is not None:
        return replace(plan, attrs=attrs)
    payload = replace(plan.payload, fast_plan=fast, betas=plan.compute_betas)
    return replace(plan, payload=payload, attrs=attrs)


def run_grid(plan: GridPlan, executor: TileExecutor, log: Any = None) -> RunReport:
    """Execute a plan: the fast mode first (a refusal writes nothing), then the store, then the tiles.

    Args:
        plan: from :func:`~range_dist.jobs.grid.plan.build_plan`.
        executor: computes the tiles (:func:`range_dist.executors.executor_for`).

    Returns:
        The run report (also stored in the cube's ``range_dist:run_report`` attribute).

    Raises:
        ToleranceError: the fast mode cannot meet its tolerance (nothing written).
        RangeDistError: tiles still missing at the end (rerun to resume).
    """
    cfg = plan.config
    log = sys.stderr if log is None else log  # looked up per call: tests and callers swap sys.stderr
    print(plan.describe(), file=log)
    # An object store: the driver's checks and writes name the endpoint, bucket or permission when they
    # fail (ObjectStoreError); the lease is the run's first write, so a read-only key stops it here.
    # one driver per store, taken before any compute (the fast-mode planning included)
    with StoreLease(cfg.out, f"embed-grid -> {cfg.out}", takeover=cfg.takeover) as lease:
        if lease.replaced is not None:
            print(f"took over the lease of {lease.replaced.describe(time.time())}: {lease.replaced_reason}", file=log)
        planned = with_fast_plan(plan, log)
        report = _run_leased(planned, executor, log)
        report.fast_plan = planned.attrs.get("range_dist:fast")
        report.lease = lease.report()
        finalize_cube(cfg.out, {**report.as_dict(), "sample_assets": plan.sample})
    print(report.summary(cfg.out, plan.assets_label), file=log)  # type: ignore[arg-type]  # formatted only
    if cfg.overviews is not None:  # after the lease is released: build_overviews takes it itself
        for level in build_overviews(cfg.out, min_resolution=cfg.overviews):
            print(f"overview level {level.level}: {level.resolution:g}° {level.shape[0]}x{level.shape[1]} cells, "
                  f"{level.computed} tile(s) computed, {level.already_done} already done", file=log)
    return report


def _run_leased(plan: GridPlan, executor: TileExecutor, log: Any) -> RunReport:
    cfg = plan.config
    status = open_or_create_cube(cfg.out, plan.layout, plan.signature, plan.attrs, overwrite=cfg.overwrite)
    if (status != TILE_MISSING).any():  # a resume: do the done tiles hold what the record promises?
        bad = [c for c in check_tiles(cfg.out, full=cfg.verify) if c.state != "ok"]
        if bad:
            print(f"{len(bad)} tile(s) marked done failed their {'full' if cfg.verify else 'presence'} check "
                  f"({', '.join(sorted({c.state for c in bad}))}); recomputing exactly them", file=log)
            reset_tiles(cfg.out, [(c.row, c.col) for c in bad])
            status = read_tile_status(cfg.out)
    todo = [t for t in plan.tiles if status[t.row, t.col] == TILE_MISSING]
    report = RunReport(tiles_total=len(plan.tiles), tiles_already_done=len(plan.tiles) - len(todo),
                       executor=executor.name)
    if report.tiles_already_done:
        print(f"resuming: {report.tiles_already_done} tile(s) already done, {len(todo)} to go", file=log)
    progress = Progress(total=len(todo), unit="tiles", label="embed-grid", stream=log)
    start = time.perf_counter()
    if todo:
        def on_result(result: TileResult) -> None:
            report.add(result)
            progress.update(1, result.points)

        try:
            report.parallel_workers, report.startup_seconds = executor.run_tiles(plan, todo, on_result, log=log)
        except STOP_SIGNALS as exc:
            finished = report.tiles_computed + report.tiles_skipped
            raise Interrupted.after(
                exc, f"{finished} of {len(todo)} tiles ({report.tiles_already_done} were done before); tiles in "
                "flight were not marked done", cfg.out) from None
    report.wall_seconds = time.perf_counter() - start
    final = read_tile_status(cfg.out)
    missing = int((final == TILE_MISSING).sum())
    if missing:
        raise RangeDistError(f"{missing} tile(s) are still missing in {cfg.out}; rerun the same command to resume")
    report.tiles_computed_total = int((final == TILE_COMPUTED).sum())
    return report
