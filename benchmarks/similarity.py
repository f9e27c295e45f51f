"""Similarity map on a larger cube: throughput and peak memory against the cube's size and a NumPy reference.

Writes a synthetic float16 cube (one β, ``--res`` degrees, 1280 features, 10 % NaN cells) in the
beta layout with Zarr v3 shards, then times :func:`range_dist.analysis.similarity.similarity_map`
(dask, block by block) and reports the peak RSS growth next to the bytes an in-memory computation
would hold (the decoded float32 field). Reference rate: the machine's float32 matrix-vector rate on
a block already in memory (the naive formula), measured in the same run.

    python benchmarks/similarity.py --res 0.5 --out /tmp/sim_bench.zarr
"""

from __future__ import annotations

import argparse
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import psutil


def write_cube(path: Path, res: float, features: int, seed: int = 0) -> tuple[int, int]:
    import dask.array as da
    import xarray as xr

    n_lat, n_lon = round(180 / res), round(360 / res)
    lat = 90 - (np.arange(n_lat) + 0.5) * res
    lon = -180 + (np.arange(n_lon) + 0.5) * res
    rng = da.random.default_rng(seed)
    data = rng.standard_normal((1, n_lat, n_lon, features), chunks=(1, 256, 256, features), dtype=np.float32)
    mask = rng.random((1, n_lat, n_lon, 1), chunks=(1, 256, 256, 1)) < 0.1
    data = da.where(mask, np.nan, data + 0.5).astype(np.float16)
    ds = xr.Dataset({"embedding": (("beta", "lat", "lon", "feature"), data)},
                    coords={"beta": [0.5], "lat": lat, "lon": lon, "feature": np.arange(features, dtype=np.int32)})
    enc = {"embedding": {"chunks": (1, 32, 32, features), "shards": (1, 256, 256, features)}}
    if path.exists():
        shutil.rmtree(path)
    ds.to_zarr(path, zarr_format=3, consolidated=False, encoding=enc)
    return n_lat, n_lon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--res", type=float, default=0.5, help="cube resolution, degrees")
    parser.add_argument("--features", type=int, default=1280)
    parser.add_argument("--out", type=Path, default=Path("/tmp/sim_bench.zarr"))
    args = parser.parse_args()

    from range_dist.analysis.cube import open_cube
    from range_dist.analysis.similarity import similarity_map

    t0 = time.perf_counter()
    n_lat, n_lon = write_cube(args.out, args.res, args.features)
    cells = n_lat * n_lon
    stored = cells * args.features * 2
    print(f"cube: {n_lat}x{n_lon} cells x {args.features} float16 = {stored / 2**30:.2f} GiB stored "
          f"(written in {time.perf_counter() - t0:.1f} s)")

    proc = psutil.Process(os.getpid())
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ds = open_cube(args.out, beta=0.5)
    t0 = time.perf_counter()
    sim = similarity_map(ds, [(10.25, 45.25)], 0.5).compute()
    elapsed = time.perf_counter() - t0
    stop.set()
    watcher.join()
    valid = int(np.isfinite(sim.values).sum())
    in_memory = cells * args.features * 4  # the decoded float32 field a non-chunked computation would hold
    growth = peak[0] - base
    print(f"similarity_map: {elapsed:.2f} s, {cells / elapsed / 1e6:.2f} M cells/s, "
          f"{stored / elapsed / 2**30:.2f} GiB/s of stored cube read; {valid:,} valid cells")
    print(f"peak RSS growth: {growth / 2**20:.0f} MiB (peak RSS {peak[0] / 2**20:.0f} MiB) vs {in_memory / 2**20:.0f} "
          f"MiB for the field in memory: ratio {growth / in_memory:.3f}")

    # reference: float32 matrix-vector on a block already in memory (no I/O, no decode)
    block = np.random.default_rng(0).standard_normal((256 * 256, args.features)).astype(np.float32)
    ref = np.ones(args.features, np.float32)
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        (block @ ref) / np.linalg.norm(block, axis=1)
    ref_rate = reps * block.shape[0] / (time.perf_counter() - t0)
    print(f"reference (NumPy cosine on an in-memory float32 block): {ref_rate / 1e6:.2f} M cells/s; "
          f"similarity_map reaches {cells / elapsed / ref_rate:.2f}x of it (includes Zarr read + decode)")


if __name__ == "__main__":
    main()
