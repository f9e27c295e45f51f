"""Published-mode spherical harmonics: old per-op evaluation vs the vectorised program.

In one run, on the same points, for each L in ``--degrees``:

1. the old evaluation (``ExpressionProgram.evaluate_per_op``: one torch call per distinct
   subexpression, the code this replaced) and the new one (``spherical_harmonics(..., "published")``,
   i.e. ``VectorisedProgram``): points/s by wall clock and by this process's CPU time (the CPU-time
   figure is the stable one on a shared machine), and the speed-up new/old;
2. bit identity: new == old on every point and feature (compared as int64 bit patterns), and
   new == upstream's ``eval`` of the expression text on the first ``--check-points`` points;
3. peak resident memory of the process (Linux ``ru_maxrss``) and, on CUDA, peak device memory.

Points are uniform on the sphere plus the poles and the antimeridian (``--layout random``) or the
cell centres of a regular lat/lon grid tile (``--layout grid``).

Usage:
    python benchmarks/harmonics.py [--points 65536 --degrees 10,40 --threads 2]
    python benchmarks/harmonics.py --device cuda   # new on the GPU vs old on the GPU, and vs CPU
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import math
import resource
import time
from collections.abc import Callable

import numpy as np
import torch

from range_dist.encoders.sh_expressions import TABLE_PATH
from range_dist.encoders.spherical_harmonics import _published_program, angles_from_lonlat, spherical_harmonics


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_points(n: int, layout: str, seed: int = 0) -> torch.Tensor:
    """(n, 2) float64 lon/lat degrees: random on the sphere + awkward points, or a grid tile."""
    if layout == "grid":
        side = math.ceil(math.sqrt(n))
        lat, lon = np.meshgrid(np.linspace(60, 10, side), np.linspace(-20, 30, side), indexing="ij")
        pts = np.stack([lon.ravel(), lat.ravel()], axis=1)[:n]
        return torch.from_numpy(np.ascontiguousarray(pts))
    rng = np.random.default_rng(seed)
    pts = np.stack([rng.uniform(-180, 180, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))], axis=1)
    special = np.array([[0.0, 90.0], [0.0, -90.0], [180.0, 0.0], [-180.0, 0.0], [-180.0, 45.0], [179.9999, -89.9]])
    pts[-len(special) :] = special
    return torch.from_numpy(pts)


def timed(fn: Callable[[], torch.Tensor], device: torch.device, reps: int) -> tuple[torch.Tensor, float, float]:
    """(result, best wall seconds, best CPU seconds of this process) over ``reps`` runs."""
    best_wall = best_cpu = float("inf")
    out = torch.empty(0)
    for _ in range(reps):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return out, best_wall, best_cpu


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.contiguous().view(torch.int64), b.contiguous().view(torch.int64))


def upstream_eval(lonlat: torch.Tensor, degrees: int) -> torch.Tensor:
    """Upstream SatCLIP's evaluation: ``eval`` of each expression text with torch (trusted shipped table)."""
    with gzip.open(TABLE_PATH, "rt") as fh:
        table = json.load(fh)["expressions"][: degrees * degrees]
    phi, theta = angles_from_lonlat(lonlat)
    namespace = {"cos": torch.cos, "sin": torch.sin, "theta": theta, "phi": phi}
    columns = []
    for text in table:
        value = eval(text, {"__builtins__": {}}, namespace)  # the shipped table, as upstream does
        columns.append(value * torch.ones_like(phi) if isinstance(value, float) else value)
    return torch.stack(columns, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=65536)
    parser.add_argument("--degrees", default="10,40", help="comma-separated L values")
    parser.add_argument("--layout", choices=["random", "grid"], default="random")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]; cuda is skipped when unavailable")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--reps", type=int, default=3, help="runs of the new evaluation (best is reported)")
    parser.add_argument("--old-reps", type=int, default=1, help="runs of the old evaluation")
    parser.add_argument("--check-points", type=int, default=2048, help="points compared with upstream eval")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: CUDA is not available here; nothing to measure (skipped)")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    lonlat = make_points(args.points, args.layout).to(device)
    print(f"{args.points:,} points ({args.layout}), device {device}, torch threads {torch.get_num_threads()}")
    all_identical = True
    for degrees in (int(d) for d in args.degrees.split(",")):
        start = time.perf_counter()
        program = _published_program(degrees)
        compile_s = time.perf_counter() - start
        phi, theta = angles_from_lonlat(lonlat.to(torch.float64))
        new, new_wall, new_cpu = timed(
            functools.partial(spherical_harmonics, lonlat, degrees, "published"), device, args.reps
        )
        old, old_wall, old_cpu = timed(
            functools.partial(program.program.evaluate_per_op, theta, phi), device, args.old_reps
        )
        n = args.points
        identical = same_bits(new, old)
        check = lonlat[: args.check_points]
        upstream = upstream_eval(check, degrees)
        identical_upstream = same_bits(spherical_harmonics(check, degrees, "published"), upstream)
        print(
            f"L={degrees:2d} ({degrees * degrees} features, compiled in {compile_s:.2f} s): "
            f"old {n / old_wall:,.0f} pts/s wall, {n / old_cpu:,.0f} pts/CPU-s | "
            f"new {n / new_wall:,.0f} pts/s wall, {n / new_cpu:,.0f} pts/CPU-s | "
            f"speed-up {old_wall / new_wall:.1f}x wall, {old_cpu / new_cpu:.1f}x CPU"
        )
        print(
            f"      bit-identical: new == old on all {n:,} points x {degrees * degrees} features: {identical}; "
            f"new == upstream eval on {len(check):,} points: {identical_upstream}"
        )
        if device.type == "cuda":
            cpu_new = spherical_harmonics(check.cpu(), degrees, "published")
            differing = (cpu_new.view(torch.int64) != new[: len(check)].cpu().view(torch.int64)).any(dim=0).sum()
            print(f"      CUDA vs CPU: {int(differing)} of {degrees * degrees} features differ somewhere "
                  "(CUDA's cos/sin/pow are not CPU's; bit identity is to upstream on the same device)")
        all_identical = all_identical and identical and identical_upstream
        del new, old
    print(f"peak RSS {peak_rss_mib():,.0f} MiB")
    if device.type == "cuda":
        print(f"peak device memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    if not all_identical:
        raise SystemExit("bit identity FAILED")


if __name__ == "__main__":
    main()
