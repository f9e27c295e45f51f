"""Throughput of exact RANGE+ retrieval on this machine, against its matmul rate and a naive reference.

What it measures, in one run on one synthetic database (random keys 256-d, values 1024-d, row
locations uniform on the sphere) and random query points (uniform on the sphere), with a SatCLIP
location encoder of random weights (L=10, capacity 256):

1. The machine's fp32 matrix-product rate: ``torch.mm`` of two 2048×2048 fp32 matrices, best of
   several repetitions (GFLOP/s). Everything else is judged against it.
2. Retrieval alone: ``retrieve_partials`` + ``blend`` over precomputed q̂ / xyz (SatCLIP encoding
   excluded) for three β levels, and for the single β = 0.5. FLOPs counted are those of the
   dominant products per (query, database row): semantic scores 2·K, spatial scores 2·3, and the
   values product 2·(D + 1) per head (the ones column gives the softmax denominators). Reported:
   seconds, points/s, GFLOP/s and its fraction of the matmul rate (target >= 0.70), and the ratio
   time(3 β) / time(1 β) (target <= 1.3).
3. ``RangeEncoder.encode`` end to end (SatCLIP encoding + retrieval + copy to numpy), points/s.
4. A naive reference in float32 torch, per β separately: full softmax over all rows per query chunk,
   ``A = softmax(τ_sem q̂K̂ᵀ)``, ``G = softmax(τ_geo xyz·xyzᵀ)``, ``H = (1-β)·G·V + β·A·V``, output
   ``[H | q̂]``. It is timed on a subset of the points and scaled linearly to all points (the output
   says so); its results are compared with the engine's (max abs difference, expected <~1e-5), and
   both are compared with a float64 evaluation of the same formula on a few points.
5. Memory: peak resident set size (``ru_maxrss``) after setup, after the timings (engine and naive)
   and at the end (float64 check), and the engine's working-buffer bytes per query block.

Timings use ``time.perf_counter`` after a warm-up. The timed items (matmul rate, retrieval 3 β,
retrieval 1 β, ``encode``, naive) are repeated ``--reps`` times, interleaved, and timed per query
block; the rates use the sum over blocks of each block's best time, which is robust to other
processes' busy spells on a shared machine (the share of the CPUs they took is measured from
/proc/stat and printed). ``--sweep`` additionally times the 3-β retrieval over a grid of query /
database chunk sizes on a subset of points.

Usage:
    python benchmarks/retrieval.py [--rows 100000 --points 5000 --betas 0,0.5,1 --threads N]
        [--query-chunk N --db-chunk M --values-ld W --naive-points P --reps R --sweep]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch

from range_dist.database.store import RetrievalDatabase
from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder
from range_dist.geo.coords import lonlat_to_xyz
from range_dist.geo.sphere import sample_sphere
from range_dist.retrieval.encoder import RangeEncoder
from range_dist.retrieval.engine import RetrievalSettings, blend, retrieve_partials

KEY_DIM, VALUE_DIM = 256, 1024
SWEEP_QUERY_CHUNKS = (128, 256, 512, 1024)
SWEEP_DB_CHUNKS = (1024, 2048, 4096, 8192, 16384)


class BenchEncoder(RangeEncoder):
    """A RangeEncoder whose query block size can be forced (otherwise it follows the memory budget)."""

    def __init__(self, *args: object, query_chunk: int | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.forced_query_chunk = query_chunk

    def settings(self, betas: Sequence[float]) -> RetrievalSettings:
        settings = super().settings(betas)
        if self.forced_query_chunk is None:
            return settings
        return dataclasses.replace(settings, query_chunk=self.forced_query_chunk)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class CpuMeter:
    """Share of the machine's CPUs that *other* processes used while the meter ran (Linux /proc/stat).

    The machine may be shared: a parallel matrix product slows down far more than proportionally when
    one of its threads loses its core, so timings taken while others are busy are pessimistic.
    """

    def __init__(self) -> None:
        self.other_ticks = 0.0
        self.wall = 0.0
        self._start: tuple[float, float, float] | None = None

    @staticmethod
    def _busy_ticks() -> float:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return float("nan")
        return float(sum(fields) - fields[3] - fields[4])  # all but idle and iowait

    def __enter__(self) -> CpuMeter:
        self._start = (self._busy_ticks(), sum(os.times()[:2]), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._start is not None
        busy0, own0, t0 = self._start
        busy = (self._busy_ticks() - busy0) / os.sysconf("SC_CLK_TCK")
        self.other_ticks += max(0.0, busy - (sum(os.times()[:2]) - own0))
        self.wall += time.perf_counter() - t0

    @property
    def other_share(self) -> float:
        """CPU-seconds used by other processes / (wall seconds × CPUs)."""
        return self.other_ticks / max(self.wall * (os.cpu_count() or 1), 1e-9)


def best_time(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """(best, median) wall seconds of ``reps`` calls of ``fn``."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


class BlockTimes:
    """Per-block seconds of repeated passes over the same blocks.

    ``block_best`` (the sum over blocks of each block's best time) is what a pass would take on a quiet
    machine: a busy spell of another process spoils some blocks of a pass, rarely the same ones twice.
    """

    def __init__(self) -> None:
        self.passes: dict[str, list[list[float]]] = {}

    def add(self, key: str, block_times: list[float]) -> None:
        self.passes.setdefault(key, []).append(block_times)

    def best_pass(self, key: str) -> float:
        return min(sum(p) for p in self.passes[key])

    def block_best(self, key: str) -> float:
        return sum(min(times) for times in zip(*self.passes[key]))


def matmul_rate(size: int = 2048, reps: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Best GFLOP/s of ``torch.mm`` of two size×size matrices (fp32 by default)."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen, dtype=dtype), torch.randn(size, size, generator=gen, dtype=dtype))
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)
    best, _ = best_time(lambda: torch.mm(a, b, out=out), reps)
    return 2.0 * size**3 / best / 1e9


def flops_per_pair(settings: RetrievalSettings, key_dim: int, width: int) -> int:
    """FLOPs of the dominant products per (query, database row)."""
    per = 2 * width * len(settings.heads)
    if "sem" in settings.heads:
        per += 2 * key_dim
    if "geo" in settings.heads:
        per += 2 * 3
    return per


def working_bytes(settings: RetrievalSettings, rows: int, key_dim: int, width: int, n_betas: int) -> int:
    """Engine working memory of one query block: weights, accumulator, averages and blended output."""
    n, heads = settings.query_chunk, len(settings.heads)
    weights = heads * n * min(settings.db_chunk, rows)
    acc = heads * n * width
    averages = heads * n * (width - 1)
    out = n_betas * n * (width - 1 + key_dim)
    return 4 * (weights + acc + averages + out)


def run_engine(
    encoder: RangeEncoder,
    q_hat: torch.Tensor,
    xyz: torch.Tensor,
    betas: Sequence[float],
    settings: RetrievalSettings,
    out: torch.Tensor | None = None,
) -> list[float]:
    """Retrieval only (``retrieve_partials`` + ``blend``) over precomputed q̂ / xyz; seconds per query block."""
    times = []
    with torch.no_grad():
        for qs in range(0, q_hat.shape[0], settings.query_chunk):
            t0 = time.perf_counter()
            block = slice(qs, qs + settings.query_chunk)
            stats = retrieve_partials(q_hat[block], xyz[block], encoder.db, settings)
            emb = blend(stats, q_hat[block], betas, "range+")
            if out is not None:
                out[:, block] = emb
            times.append(time.perf_counter() - t0)
    return times


def encode_block_times(encoder: RangeEncoder, points: npt.NDArray[np.float64], betas: Sequence[float]) -> list[float]:
    """``encoder.encode`` end to end; seconds per query block (the first includes the SatCLIP encoding)."""
    stamps = [time.perf_counter()]
    encoder.encode(points, betas, on_progress=lambda _: stamps.append(time.perf_counter()))
    return np.diff(stamps).tolist()


def naive_range_plus(
    q_hat: torch.Tensor,
    q_xyz: torch.Tensor,
    keys_hat: torch.Tensor,
    db_xyz: torch.Tensor,
    values: torch.Tensor,
    beta: float,
    tau_sem: float = 12.0,
    tau_geo: float = 40.0,
    chunk: int = 256,
    block_times: list[float] | None = None,
) -> torch.Tensor:
    """The published RANGE+ formula, straightforwardly: (n, D + K) ``[(1-β)·G·V + β·A·V | q̂]``."""
    parts = []
    for qs in range(0, q_hat.shape[0], chunk):
        t0 = time.perf_counter()
        q, x = q_hat[qs : qs + chunk], q_xyz[qs : qs + chunk]
        a = torch.softmax(tau_sem * (q @ keys_hat.T), dim=1)
        g = torch.softmax(tau_geo * (x @ db_xyz.T), dim=1)
        h = (1.0 - beta) * (g @ values) + beta * (a @ values)
        parts.append(torch.cat([h, q], dim=1))
        if block_times is not None:
            block_times.append(time.perf_counter() - t0)
    return torch.cat(parts)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="database rows")
    parser.add_argument("--points", type=int, default=5_000, help="query points")
    parser.add_argument("--betas", default="0,0.5,1", help="comma-separated β levels")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--query-chunk", type=int, default=None, help="force RetrievalSettings.query_chunk")
    parser.add_argument("--db-chunk", type=int, default=None, help="force RetrievalSettings.db_chunk")
    parser.add_argument(
        "--values-ld", type=int, default=None, help="store values_aug rows W floats apart (padding experiment)"
    )
    parser.add_argument("--naive-points", type=int, default=500, help="points timed for the naive reference")
    parser.add_argument("--fp64-points", type=int, default=64, help="points checked against float64")
    parser.add_argument("--reps", type=int, default=2, help="timed repetitions (interleaved; best kept)")
    parser.add_argument("--sweep", action="store_true", help="also time a grid of chunk sizes")
    parser.add_argument("--sweep-points", type=int, default=1_024, help="points per sweep timing")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    betas = tuple(float(b) for b in args.betas.split(","))
    one_beta = (0.5,)
    t_start = time.perf_counter()

    # ------------------------------------------------------------------ data
    rng = np.random.default_rng(args.seed)
    locations = sample_sphere(args.rows, rng)
    keys = rng.standard_normal((args.rows, KEY_DIM), dtype=np.float32)
    values = rng.standard_normal((args.rows, VALUE_DIM), dtype=np.float32)
    points = sample_sphere(args.points, rng)
    database = RetrievalDatabase(locations, keys, values)
    location_encoder = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=10, capacity=256))
    kwargs = {} if args.db_chunk is None else {"db_chunk": args.db_chunk}
    encoder = BenchEncoder(location_encoder, database, variant="range+", query_chunk=args.query_chunk, **kwargs)
    if args.values_ld is not None:
        width = encoder.db.values_aug.shape[1]
        storage = torch.zeros((args.rows, max(args.values_ld, width)), dtype=encoder.db.dtype)
        storage[:, :width] = encoder.db.values_aug
        encoder.db.values_aug = storage[:, :width]
    settings = encoder.settings(betas)
    settings_1 = encoder.settings(one_beta)
    width = int(encoder.db.values_aug.shape[1])
    per_pair = flops_per_pair(settings, KEY_DIM, width)
    per_pair_1 = flops_per_pair(settings_1, KEY_DIM, width)
    rss_setup = peak_rss_mib()

    print(
        f"RANGE+ retrieval benchmark: {args.rows:,} rows (K={KEY_DIM}, D={VALUE_DIM}), {args.points:,} points, "
        f"β = {', '.join(f'{b:g}' for b in betas)}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"settings: query_chunk={settings.query_chunk} db_chunk={settings.db_chunk} heads={','.join(settings.heads)} "
        f"values_aug {tuple(encoder.db.values_aug.shape)} row stride {encoder.db.values_aug.stride(0)}; "
        f"{per_pair} FLOP per (query, row)"
    )

    # ------------------------------------------------------------------ inputs and warm-up
    t0 = time.perf_counter()
    q_hat, xyz = encoder.query_features(points)
    t_features = time.perf_counter() - t0
    n_naive = min(args.naive_points, args.points)
    keys_hat = torch.nn.functional.normalize(torch.from_numpy(database.keys), dim=1)
    db_xyz = torch.from_numpy(lonlat_to_xyz(database.locations)).float()
    values_t = torch.from_numpy(database.values)
    qn, xn = q_hat[:n_naive], xyz[:n_naive]
    out = torch.empty((len(betas), args.points, encoder.output_dim), dtype=torch.float32)
    naive_out = torch.empty((len(betas), n_naive, encoder.output_dim), dtype=torch.float32)
    warm = min(args.points, settings.query_chunk)
    run_engine(encoder, q_hat[:warm], xyz[:warm], betas, settings)
    run_engine(encoder, q_hat[:warm], xyz[:warm], one_beta, settings_1)
    encoder.encode(points[:warm], betas)
    naive_range_plus(qn[:8], xn[:8], keys_hat, db_xyz, values_t, betas[0])

    # ------------------------------------------------------------------ timed repetitions, interleaved
    meter = CpuMeter()
    timings = BlockTimes()
    mm_rates: list[float] = []
    for _ in range(args.reps):
        with meter:
            mm_rates.append(matmul_rate())
            timings.add("3b", run_engine(encoder, q_hat, xyz, betas, settings, out))
            timings.add("1b", run_engine(encoder, q_hat, xyz, one_beta, settings_1))
            timings.add("encode", encode_block_times(encoder, points, betas))
            naive_blocks: list[float] = []
            for b, beta in enumerate(betas):
                naive_out[b] = naive_range_plus(qn, xn, keys_hat, db_xyz, values_t, beta, block_times=naive_blocks)
            timings.add("naive", naive_blocks)
    rss_timed = peak_rss_mib()
    mm_best = max(mm_rates)
    pairs = float(args.points) * args.rows
    naive_scale = args.points / n_naive

    # ------------------------------------------------------------------ accuracy
    diff = float((out[:, :n_naive] - naive_out).abs().max())
    scale = float(naive_out[:, :, :VALUE_DIM].abs().max())
    n64 = min(args.fp64_points, n_naive)
    ref = torch.stack(
        [
            naive_range_plus(
                qn[:n64].double(), xn[:n64].double(), keys_hat.double(), db_xyz.double(), values_t.double(), beta
            )
            for beta in betas
        ]
    )
    err_ours = float((out[:, :n64].double() - ref).abs().max())
    err_naive = float((naive_out[:, :n64].double() - ref).abs().max())
    rss_end = peak_rss_mib()

    # ------------------------------------------------------------------ report
    def row(what: str, key: str | None, flops: float | None, scale_to: float = 1.0) -> str:
        if key is None:
            best_pass = quiet = t_features
        else:
            best_pass, quiet = timings.best_pass(key) * scale_to, timings.block_best(key) * scale_to
        text = f"{what:<36s} {best_pass:8.2f} {quiet:8.2f} {args.points / quiet:9.0f}"
        if flops is not None:
            text += f" {flops / quiet / 1e9:8.1f} {flops / quiet / 1e9 / mm_best:6.2f}"
        return text

    betas_s = ",".join(f"{b:g}" for b in betas)
    print(
        f"fp32 matmul rate (torch.mm 2048x2048, best of 10 per rep): {mm_best:.1f} GFLOP/s "
        f"(per rep: {', '.join(f'{r:.0f}' for r in mm_rates)})"
    )
    print()
    print(f"{'what':<36s} {'pass s':>8s} {'Σblk s':>8s} {'points/s':>9s} {'GFLOP/s':>8s} {'of mm':>6s}")
    print(row(f"retrieval {len(betas)}β ({betas_s})", "3b", pairs * per_pair))
    print(row("retrieval 1β (0.5)", "1b", pairs * per_pair_1))
    print(row(f"encode end-to-end {len(betas)}β", "encode", pairs * per_pair))
    print(row("  SatCLIP features alone (1 pass)", None, None))
    print(row(f"naive {len(betas)}β (x{naive_scale:g} from {n_naive:,} pts)", "naive", None, naive_scale))
    print(
        f"(pass s: best of {args.reps} whole passes; Σblk s: sum over query blocks of each block's best time, "
        "used for the rates)"
    )
    t3, t1 = timings.block_best("3b"), timings.block_best("1b")
    t_naive = timings.block_best("naive") * naive_scale
    print()
    print(
        f"time({len(betas)}β)/time(1β) = {t3 / t1:.3f} (target <= 1.3); "
        f"fraction of matmul rate = {pairs * per_pair / t3 / 1e9 / mm_best:.2f} (target >= 0.70)"
    )
    print(
        f"speed-up ours vs naive, {len(betas)}β: {t_naive / t3:.2f}x (naive timed on {n_naive:,} of "
        f"{args.points:,} points, scaled linearly)"
    )
    print(
        f"max |ours - naive| = {diff:.2e} over {n_naive:,} points x {len(betas)}β x {encoder.output_dim} "
        f"(max |H| = {scale:.3f}); vs float64 on {n64} points: ours {err_ours:.2e}, naive {err_naive:.2e}"
    )
    print(
        f"other processes used {100 * meter.other_share:.0f}% of this machine's {os.cpu_count()} CPUs during the "
        "timings" + (" (busy machine: figures are pessimistic)" if meter.other_share > 0.05 else "")
    )
    work = working_bytes(settings, args.rows, KEY_DIM, width, len(betas))
    print(
        f"memory: engine working buffers {work / 2**20:.1f} MiB per query block; database on device "
        f"{encoder.db.nbytes / 2**20:.0f} MiB; peak RSS after setup {rss_setup:.0f} MiB, after the timings "
        f"(engine + naive) {rss_timed:.0f} MiB, at the end (float64 check) {rss_end:.0f} MiB"
    )

    # ------------------------------------------------------------------ chunk-size sweep
    if args.sweep:
        n_sweep = min(args.sweep_points, args.points)
        qs, xs = q_hat[:n_sweep], xyz[:n_sweep]
        grid = [(n, m) for n in SWEEP_QUERY_CHUNKS for m in SWEEP_DB_CHUNKS]
        best: dict[tuple[int, int], float] = {}
        sweep_meter = CpuMeter()
        with torch.no_grad():
            for rep in range(args.reps + 1):  # the first pass is the warm-up; passes interleave the grid
                for n, m in grid:
                    trial = dataclasses.replace(settings, query_chunk=n, db_chunk=m)
                    with sweep_meter:
                        def one(trial: RetrievalSettings = trial) -> object:
                            return run_engine(encoder, qs, xs, betas, trial)

                        t, _ = best_time(one, 1)
                    if rep:
                        best[(n, m)] = min(best.get((n, m), float("inf")), t)
        flops = float(n_sweep) * args.rows * per_pair
        print(
            f"\nchunk sweep, {len(betas)}β retrieval of {n_sweep:,} points, GFLOP/s (best of {args.reps}; other "
            f"processes used {100 * sweep_meter.other_share:.0f}% of the CPUs):"
        )
        print("query_chunk \\ db_chunk " + "".join(f"{m:>8d}" for m in SWEEP_DB_CHUNKS))
        for n in SWEEP_QUERY_CHUNKS:
            print(f"{n:>22d} " + "".join(f"{flops / best[(n, m)] / 1e9:8.1f}" for m in SWEEP_DB_CHUNKS))
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
