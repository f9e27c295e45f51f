"""Retrieval on a CUDA GPU at fp32, TF32 and bf16: points/s, fraction of the GPU's matmul rate, error.

In one run on one synthetic database (random keys 256-d, values 1024-d, rows uniform on the sphere)
and random query points, with the database resident on the device once:

1. The GPU's matrix-product rates: ``torch.mm`` of 8192² matrices in fp32 (TF32 off), TF32 and
   bf16 (float32 result), best of several (TFLOP/s).
2. For each precision: ``retrieve_partials`` + ``blend`` for the β levels over precomputed q̂ / xyz
   (SatCLIP encoding excluded), points/s, TFLOP/s of the dominant products and the fraction of the
   matching matmul rate (fp32 → fp32 rate, tf32 → TF32 rate, bf16 → bf16 rate; target >= 0.5 for bf16).
3. The largest relative error ``||emb - emb64|| / ||emb64||`` of each precision against a float64
   evaluation of the same engine on the device, on ``--check-points`` points.
4. ``RangeEncoder.encode`` end to end on the device at each precision, as users call it: a SatCLIP
   location encoder in the published layout (``--legendre-polys`` 40, random weights, published
   harmonics) + retrieval + blend + copy to host float32, points/s, with the SatCLIP encoding
   alone timed separately (the stage that is not retrieval).
5. Peak device memory.

Usage (on a GPU machine):
    python benchmarks/gpu.py [--rows 100000 --points 65536 --betas 0,0.5,1 --query-chunk 4096 --db-chunk 16384]
    python benchmarks/gpu.py --device cpu --rows 2000 --points 512   # smoke run of the script itself
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from range_dist.geo.coords import lonlat_to_xyz
from range_dist.geo.sphere import sample_sphere
from range_dist.retrieval.engine import DeviceDatabase, RetrievalSettings, blend, retrieve_partials
from range_dist.retrieval.fast.plan import relative_errors

KEY_DIM, VALUE_DIM = 256, 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    fn()
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_rates(device: torch.device, size: int, reps: int) -> dict[str, float]:
    """TFLOP/s of torch.mm at fp32 (TF32 off), tf32 and bf16 (float32 output on CUDA)."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    rates = {}
    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, allow in (("fp32", False), ("tf32", True)):
            torch.backends.cuda.matmul.allow_tf32 = allow
            rates[name] = 2 * size**3 / best_seconds(lambda: torch.mm(a, b), device, reps) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    a16, b16 = a.bfloat16(), b.bfloat16()
    if device.type == "cuda":
        bf16 = lambda: torch.mm(a16, b16, out_dtype=torch.float32)  # noqa: E731
    else:
        bf16 = lambda: torch.mm(a16, b16)  # noqa: E731
    rates["bf16"] = 2 * size**3 / best_seconds(bf16, device, reps) / 1e12
    return rates


def run(q_hat: torch.Tensor, xyz: torch.Tensor, db: DeviceDatabase, betas: Sequence[float],
        settings: RetrievalSettings) -> torch.Tensor:
    out = []
    for s in range(0, q_hat.shape[0], settings.query_chunk):
        block = slice(s, s + settings.query_chunk)
        out.append(blend(retrieve_partials(q_hat[block], xyz[block], db, settings), q_hat[block], betas, "range+"))
    return torch.cat(out, dim=1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--points", type=int, default=65_536)
    parser.add_argument("--betas", default="0,0.5,1")
    parser.add_argument("--query-chunk", type=int, default=4096)
    parser.add_argument("--db-chunk", type=int, default=16384)
    parser.add_argument("--check-points", type=int, default=256)
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--legendre-polys", type=int, default=40, help="L of the end-to-end SatCLIP encoder")
    parser.add_argument("--encode-points", type=int, default=16_384, help="points of the end-to-end timing")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run this on a GPU machine, or --device cpu for a smoke run")
    betas = tuple(float(b) for b in args.betas.split(","))
    rng = np.random.default_rng(0)
    lonlat = sample_sphere(args.rows + args.points, rng)
    keys = rng.standard_normal((args.rows, KEY_DIM), dtype=np.float32)
    values = rng.standard_normal((args.rows, VALUE_DIM), dtype=np.float32)
    db = DeviceDatabase(keys, lonlat[: args.rows], values, device=device)
    q_hat = torch.nn.functional.normalize(torch.randn(args.points, KEY_DIM, device=device), dim=1)
    xyz = torch.from_numpy(lonlat_to_xyz(lonlat[args.rows :])).float().to(device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}; torch {torch.__version__}; {args.rows:,} rows, {args.points:,} points, β = {betas}")
    rates = matmul_rates(device, args.matmul_size, args.reps)
    print("matmul rates (TFLOP/s): " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))

    n_check = min(args.check_points, args.points)
    db64 = DeviceDatabase(keys, lonlat[: args.rows], values, device=device, dtype=torch.float64)
    base = RetrievalSettings.for_variant("range+", betas, query_chunk=args.query_chunk, db_chunk=args.db_chunk)
    reference = run(q_hat[:n_check].double(), xyz[:n_check].double(), db64, betas, base)
    del db64
    per_pair = 2 * KEY_DIM + 6 + 2 * 2 * (VALUE_DIM + 1)
    print("| precision | points/s | TFLOP/s | fraction of its matmul rate | max rel. error vs float64 |")
    print("|---|---|---|---|---|")
    for precision in ("fp32", "tf32", "bf16"):
        settings = RetrievalSettings(**{**base.__dict__, "precision": precision})
        seconds = best_seconds(lambda s=settings: run(q_hat, xyz, db, betas, s), device, args.reps)
        tflops = args.points * args.rows * per_pair / seconds / 1e12
        error = float(relative_errors(run(q_hat[:n_check], xyz[:n_check], db, betas, settings), reference).max())
        print(f"| {precision} | {args.points / seconds:,.0f} | {tflops:.1f} | {tflops / rates[precision]:.2f} | "
              f"{error:.1e} |", flush=True)
    end_to_end(args, device, lonlat, keys, values, betas)
    if device.type == "cuda":
        print(f"peak device memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")


def end_to_end(args: argparse.Namespace, device: torch.device, lonlat: np.ndarray, keys: np.ndarray,
               values: np.ndarray, betas: Sequence[float]) -> None:
    """``RangeEncoder.encode`` with an L = ``--legendre-polys`` SatCLIP encoder, per precision."""
    from range_dist.database.store import RetrievalDatabase
    from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder
    from range_dist.retrieval.encoder import RangeEncoder

    torch.manual_seed(0)
    location = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=args.legendre_polys))
    database = RetrievalDatabase(lonlat[: args.rows], keys, values)
    points = lonlat[args.rows :][: args.encode_points]
    print(f"end to end: RangeEncoder.encode, SatCLIP L={args.legendre_polys} ({location.config.harmonics} "
          f"harmonics), {len(points):,} points, {args.rows:,} rows, β = {tuple(betas)}")
    print("| precision | points/s end to end | SatCLIP encoding alone, points/s | share of the time in SatCLIP |")
    print("|---|---|---|---|")
    for precision in ("fp32", "tf32", "bf16"):
        encoder = RangeEncoder(location, database, device=device, precision=precision, memory_budget_mb=4096)
        total = best_seconds(lambda e=encoder: e.encode(points, betas), device, max(1, args.reps - 1))
        feats = best_seconds(lambda e=encoder: e.query_features(points), device, max(1, args.reps - 1))
        print(f"| {precision} | {len(points) / total:,.0f} | {len(points) / feats:,.0f} | {feats / total:.0%} |",
              flush=True)


if __name__ == "__main__":
    main()
