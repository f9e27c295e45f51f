"""Benchmark: the grid job as users run it, exact against fast, end to end and per stage.

Sample assets in the published formats are made once and cached under ``--workdir``: a SatCLIP
checkpoint of random weights at L = 40 (published harmonics) and a database of ``--rows`` rows
(and one of ``--small-rows``), via :func:`range_dist.assets.write_sample_assets`. Each case runs
the real job (``load_inputs`` -> ``build_plan`` -> ``run_grid``, 3 β, float16, land only) with an
executor that is :class:`range_dist.executors.local.LocalExecutor` plus timers, once exact and once
fast at ``--tolerance``:

* wall time end to end (reading the assets, planning the fast mode, creating the cube, every tile,
  the final record; the interpreter's start-up and every import a run makes are measured once
  apart, and each run pays the per-process caches, SatCLIP's compiled harmonics and the land mask,
  as a fresh command does), points/s and the fast / exact ratio;
* a stage table: harmonics + SIREN, each retrieval head (exact; or lattice nodes, interpolation,
  checks, direct), blending, casting, compression (the tile's bytes through the cube's Blosc codec,
  timed alone), writing (the tile write minus compression), and what remains: reading + planning +
  waiting;
* the exact retrieval's rate as a fraction of this machine's fp32 matrix-product rate, measured in
  the same run just before and after it (a shared host's rate drifts over minutes), and the other
  processes' CPU share while each run ran (the machine may be shared);
* for the 0.25° cases, the fast cube's largest relative error against the exact one on all cells
  and β, from float32 outputs of the same runs (the cubes are float16), against the tolerance;
* peak RSS, and the resident cost of an encoder over the database in value copies;
* a global 0.1° land-only cube extrapolated from each measured 0.1° case;
* with ``--commands``: the cases as the commands users type instead, ``range-dist embed-grid`` in a fresh
  process with the local executor and with Ray (the default: a local Ray instance, a payload holder and
  one actor), exact and fast, wall time of the whole command and the Ray start-up the run report gives.

Usage:
    python benchmarks/grid_job.py --quick           # a few minutes: 20k rows, small regions
    python benchmarks/grid_job.py                   # the full table (100k rows; ~30 min on 2 cores)
    python benchmarks/grid_job.py --only 3 --repeat 5   # one case, median of 5 alternating runs per mode
    python benchmarks/grid_job.py --only 1 --commands   # the CLI as users run it, local executor and Ray
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psutil
import torch
from retrieval import CpuMeter, matmul_rate, peak_rss_mib  # benchmarks/retrieval.py, beside this script

from range_dist.assets import AssetPaths, write_sample_assets
from range_dist.database.store import RetrievalDatabase
from range_dist.executors.write_behind import WriteBehind
from range_dist.grid.spec import TileKey
from range_dist.jobs.grid.config import GridJobConfig
from range_dist.jobs.grid.plan import GridPlan, build_plan, load_inputs
from range_dist.jobs.grid.run import run_grid
from range_dist.jobs.grid.steps import EmbeddedTile, TileResult, tile_block, tile_points, write_embedded
from range_dist.retrieval.encoder import RangeEncoder
from range_dist.retrieval.fast.plan import relative_errors
from range_dist.retrieval.fast.retriever import FastStats
from range_dist.retrieval.timing import StageTimes
from range_dist.util.memory import numpy_without_huge_pages

BETAS = (0.0, 0.5, 1.0)
LEGENDRE_POLYS = 40
#: SIREN width of the released SatCLIP-ViT16-L40 (1600 -> 512 -> 512 -> 256, 1.21 M parameters); the
#: README's fast-mode table before the factorised first layer was measured at 256.
PUBLISHED_CAPACITY = 512


@dataclass(frozen=True)
class Case:
    name: str
    resolution: float
    bbox: tuple[float, float, float, float] | None
    rows: int
    tile_size: int = 256
    check_error: bool = False


def cases(quick: bool, rows: int, small_rows: int) -> list[Case]:
    if quick:
        return [
            Case("0.25° 10°×10° land", 0.25, (10.0, 10.0, 20.0, 20.0), rows, check_error=True),
            Case("0.1° one 128² tile", 0.1, (10.0, 0.0, 22.8, 12.8), rows, tile_size=128),
            Case(f"0.25° 10°×10°, {small_rows:,} rows", 0.25, (10.0, 10.0, 20.0, 20.0), small_rows, check_error=True),
            Case("2° global land", 2.0, None, rows),
            Case("0.1° Central Asia, two 128² tiles", 0.1, (60.0, 40.0, 85.6, 52.8), rows, tile_size=128),
        ]
    return [
        Case("0.25° 30°×30° land", 0.25, (10.0, 0.0, 40.0, 30.0), rows, check_error=True),
        Case("0.1° one 256² tile", 0.1, (10.0, 0.0, 35.6, 25.6), rows),
        Case(f"0.25° 30°×30°, {small_rows:,} rows", 0.25, (10.0, 0.0, 40.0, 30.0), small_rows, check_error=True),
        Case("1° global land", 1.0, None, rows),
        # a land region of several tiles, as a 0.1° run over land is: the run's fixed costs (start-up, reading,
        # planning, creating the cube) are paid once, and each tile's write runs behind the next tile
        Case("0.1° Central Asia, two 256² tiles", 0.1, (40.0, 40.0, 91.2, 65.6), rows),
        # a continent at 0.25° (2 × 2 tiles, two of them partial), as users run 0.25°: the one-tile 30°×30° case
        # above is mostly fixed costs in the fast mode
        Case("0.25° Africa, four 256² tiles", 0.25, (-20.0, -36.0, 52.0, 38.0), rows, check_error=True),
    ]


def ensure_assets(work: Path, rows: int, capacity: int = PUBLISHED_CAPACITY) -> AssetPaths:
    """The L = 40 sample checkpoint (SIREN width ``capacity``) and a ``rows``-row database, written once
    under ``work``."""
    width = "" if capacity == 256 else f"c{capacity}-"  # the earlier width-256 assets keep their folder
    out = work / f"assets-L{LEGENDRE_POLYS}-{width}{rows}"
    done = out / "done"
    if not done.exists():
        t0 = time.perf_counter()
        paths = write_sample_assets(out, rows=rows, legendre_polys=LEGENDRE_POLYS, capacity=capacity)
        done.write_text(f"{paths.checkpoint}\n{paths.database}\n")
        print(f"wrote sample assets {out} ({rows:,} rows, L={LEGENDRE_POLYS}, SIREN width {capacity}) in "
              f"{time.perf_counter() - t0:.1f} s")
    ckpt, db = done.read_text().split()
    return AssetPaths(Path(ckpt), Path(db))


def blosc_seconds(block: npt.NDArray[Any], chunk: int) -> float:
    """Seconds to compress a (B, h, w, F) tile block in (1, chunk, chunk, F) pieces with the cube's codec."""
    from numcodecs import Blosc

    codec = Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE)
    start = time.perf_counter()
    for b in range(block.shape[0]):
        for y in range(0, block.shape[1], chunk):
            for x in range(0, block.shape[2], chunk):
                codec.encode(np.ascontiguousarray(block[b, y : y + chunk, x : x + chunk]))
    return time.perf_counter() - start


class TimedLocalExecutor:
    """:class:`range_dist.executors.local.LocalExecutor` (one replica, one shard) with timers.

    Each tile is :func:`range_dist.jobs.grid.steps.embed_tile`'s steps, timed one by one, then
    :func:`~range_dist.jobs.grid.steps.write_embedded` behind the next tile's compute
    (:class:`~range_dist.executors.write_behind.WriteBehind`, as the local executor); with
    ``keep_float32`` the tile is encoded in float32, kept, and cast here (for the error check; the
    cast is the benchmark's own work, left out of the wall as the compression measure is).
    """

    name = "local"

    def __init__(self, keep_float32: bool = False) -> None:
        self.keep_float32 = keep_float32
        self.kept: dict[tuple[int, int], npt.NDArray[np.float32]] = {}
        self.encoder: RangeEncoder | None = None
        self.times = StageTimes()
        self.tile_seconds = 0.0
        self.extra_seconds = 0.0
        self.fast_stats = FastStats()

    def run_tiles(self, plan: GridPlan, tiles: Sequence[TileKey], on_result: Callable[[TileResult], None],
                  log: Any = sys.stderr) -> tuple[int, float]:
        cfg = plan.config
        # what LocalExecutor computes a tile at (a cube layout may compute other β / dtype than it stores)
        betas = getattr(plan, "compute_betas", cfg.betas)
        dtype = getattr(plan, "compute_dtype", cfg.dtype)
        t0 = time.perf_counter()
        self.encoder = encoder = plan.payload.build("cpu")
        self.times.add("building the encoder", time.perf_counter() - t0)

        def timed_write(embedded: EmbeddedTile) -> TileResult:  # in the writer thread, behind the next tile
            with self.times.stage("tile write in the background (incl. compression)"):
                return write_embedded(cfg.out, embedded)

        def reported(result: TileResult) -> None:
            if result.fast_checks is not None:
                self.fast_stats.merge(result.fast_checks)
            on_result(result)

        loop_start = time.perf_counter()
        with WriteBehind(reported) as writer:
            for tile in tiles:
                lonlat, mask = tile_points(plan.layout.grid, tile, cfg.land_only)
                if not mask.any():
                    writer.submit(partial(timed_write, EmbeddedTile(tile, None)))
                    continue
                if encoder.fast is not None:
                    encoder.fast.stats = FastStats()
                k0 = time.perf_counter()
                with self.times.stage("tile block (ocean NaN)"):  # ocean cells NaN: encode fills the rest
                    block = tile_block(tile, mask, len(betas), encoder.output_dim,
                                       np.float32 if self.keep_float32 else dtype)
                encoder.encode(lonlat[mask], betas, out=block, rows=np.flatnonzero(mask))
                kernel = time.perf_counter() - k0
                if self.keep_float32:  # the benchmark's own work (users' tiles are cast per block): not in the wall
                    measure = time.perf_counter()
                    self.kept[(tile.row, tile.col)] = block[:, mask]
                    with self.times.stage("casting (kept float32 copy)"):
                        block = block.astype(dtype)
                    self.extra_seconds += time.perf_counter() - measure
                block = block.reshape(len(betas), *tile.shape, -1)
                # measured alone, outside the job's time (the tile write compresses again)
                measure = time.perf_counter()
                self.times.add("compression", blosc_seconds(block, cfg.chunk_size))
                self.extra_seconds += time.perf_counter() - measure
                checks = None if encoder.fast is None else encoder.fast.stats
                writer.submit(partial(timed_write, EmbeddedTile(tile, block, int(mask.sum()), kernel, checks)))
        self.times.add("waiting for a tile write", writer.waited_seconds)
        self.tile_seconds += time.perf_counter() - loop_start - self.extra_seconds
        return 1, 0.0


@dataclass
class RunResult:
    wall: float
    points: int
    stages: dict[str, float]
    tile_seconds: float
    kept: dict[tuple[int, int], npt.NDArray[np.float32]]
    fast: dict[str, Any] | None
    other_cpu: float
    fast_stats: FastStats | None
    extra: dict[str, Any] = field(default_factory=dict)


def run_case(case: Case, mode: str, assets: AssetPaths, work: Path, tolerance: float, log: Any) -> RunResult:
    """One end-to-end run of the job; the cube goes to ``work``."""
    out = work / f"{case.name.replace('°', 'd').replace(' ', '_').replace('×', 'x').replace(',', '')}-{mode}.zarr"
    config = GridJobConfig(resolution=case.resolution, bbox=case.bbox, land_only=True, betas=BETAS,
                           satclip=assets.checkpoint, db=assets.database, out=out, tile_size=case.tile_size,
                           dtype="float16", executor="local", overwrite=True, mode=mode,
                           tolerance=tolerance if mode == "fast" else None)
    executor = TimedLocalExecutor(keep_float32=case.check_error)
    from range_dist.jobs.grid.run import fast_plan_path

    shutil.rmtree(out, ignore_errors=True)  # a fresh run each time: no resume, no saved fast plan
    fast_plan_path(out).unlink(missing_ok=True)
    fresh_process_caches()
    gc.collect()
    with CpuMeter() as meter:
        start = time.perf_counter()
        plan = build_plan(config, load_inputs(config, sample=True))
        report = run_grid(plan, executor, log=log)
        wall = time.perf_counter() - start - executor.extra_seconds
    other = meter.other_share
    import zarr

    stored = zarr.open_group(str(out), mode="r").attrs.get("range_dist:fast")
    fast_attr = dict(stored) if isinstance(stored, dict) else None
    encoder = executor.encoder
    stages = {} if encoder is None else dict(encoder.stages.seconds)
    stages.update(executor.times.seconds)
    return RunResult(wall, report.points, stages, executor.tile_seconds, executor.kept, fast_attr, other,
                     report.fast_checks)


STAGE_ORDER = ("harmonics + SIREN", "retrieval exact (sem+geo)", "sem: lattice nodes", "sem: interpolation",
               "sem: checks", "sem: direct", "geo: lattice nodes", "geo: interpolation", "geo: checks",
               "geo: direct", "sem+geo: direct", "blending", "casting + copy out", "casting (kept float32 copy)",
               "tile block (ocean NaN)", "compression", "writing (background)", "waiting for a tile write")


def stage_rows(result: RunResult) -> dict[str, float]:
    """Stage -> seconds, with writing = tile write - compression and the rest = reading + planning + waiting.

    The writes run behind the next tile's compute: only ``waiting for a tile write`` adds to the wall.
    """
    s = dict(result.stages)
    background = s.pop("tile write in the background (incl. compression)", 0.0)
    s["writing (background)"] = background - s.get("compression", 0.0)
    s.pop("building the encoder", None)
    s["reading + planning + waiting"] = max(0.0, result.wall - result.tile_seconds)
    return s


def flops_per_point(rows: int, heads: int = 2, key_dim: int = 256, value_dim: int = 1024) -> float:
    """Dominant FLOPs per query of the exact retrieval (scores 2K + 6, values 2(D+1) per head)."""
    return rows * (2 * key_dim + 6 + 2 * (value_dim + 1) * heads)


def largest_error(exact: RunResult, fast: RunResult) -> float:
    worst = 0.0
    for key, ref in exact.kept.items():
        approx = fast.kept[key]
        worst = max(worst, float(relative_errors(torch.from_numpy(approx), torch.from_numpy(ref)).max()))
    return worst


#: What a run imports: the CLI and the grid job, and what creating the cube imports lazily (zarr, and the CRS
#: attributes' pyproj and rasterio; no xarray, dask or rioxarray since the store writes its template itself).
RUN_IMPORTS = ("range_dist.cli.main", "range_dist.executors", "range_dist.jobs.grid.run",
               "range_dist.retrieval.encoder", "zarr", "zarr.codecs", "pyproj", "rasterio.crs")


def startup_seconds() -> float:
    """Seconds for a fresh interpreter to import what a run imports (what every command pays first)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import " + ", ".join(RUN_IMPORTS)], check=True)
    return time.perf_counter() - t0


def fresh_process_caches() -> None:
    """Empty the per-process caches a run fills (SatCLIP's compiled harmonics, the land mask), so that each
    run pays them as a fresh ``range-dist embed-grid`` would, not only the first run of this process."""
    from range_dist.encoders import spherical_harmonics
    from range_dist.geo import land

    spherical_harmonics._published_program.cache_clear()
    spherical_harmonics._shipped_table.cache_clear()
    land._packed.cache_clear()


def encoder_memory(assets: AssetPaths) -> str:
    """Resident MiB an exact encoder adds over an open database, in copies of the values."""
    from range_dist.encoders.checkpoints import load_satclip_location_encoder

    proc = psutil.Process()
    db = RetrievalDatabase.open(assets.database)
    location = load_satclip_location_encoder(assets.checkpoint)
    gc.collect()
    before = proc.memory_info().rss
    encoder = RangeEncoder(location, db)
    gc.collect()
    grown = (proc.memory_info().rss - before) / 2**20
    values = db.values.nbytes / 2**20
    keys = db.keys.nbytes / 2**20
    del encoder
    return (f"encoder over an open {db.rows:,}-row database: +{grown:,.0f} MiB resident (values {values:,.0f} MiB, "
            f"keys {keys:,.0f} MiB): {max(0.0, grown - keys) / values:.2f} extra copies of the values")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--rows", type=int, default=None, help="database rows (default 100,000; quick 20,000)")
    parser.add_argument("--small-rows", type=int, default=None, help="the small database (default 8,000; quick 4,000)")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--capacity", type=int, default=PUBLISHED_CAPACITY,
                        help=f"SIREN width of the random-weight L = 40 checkpoint (default {PUBLISHED_CAPACITY}, the "
                             "released model's)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/range_grid_job_bench"))
    parser.add_argument("--only", default=None, help="comma-separated case numbers (1-based) to run")
    parser.add_argument("--modes", default="exact,fast")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per mode and case, alternating the modes; the run of median wall is reported "
                             "(a shared machine's fixed costs vary by a second or more between runs)")
    parser.add_argument("--commands", action="store_true",
                        help="run the cases as `range-dist embed-grid` commands (fresh processes), with the local "
                             "executor and with Ray, instead of the in-process stage tables")
    args = parser.parse_args(argv)
    # as `range-dist` does first (NUMPY_MADVISE_HUGEPAGE=1 keeps numpy's huge pages, for an A/B)
    no_huge_pages = numpy_without_huge_pages()
    rows = args.rows or (20000 if args.quick else 100000)
    small_rows = args.small_rows or (4000 if args.quick else 8000)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "runs.log", "a")  # noqa: SIM115 - the job's own lines, kept apart from the tables
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; SatCLIP "
          f"L={LEGENDRE_POLYS} SIREN width {args.capacity} random weights (published harmonics); β {list(BETAS)}; "
          "float16 cube; land only; "
          f"tolerance {args.tolerance:g}; numpy huge pages {'off' if no_huge_pages else 'on'}; "
          f"job log {work / 'runs.log'}")
    rate = matmul_rate()
    print(f"fp32 matmul rate (torch.mm 2048², this run): {rate:.0f} GFLOP/s")
    start_up = startup_seconds()
    for module in RUN_IMPORTS:  # counted in the start-up above: no run below pays them
        importlib.import_module(module)
    print(f"interpreter start-up + imports: {start_up:.1f} s (paid once per command; added to every wall below)")
    selected = cases(args.quick, rows, small_rows)
    if args.only:
        selected = [selected[int(i) - 1] for i in args.only.split(",")]
    modes = args.modes.split(",")
    if args.commands:
        run_commands(selected, modes, work, args.capacity, args.tolerance, args.repeat)
        return
    summary = ["| case | rows | cells | exact pts/s | exact wall s | fast pts/s | fast wall s | fast / exact | "
               "fast error (all cells) | fast plan | other CPU |", "|---" * 11 + "|"]
    tables: list[str] = []
    per_point: dict[str, dict[str, float]] = {}
    for case in selected:
        assets = ensure_assets(work, case.rows, args.capacity)
        runs: dict[str, list[RunResult]] = {mode: [] for mode in modes}
        for repeat in range(args.repeat):
            for mode in modes:
                print(f"... {case.name}: {mode}" + (f" (run {repeat + 1} of {args.repeat})" if args.repeat > 1 else ""),
                      flush=True)
                r = run_case(case, mode, assets, work, args.tolerance, log)
                runs[mode].append(r)
                # the machine's rate drifts over a long run (shared host): measured before and after each run
                after = matmul_rate()
                r.extra["matmul_around"] = (rate + after) / 2.0
                rate = after
                print(f"    {r.points:,} points in {r.wall + start_up:.1f} s = {r.points / (r.wall + start_up):,.0f} "
                      f"points/s (other processes used {r.other_cpu:.0%} of the CPUs)", flush=True)
        results = {mode: sorted(rs, key=lambda r: r.wall)[len(rs) // 2] for mode, rs in runs.items()}
        if args.repeat > 1:
            print("    walls (s): " + "; ".join(
                f"{mode} " + ", ".join(f"{r.wall + start_up:.1f}" for r in rs) for mode, rs in runs.items())
                  + " (the median run is reported)", flush=True)
        tables.append(stage_table(case, results, rate, start_up))
        print(tables[-1], flush=True)
        ex, fa = results.get("exact"), results.get("fast")
        err = "-"
        if ex is not None and fa is not None and case.check_error:
            worst = largest_error(ex, fa)
            err = f"{worst:.2e} {'<=' if worst <= args.tolerance else '> !'} {args.tolerance:g}"
        plan_text = "-" if fa is None or fa.fast is None else describe_fast(fa.fast)
        cells = (ex or fa).points  # type: ignore[union-attr]
        eps = ex.points / (ex.wall + start_up) if ex else float("nan")
        fps = fa.points / (fa.wall + start_up) if fa else float("nan")
        summary.append(f"| {case.name} | {case.rows:,} | {cells:,} | {eps:,.0f} | "
                       f"{(ex.wall + start_up) if ex else float('nan'):.1f} | {fps:,.0f} | "
                       f"{(fa.wall + start_up) if fa else float('nan'):.1f} | "
                       f"{fps / max(eps, 1e-9):.2f}× | {err} | {plan_text} | "
                       f"{max(r.other_cpu for r in results.values()):.0%} |")
        print(summary[-1], flush=True)
        if case.resolution == 0.1:
            per_point[case.name] = {m: (r.tile_seconds / max(r.points, 1)) for m, r in results.items()}
            per_point[case.name].update({f"{m}_fixed": r.wall - r.tile_seconds for m, r in results.items()})
    print("\n=== summary (wall includes start-up, reading, planning, writing) ===")
    print("\n".join(summary))
    for name, pp in per_point.items():
        land_cells = 1_900_000
        line = [f"\nglobal 0.1° land-only cube extrapolated from '{name}' ({land_cells:,} land cells, 3 β, 2 cores):"]
        for mode in modes:
            if mode in pp:
                total = pp[f"{mode}_fixed"] + start_up + land_cells * pp[mode]
                line.append(f"  {mode}: {land_cells * pp[mode] / 3600:.1f} h of tiles + "
                            f"{pp[f'{mode}_fixed'] + start_up:.0f} s fixed = {total / 3600:.1f} h "
                            f"({1 / pp[mode]:,.0f} points/s per tile)")
        print("\n".join(line))
    print("\n" + encoder_memory(ensure_assets(work, rows, args.capacity)))
    print(f"peak RSS of this process: {peak_rss_mib():,.0f} MiB")


def command_run(case: Case, mode: str, executor: str, assets: AssetPaths, work: Path,
                tolerance: float) -> tuple[float, float | None]:
    """(wall seconds, Ray start-up seconds from the run report or None) of one ``range-dist embed-grid``
    command in a fresh interpreter, as a user types it (``--overwrite``: the earlier cube is replaced)."""
    out = work / f"command-{executor}-{mode}.zarr"
    argv = [sys.executable, "-m", "range_dist.cli.main", "embed-grid", "--resolution", f"{case.resolution:g}",
            "--land-only", "--betas", ",".join(f"{b:g}" for b in BETAS), "--satclip", str(assets.checkpoint),
            "--db", str(assets.database), "--out", str(out), "--dtype", "float16", "--tile-size",
            str(case.tile_size), "--executor", executor, "--mode", mode, "--sample-assets", "--overwrite"]
    if case.bbox is not None:
        argv += ["--bbox", ",".join(f"{x:g}" for x in case.bbox)]
    if mode == "fast":
        argv += ["--tolerance", f"{tolerance:g}"]
    shutil.rmtree(out, ignore_errors=True)  # no resume and no saved fast plan: a fresh run each time
    Path(f"{out}.fastplan.npz").unlink(missing_ok=True)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed (rc {done.returncode}):\n{done.stderr[-2000:]}")
    found = re.search(r"\(([0-9.]+) s start-up\)", done.stdout + done.stderr)
    return wall, (float(found.group(1)) if found and executor == "ray" else None)


def run_commands(selected: Sequence[Case], modes: Sequence[str], work: Path, capacity: int, tolerance: float,
                 repeat: int) -> None:
    """The cases as ``range-dist embed-grid`` commands, local executor and Ray, each mode ``repeat`` times
    (alternating; the median wall is reported)."""
    lines = ["| case | executor | " + " | ".join(f"{m} wall s" for m in modes)
             + (" | fast / exact" if {"exact", "fast"} <= set(modes) else "") + " | Ray start-up s |",
             "|---" * (3 + len(modes) + ({"exact", "fast"} <= set(modes))) + "|"]
    for case in selected:
        assets = ensure_assets(work, case.rows, capacity)
        for executor in ("local", "ray"):
            walls: dict[str, list[float]] = {m: [] for m in modes}
            starts: list[float] = []
            for _ in range(repeat):
                for mode in modes:
                    wall, ray_start = command_run(case, mode, executor, assets, work, tolerance)
                    walls[mode].append(wall)
                    starts += [] if ray_start is None else [ray_start]
                    print(f"    {case.name}, {executor}, {mode}: {wall:.1f} s"
                          + ("" if ray_start is None else f" (Ray start-up {ray_start:.1f} s)"), flush=True)
            median = {m: sorted(w)[len(w) // 2] for m, w in walls.items()}
            ratio = (f" | {median['exact'] / median['fast']:.2f}×" if {"exact", "fast"} <= set(modes) else "")
            lines.append(f"| {case.name} | {executor} | " + " | ".join(f"{median[m]:.1f}" for m in modes) + ratio
                         + f" | {', '.join(f'{s:.1f}' for s in starts) or '-'} |")
    print("\n=== the commands as users type them (wall of the whole command, fresh interpreter) ===")
    print("\n".join(lines))
    # the commands are this process's children (Ray's workers are not: their memory is not in it)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    print(f"peak RSS of the largest command process: {peak:,.0f} MiB")


def describe_fast(attr: dict[str, Any]) -> str:
    if attr.get("mode") != "fast":
        return f"exact fallback: {attr.get('reason', '?')}"
    heads = ", ".join(f"{h} {v['spacing_deg']}°" for h, v in attr.get("interpolated_heads", {}).items())
    plan_s = attr.get("planning_seconds")
    measured = attr.get("measured_error")
    checked = "checked per call" if measured is None else f"plan err {measured:.1e}"
    return (f"rank {attr.get('value_rank')}, {heads or 'no lattice'}; {checked}"
            + (f", planned in {plan_s:.1f} s" if plan_s is not None else ""))


def stage_table(case: Case, results: dict[str, RunResult], rate: float, start_up: float) -> str:
    rows_by_mode = {m: stage_rows(r) for m, r in results.items()}
    names = [n for n in STAGE_ORDER if any(n in s for s in rows_by_mode.values())]
    names += sorted({n for s in rows_by_mode.values() for n in s} - set(names) - {"reading + planning + waiting"})
    names.append("reading + planning + waiting")
    modes = list(results)
    lines = [f"\nstages of '{case.name}' ({case.rows:,} rows), seconds (share of wall):",
             "| stage | " + " | ".join(modes) + " |", "|---" * (len(modes) + 1) + "|"]
    for name in names:
        cells = []
        for m in modes:
            sec = rows_by_mode[m].get(name)
            cells.append("" if sec is None else f"{sec:.2f} ({sec / results[m].wall:.0%})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| start-up + imports | " + " | ".join(f"{start_up:.2f}" for _ in modes) + " |")
    lines.append("| wall (in process) | " + " | ".join(f"{results[m].wall:.2f}" for m in modes) + " |")
    exact = results.get("exact")
    if exact is not None and "retrieval exact (sem+geo)" in exact.stages:
        gflops = exact.points * flops_per_point(case.rows) / exact.stages["retrieval exact (sem+geo)"] / 1e9
        around = exact.extra.get("matmul_around", rate)
        lines.append(f"exact retrieval: {gflops:.0f} GFLOP/s = {gflops / around:.0%} of the matmul rate measured "
                     f"just before and after the run ({around:.0f} GFLOP/s)")
        # Amdahl: what the fast mode cannot make faster (start-up, reading, SatCLIP, casting, writing) bounds
        # its speed-up, even with a retrieval and a planning that cost nothing
        total = exact.wall + start_up
        rest = total - exact.stages["retrieval exact (sem+geo)"]
        lines.append(f"ceiling of fast / exact here: {total / rest:.1f}× ({rest:.1f} s of the exact run's "
                     f"{total:.1f} s is work both modes do: start-up, reading, SatCLIP, blending, casting, writing)")
    fast = results.get("fast")
    if fast is not None and fast.fast_stats is not None:
        lines.append(fast.fast_stats.summary())
    return "\n".join(lines)


if __name__ == "__main__":
    main()
