"""Run a grid plan: plan the fast mode (if asked), create or resume the cube, hand the missing
tiles to an executor, and finish with a run report (printed, and stored in the cube)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from range_dist.cube.integrity import check_tiles, reset_tiles
from range_dist.cube.store import (
    TILE_COMPUTED,
    TILE_MISSING,
    finalize_cube,
    open_or_create_cube,
    read_tile_status,
)
from range_dist.errors import ConfigError, Interrupted, RangeDistError
from range_dist.geo.land import land_mask
from range_dist.grid.spec import GridSpec, TileKey
from range_dist.jobs.grid.plan import GridPlan
from range_dist.jobs.grid.report import RunReport
from range_dist.jobs.grid.steps import TileResult
from range_dist.retrieval.fast.plan import FastPlan
from range_dist.util.lease import StoreLease
from range_dist.util.progress import Progress


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
    rng = np.random.default_rng(seed)
    cells = grid.shape[0] * grid.shape[1]
    picks = rng.choice(cells, size=min(cells, 8 * count), replace=False)
    lonlat = np.stack([grid.lon[picks % grid.shape[1]], grid.lat[picks // grid.shape[1]]], axis=1).astype(np.float64)
    if land_only:
        lonlat = lonlat[land_mask(lonlat)]
    return lonlat[:count]


def plan_fast_mode(plan: GridPlan, log: Any = sys.stderr) -> FastPlan:
    """Choose and validate the fast mode's approximations on cells of this grid (on the driver).

    Raises:
        ToleranceError: the tolerance is not met on the sample (nothing is written).
    """
    from range_dist.retrieval.fast.planner import plan_fast

    config = plan.config
    assert config.tolerance is not None
    sample = grid_sample(config.grid, config.land_only, 2 * config.validation_points)
    if len(sample) == 0:
        raise ConfigError("mode=fast: the grid has no cells to validate on (no land in the bbox?); use mode=exact")
    start = time.perf_counter()
    encoder = plan.payload.build("cpu")
    fast = plan_fast(encoder.retrieval_context(), sample, config.betas, config.tolerance, config.validation_points)
    print(f"[embed-grid] fast mode: measured error {fast.measured_error:.2e} <= tolerance {fast.tolerance:g} on "
          f"{fast.validation_points} cells (value rank {fast.value_rank}, interpolated {fast.spacing or 'none'}; "
          f"planned in {time.perf_counter() - start:.1f} s)", file=log, flush=True)
    return fast


def with_fast_plan(plan: GridPlan, log: Any = sys.stderr) -> GridPlan:
    """The plan with its fast mode planned and validated (unchanged in exact mode)."""
    if plan.config.mode != "fast":
        return plan
    fast = plan_fast_mode(plan, log)
    payload = replace(plan.payload, fast_plan=fast, betas=tuple(plan.config.betas))
    return replace(plan, payload=payload, attrs={**plan.attrs, "range_dist:fast": fast.describe()})


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
    # one driver per store, taken before any compute (the fast-mode planning included)
    with StoreLease(cfg.out, f"embed-grid -> {cfg.out}", takeover=cfg.takeover) as lease:
        if lease.replaced is not None:
            print(f"took over the lease of {lease.replaced.describe(time.time())}: {lease.replaced_reason}", file=log)
        report = _run_leased(with_fast_plan(plan, log), executor, log)
        report.lease = lease.report()
        finalize_cube(cfg.out, {**report.as_dict(), "sample_assets": plan.sample})
    print(report.summary(cfg.out, sample=plan.sample), file=log)
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
        except (KeyboardInterrupt, Interrupted) as exc:
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
