"""SatCLIP's location encoder on a grid tile: the dense first layer against the factorised one.

In one run, on the same points, for each SIREN width in ``--capacity`` (random weights, L = 40, the
published harmonics):

1. dense: the (N, L²) harmonics table, then the SIREN (what every call did before
   ``range_dist.encoders.satclip.factorised_linear``);
2. factorised: ``SatCLIPLocationEncoder.forward`` (on points sharing latitudes, the first layer from
   the harmonics' latitude and longitude factors);
3. the largest relative difference of the two outputs (float64 rounding), points/s of each and the
   speed-up, and the time of each part of the factorised path;
4. this machine's float64 matrix-product rate in the same run, and the dense path's first layer as a
   fraction of it (the reference: what the dense path cannot beat), and the peak resident memory.

Points are the cell centres of rows of a 0.1° grid tile (``--rows`` x ``--cols``), as the grid job's
SatCLIP calls see them (16,384 points per call), or uniform on the sphere (``--layout random``: no
shared latitudes, so both paths are the dense one).

Usage:
    python benchmarks/satclip.py [--rows 64 --cols 256 --capacity 256,512 --reps 3]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
from retrieval import best_time, matmul_rate, peak_rss_mib  # benchmarks/retrieval.py, beside this script

from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder, factorised_linear


def best_seconds(fn: Callable[[], object], reps: int) -> float:
    """Best wall seconds of ``reps`` calls (after one warm-up call)."""
    fn()
    return best_time(fn, reps)[0]


def points(layout: str, rows: int, cols: int) -> torch.Tensor:
    """(rows * cols, 2) float64 lon/lat degrees: a 0.1° tile's cell centres, or random on the sphere."""
    if layout == "random":
        rng = np.random.default_rng(0)
        n = rows * cols
        pts = np.stack([rng.uniform(-180, 180, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))], axis=1)
        return torch.from_numpy(pts)
    lat, lon = np.meshgrid(25.55 - 0.1 * np.arange(rows), 10.05 + 0.1 * np.arange(cols), indexing="ij")
    return torch.from_numpy(np.stack([lon.ravel(), lat.ravel()], axis=1))


def measure(pts: torch.Tensor, degrees: int, capacity: int, reps: int, rate: float) -> str:
    """One table row: both paths of a random-weight encoder of this width on ``pts``."""
    torch.manual_seed(0)
    encoder = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=degrees, capacity=capacity))
    first = encoder.nnet.layers[0]
    with torch.no_grad():
        dense = encoder.nnet(encoder.posenc(pts))
        ours = encoder(pts)
        diff = float(((ours - dense).norm(dim=1) / dense.norm(dim=1)).max())
        t_dense = best_seconds(lambda: encoder.nnet(encoder.posenc(pts)), reps)
        t_ours = best_seconds(lambda: encoder(pts), reps)
        features = encoder.posenc(pts)
        t_layer = best_seconds(lambda: first(features), reps)
        flops = 2.0 * features.shape[0] * features.shape[1] * capacity
        parts = encoder.posenc.factorised(pts)
        if parts is None:
            split = "dense path (no shared latitudes)"
        else:
            t_parts = best_seconds(lambda: encoder.posenc.factorised(pts), reps)
            t_linear = best_seconds(lambda: factorised_linear(parts, first.weight, first.bias), reps)
            split = f"{t_parts:.3f} / {t_linear:.3f} / {max(0.0, t_ours - t_parts - t_linear):.3f}"
    return (f"| {capacity} | {len(pts) / t_dense:,.0f} | {len(pts) / t_ours:,.0f} | {t_dense / t_ours:.2f}x | "
            f"{diff:.1e} | {flops / t_layer / 1e9 / rate:.2f} ({t_layer:.3f} s) | {split} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=64, help="tile rows (distinct latitudes)")
    parser.add_argument("--cols", type=int, default=256, help="tile columns (distinct longitudes)")
    parser.add_argument("--layout", choices=["grid", "random"], default="grid")
    parser.add_argument("--capacity", default="256,512", help="comma-separated SIREN widths (512: the released L40)")
    parser.add_argument("--degrees", type=int, default=40)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    pts = points(args.layout, args.rows, args.cols)
    rate = matmul_rate(1024, 5, dtype=torch.float64)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(pts):,} points ({args.layout}, "
          f"{args.rows} x {args.cols}); L = {args.degrees}; float64 matmul rate {rate:.0f} GFLOP/s")
    print("| width | dense pts/s | factorised pts/s | speed-up | max rel diff | dense layer 1 of f64 mm | "
          "factorised: harmonics / layer 1 / rest (s) |")
    print("|---|---|---|---|---|---|---|")
    for capacity in (int(c) for c in args.capacity.split(",")):
        print(measure(pts, args.degrees, capacity, args.reps, rate))
    print(f"peak RSS {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
