"""Benchmark: the embed-grid job end to end against its own kernel, on a local Ray.

Builds sample assets (an untrained SatCLIP-format checkpoint and a synthetic database of
``--rows`` rows), embeds a global grid of ``--resolution`` degrees (>= 200,000 points at the
default 0.5°) at 3 β levels on actors, and prints:

* end-to-end points/s (wall time of the tile loop) and the job's total wall time with Ray start;
* kernel-only points/s measured in the same run: ``RangeEncoder.encode`` on whole tiles' points in
  this process with the actor's thread count, nothing else; and the ratio end-to-end / kernel
  (target >= 0.7): what tiling, Ray dispatch and Zarr writes cost;
* bytes written and MiB/s, and peak resident memory of the driver and all Ray worker processes.

Usage: ``python benchmarks/grid.py [--resolution 0.5 --rows 4000 --tile-size 128 --betas 0,0.5,1]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil


class PeakMemory:
    """Samples the summed RSS of this process and its descendants (Ray workers) every 0.2 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=float, default=0.5)
    parser.add_argument("--rows", type=int, default=4000, help="database rows")
    parser.add_argument("--tile-size", type=int, default=128)
    parser.add_argument("--betas", default="0,0.5,1")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--executor", choices=["ray", "local"], default="ray")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from range_dist.assets import write_sample_assets
    from range_dist.executors import executor_for
    from range_dist.jobs.grid.config import GridJobConfig
    from range_dist.jobs.grid.plan import build_plan, load_inputs
    from range_dist.jobs.grid.run import run_grid

    work = args.workdir or Path(tempfile.mkdtemp(prefix="range_grid_bench_"))
    assets = write_sample_assets(work / "assets", rows=args.rows)
    config = GridJobConfig(resolution=args.resolution, betas=tuple(float(b) for b in args.betas.split(",")),
                           satclip=assets.checkpoint, db=assets.database, out=work / "cube.zarr",
                           tile_size=args.tile_size, dtype=args.dtype, executor=args.executor, overwrite=True)
    plan = build_plan(config, load_inputs(config, sample=True))
    start = time.perf_counter()
    with PeakMemory() as memory:
        report = run_grid(plan, executor_for(args.executor))
    total = time.perf_counter() - start
    # Kernel only, same data, same threads: the encoder on a few whole tiles, back to back.
    import numpy as np
    import torch

    from range_dist.grid.spec import tile_lonlat

    torch.set_num_threads(os.cpu_count() or 1)
    encoder = plan.payload.build("cpu")
    tiles = plan.tiles[: min(3, len(plan.tiles))]
    encoder.encode(tile_lonlat(plan.layout.grid, tiles[0])[:256], config.betas, dtype=np.float16)  # warm-up
    kernel_start = time.perf_counter()
    kernel_points = 0
    for tile in tiles:
        points = tile_lonlat(plan.layout.grid, tile)
        encoder.encode(points, config.betas, dtype=np.float16)
        kernel_points += len(points)
    kernel_pps = kernel_points / (time.perf_counter() - kernel_start)
    ratio = report.points_per_second / kernel_pps
    print("\n=== embed-grid benchmark ===")
    print(f"grid              {args.resolution}° {plan.layout.grid.shape} = {plan.points:,} points, "
          f"{len(config.betas)} β, db {args.rows:,} rows, tiles {args.tile_size}², {args.dtype}, {args.executor}")
    loop = report.wall_seconds - report.startup_seconds
    print(f"end to end        {report.points_per_second:10,.0f} points/s  ({loop:.1f} s tile loop; "
          f"+{report.startup_seconds:.1f} s Ray and actor start-up; {total:.1f} s in all)")
    print(f"kernel only       {kernel_pps:10,.0f} points/s  (RangeEncoder.encode on {len(tiles)} whole tiles, "
          f"{kernel_points:,} points, in this process)")
    print(f"ratio e2e/kernel  {ratio:10.2f}  (target >= 0.70)")
    print(f"written           {report.bytes_written / 2**20:10,.1f} MiB  "
          f"({report.bytes_written / 2**20 / loop:.1f} MiB/s)")
    print(f"peak memory       {memory.peak / 2**30:10.2f} GiB  (driver + Ray processes, RSS)")


if __name__ == "__main__":
    main()
