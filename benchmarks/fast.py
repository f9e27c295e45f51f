"""Exact vs fast retrieval on this machine: points/s, speed-up and measured error, in one run.

For each database size (random keys 256-d, random values 1024-d, rows uniform on the sphere; random
values are the worst case for the PCA basis, so the fast mode's gain here comes from interpolation)
and each set of β levels, on one dense tile of the grid job (``--tile`` × ``--tile`` cells at
``--resolution`` degrees; ``--sparse``: as many random points over the globe), with a SatCLIP
location encoder of random weights (L = ``--legendre-polys``, default 10, capacity 256, exact
harmonics):

* exact: ``RangeEncoder.encode`` (SatCLIP encoding + retrieval + copy out), best of ``--reps``;
  its retrieval rate as a fraction of this machine's fp32 matrix-product rate, measured in the same
  run (``torch.mm`` 2048², best of 10): the location-encoding time is measured alone and subtracted.
* fast at ``--tolerance``: planning time (choosing and validating the approximations), then
  ``encode`` with the plan, best of ``--reps`` (each on a fresh retriever, so no repetition reuses
  the lattice nodes of the one before); speed-up = exact time / fast time (planning excluded,
  it is paid once per run: reported separately); the plan's measured error on its check sample, and
  the actual largest relative error over every point of the tile against the exact output.
* peak RSS.

Usage:
    python benchmarks/fast.py [--rows 20000,100000 --betas-sets 0.5/0,0.5,1/0,0.25,0.5,0.75,1
        --tolerance 1e-3 --tile 96 --resolution 0.25 --reps 2 --threads N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import torch
from retrieval import matmul_rate, peak_rss_mib  # benchmarks/retrieval.py, beside this script

from range_dist.database.store import RetrievalDatabase
from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder
from range_dist.geo.sphere import sample_sphere
from range_dist.retrieval.encoder import RangeEncoder
from range_dist.retrieval.fast.plan import relative_errors

KEY_DIM, VALUE_DIM = 256, 1024
T = TypeVar("T")


def tile_points(size: int, resolution: float, west: float = 0.0, south: float = 40.0) -> npt.NDArray[np.float64]:
    """(size², 2) cell centres of one grid tile."""
    lon = west + (np.arange(size) + 0.5) * resolution
    lat = south + (np.arange(size) + 0.5) * resolution
    glon, glat = np.meshgrid(lon, lat)
    return np.stack([glon.ravel(), glat.ravel()], axis=1)


def random_database(rows: int, seed: int) -> RetrievalDatabase:
    rng = np.random.default_rng(seed)
    return RetrievalDatabase(sample_sphere(rows, rng), rng.normal(size=(rows, KEY_DIM)).astype(np.float32),
                             rng.normal(size=(rows, VALUE_DIM)).astype(np.float32))


def best_of(reps: int, fn: Callable[[], T], setup: Callable[[], object] | None = None) -> tuple[float, T]:
    """(best wall seconds, last result) of ``reps`` calls, each after an untimed ``setup``."""
    best = float("inf")
    for _ in range(max(1, reps)):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def pair_flops(heads: int) -> int:
    """Dominant FLOPs per (query, row): semantic scores 2K, spatial scores 6, values 2(D+1) per head."""
    return 2 * KEY_DIM + (6 if heads == 2 else 0) + 2 * (VALUE_DIM + 1) * heads


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="20000,100000", help="comma-separated database sizes")
    parser.add_argument("--betas-sets", default="0.5/0,0.5,1/0,0.25,0.5,0.75,1",
                        help="β sets separated by '/', each comma-separated")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--tile", type=int, default=96, help="cells per tile side")
    parser.add_argument("--resolution", type=float, default=0.25, help="cell size, degrees")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--legendre-polys", type=int, default=10,
                        help="SatCLIP harmonics degree L (published: 40; higher = less smooth semantic head)")
    parser.add_argument("--sparse", action="store_true",
                        help="random points over the globe (as many as the tile) instead of the dense tile")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    location = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=args.legendre_polys, capacity=256,
                                                            embed_dim=KEY_DIM, harmonics="exact"))
    points = tile_points(args.tile, args.resolution)
    if args.sparse:
        points = sample_sphere(len(points), np.random.default_rng(args.seed + 1))
    beta_sets = [tuple(float(b) for b in s.split(",")) for s in args.betas_sets.split("/")]
    where = "random over the globe" if args.sparse else f"a {args.tile}x{args.tile} tile at {args.resolution}°"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(points)} points ({where}); "
          f"SatCLIP L={args.legendre_polys}; tolerance {args.tolerance:g}")
    rate = matmul_rate()
    print(f"fp32 matmul rate (torch.mm 2048²): {rate:.0f} GFLOP/s")
    header = ("| rows | β | exact pts/s | exact / matmul | fast pts/s | fast / exact | plan s | "
              "measured err | max err (all pts) | plan |")
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for rows in (int(r) for r in args.rows.split(",")):
        db = random_database(rows, args.seed)
        exact = RangeEncoder(location, db)
        loc_seconds, _ = best_of(args.reps, lambda e=exact: e.query_features(points))
        for betas in beta_sets:
            exact_s, exact_out = best_of(args.reps, lambda e=exact, b=betas: e.encode(points, b))
            heads = len(exact.settings(betas).heads)
            retrieval_s = max(exact_s - loc_seconds, 1e-9)
            gflops = len(points) * rows * pair_flops(heads) / retrieval_s / 1e9
            fast = RangeEncoder(location, db, mode="fast", tolerance=args.tolerance)
            t0 = time.perf_counter()
            plan = fast.plan_fast(points, betas)
            plan_s = time.perf_counter() - t0
            # a fresh retriever per repetition: one keeps the lattice nodes of its last call (shared with a
            # neighbouring tile in a grid run), so a repeat on the same tile would evaluate none
            fast_s, fast_out = best_of(args.reps, lambda f=fast, b=betas: f.encode(points, b),
                                       setup=lambda f=fast, p=plan, b=betas: f.use_plan(p, b))
            actual = float(relative_errors(torch.from_numpy(fast_out), torch.from_numpy(exact_out)).max())
            what = f"rank {plan.value_rank}, " + ", ".join(f"{h} {s}°" for h, s in sorted(plan.spacing.items()))
            assert fast.fast is not None
            checks = fast.fast.stats
            what += (f"; checks: {checks.refinements} refinements, "
                     f"{checks.direct_heads}/{checks.direct_heads + checks.interpolated_heads} heads direct")
            lines.append(
                f"| {rows:,} | {len(betas)} | {len(points) / exact_s:,.0f} | {gflops / rate:.2f} | "
                f"{len(points) / fast_s:,.0f} | {exact_s / fast_s:.1f}× | {plan_s:.1f} | {plan.measured_error:.1e} | "
                f"{actual:.1e} | {what} |")
            print(lines[-1], flush=True)
    print(f"\nlocation encoding alone: {len(points) / loc_seconds:,.0f} points/s (in both modes' times)")
    print(f"peak RSS {peak_rss_mib():,.0f} MiB\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
