"""The Ray executor: grid tiles on actors and database-build batches on tasks + an encoder actor.

This is the only module of range_dist that imports ray; the jobs say WHAT, this says HOW.

Grid tiles:

Each replica of the database is one actor (``db_shards`` = 1) or a group of ``db_shards`` actors
that each hold a contiguous slice of the rows; their partial softmax statistics for a tile are
merged exactly by a small task that also writes the tile. The payload (location weights and
database) is put in the object store once, owned by a holder actor (so that a restarted actor can
fetch it again), and every actor builds its encoder from it once, moving its rows to its device (a
GPU when it was given one).

Dispatch keeps at most ``max_in_flight`` tiles queued per replica. Actors restart when their
process dies (``max_restarts``) and Ray retries the interrupted call (``max_task_retries``); tile
writes are idempotent, so a tile finished by an actor that died before answering is simply
written again. A tile that still fails is retried on a fresh replica, up to ``MAX_TILE_ATTEMPTS``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import ray

from range_dist.errors import RangeDistError
from range_dist.grid.spec import GridSpec, TileKey
from range_dist.jobs.build.config import BuildConfig
from range_dist.jobs.build.plan import BuildPlan, LocationRow
from range_dist.jobs.build.run import EncodedBatch
from range_dist.jobs.build.steps import ChipOutcome, RowEncoder, read_batch
from range_dist.jobs.grid.plan import GridPlan
from range_dist.jobs.grid.steps import (
    EncoderPayload,
    TileResult,
    embed_and_write_tile,
    merge_and_write_tile,
    tile_partials,
)
from range_dist.retrieval.encoder import RangeEncoder
from range_dist.util import fault_injection

MAX_TILE_ATTEMPTS = 3
ACTOR_MAX_RESTARTS = 3


def ensure_ray(address: str | None) -> bool:
    """Connect to Ray: an address, $RAY_ADDRESS (inside ``ray job submit``), or a new local instance.

    Returns:
        True when this call started Ray (the caller shuts it down at the end).
    """
    if ray.is_initialized():
        return False
    # ray.init installs its own SIGTERM handler in the driver (it aborts with "*** SIGTERM received",
    # rc 134); the CLI's handler is put back so that SIGTERM stops the job cleanly (exit 143).
    on_sigterm = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        return _init_ray(address)
    finally:
        if on_sigterm is not None:
            signal.signal(signal.SIGTERM, on_sigterm)


def _init_ray(address: str | None) -> bool:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # A private local instance needs no token auth; the driver and the workers it starts must
        # agree on it, so it is set in this process's environment before Ray starts.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # address="local": always a new instance; a bare init() would try to join any cluster that
        # `ray start` once recorded on this machine, even a dead one.
        before = _descendants()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
        _start_watchdog(before)
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    return True


def _descendants() -> dict[int, Any]:
    import psutil

    return {p.pid: p for p in psutil.Process().children(recursive=True)}


def _start_watchdog(before: dict[int, Any]) -> None:
    """Have the local Ray this driver just started shut down with it, however it ends.

    See :mod:`range_dist.executors.ray_watchdog`: the watchdog holds the read end of a pipe whose
    write end only this process has; the kernel closes it when this process ends. Only the
    processes that ``ray.init`` started are listed (not ``before``: the caller's own servers).
    """
    import json
    import subprocess

    ray_processes = [p for pid, p in _descendants().items() if pid not in before]
    started = [(p.pid, p.create_time()) for p in ray_processes]
    raylet = next((p.pid for p in ray_processes if "raylet" in p.name()), None)
    spec = json.dumps({"started": started, "raylet_pid": raylet})
    watchdog = subprocess.Popen([sys.executable, "-m", "range_dist.executors.ray_watchdog", spec],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
    _WATCHDOGS.append(watchdog)  # keeps the pipe's write end open for this process's lifetime


_WATCHDOGS: list[Any] = []


def stop_local_ray() -> None:
    """``ray.shutdown()``, then let the watchdogs end whatever of that instance did not stop."""
    ray.shutdown()
    while _WATCHDOGS:
        watchdog = _WATCHDOGS.pop()
        if watchdog.stdin is not None:
            watchdog.stdin.close()


@ray.remote(num_cpus=0)
class PayloadHolder:
    """Owns the run's payload (location weights + database) in the object store, for the whole run.

    A TileWorker gets only this holder's name and fetches the payload itself, on start and again on
    every restart. Passing the payload (or its reference) as a constructor argument instead makes
    Ray warn "constructor arguments in the object store and max_restarts > 0" on every run, and
    rightly: the driver owns that object, and once the driver's reference is gone a restarted actor
    cannot fetch it (ray-project/ray#53727). An object ``ray.put`` here is owned by this actor,
    which lives until the run ends (it is killed with the workers, or dies with the driver).
    """

    def __init__(self, box: list[Any]) -> None:
        # ``box`` hides the driver's reference from Ray's argument resolution; the copy put here is
        # this actor's own, so the driver can drop its reference as soon as this actor is ready
        self._box = [ray.put(ray.get(box[0]))]

    def payload(self) -> list[Any]:
        """The payload's reference, in a list so that Ray hands it over unresolved."""
        return self._box


@ray.remote(max_restarts=ACTOR_MAX_RESTARTS, max_task_retries=ACTOR_MAX_RESTARTS)
class TileWorker:
    """Thin Ray wrapper: holds a RangeEncoder over (a shard of) the database; calls the plain functions."""

    def __init__(self, holder: str, shard: tuple[int, int] | None, device: str, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        box: list[Any] = ray.get(ray.get_actor(holder).payload.remote())
        payload: EncoderPayload = ray.get(box[0])
        self.encoder: RangeEncoder = payload.build(device, shard)
        self.tiles_done: int = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # raised inside Ray's own accessor
            self.reconstructed: bool = ray.get_runtime_context().was_current_actor_reconstructed

    def ready(self) -> int:
        return os.getpid()

    def _after_tile(self) -> None:
        self.tiles_done += 1
        fault_injection.after_tile(self.tiles_done, self.reconstructed)  # no-op outside tests

    def embed_tile(self, grid: GridSpec, tile: TileKey, betas: Sequence[float], land_only: bool,
                   store: str, dtype: str) -> TileResult:
        result = embed_and_write_tile(self.encoder, grid, tile, betas, land_only, Path(store), dtype)
        self._after_tile()
        return result

    def partials(self, grid: GridSpec, tile: TileKey, betas: Sequence[float], land_only: bool) -> Any:
        result = tile_partials(self.encoder, grid, tile, betas, land_only)
        self._after_tile()
        return result


@ray.remote(num_cpus=0, max_retries=3)
def _merge_and_write(grid: GridSpec, tile: TileKey, betas: Sequence[float], variant: str, land_only: bool,
                     store: str, dtype: str, *parts: Any) -> TileResult:
    return merge_and_write_tile(parts, grid, tile, betas, variant, land_only, Path(store), dtype)


def _resources(plan: GridPlan) -> tuple[int, float, float, str]:
    """(replicas, gpus per actor, cpus per actor, device) from the config and the cluster.

    Without an explicit ``cpus_per_actor``, the CPUs are shared out among all actors, in fractions
    when there are more actors than CPUs (a request above the cluster's CPUs would wait forever).
    """
    cfg = plan.config
    cluster = ray.cluster_resources()
    total_cpus, total_gpus = int(cluster.get("CPU", 1)), float(cluster.get("GPU", 0))
    shards = cfg.db_shards
    gpus = cfg.gpus_per_actor if cfg.gpus_per_actor is not None else (1.0 if total_gpus > 0 else 0.0)
    if gpus > 0:
        if gpus > total_gpus:
            raise RangeDistError(f"gpus_per_actor={gpus} but the Ray cluster has {total_gpus:g} GPU(s)")
        replicas = cfg.num_actors or max(1, int(total_gpus // (gpus * shards)))
        cpus = float(cfg.cpus_per_actor or 1)
        device = "cuda"
    else:
        replicas = cfg.num_actors or 1
        cpus = float(cfg.cpus_per_actor or total_cpus / (replicas * shards))
        if cpus * replicas * shards > total_cpus:
            raise RangeDistError(
                f"{replicas} replica(s) × {shards} shard(s) × {cpus:g} CPU(s) per actor exceeds the Ray "
                f"cluster's {total_cpus} CPUs; lower --num-actors / --cpus-per-actor or leave them unset"
            )
        device = "cpu"
    return replicas, gpus, cpus, device


class _Replica:
    """One database replica: one actor, or ``db_shards`` actors holding a slice of the rows each."""

    def __init__(self, plan: GridPlan, holder: str, gpus: float, cpus: float, device: str) -> None:
        cfg = plan.config
        bounds = plan.payload.database.shard_bounds(cfg.db_shards) if cfg.db_shards > 1 else [None]
        self.actors = [
            # Two calls at a time per actor: one tile's Zarr write (compression, in C, GIL released)
            # overlaps the next tile's compute.
            TileWorker.options(num_cpus=cpus, num_gpus=gpus, max_concurrency=2,  # type: ignore[attr-defined]
                               runtime_env=fault_injection.runtime_env()).remote(
                holder, b, device, max(1, int(cpus)))
            for b in bounds
        ]
        self.in_flight = 0

    def submit(self, plan: GridPlan, tile: TileKey) -> Any:
        cfg = plan.config
        grid, store = plan.layout.grid, str(cfg.out)
        # the β levels and dtype a tile is computed at (heads layout: β = 0 and 1, the two heads)
        betas, dtype = plan.compute_betas, plan.compute_dtype
        self.in_flight += 1
        if len(self.actors) == 1:
            return self.actors[0].embed_tile.remote(grid, tile, betas, cfg.land_only, store, dtype)
        parts = [a.partials.remote(grid, tile, betas, cfg.land_only) for a in self.actors]
        return _merge_and_write.remote(grid, tile, betas, cfg.variant, cfg.land_only, store, dtype, *parts)

    def kill(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)


def run_tiles_on_ray(plan: GridPlan, tiles: Sequence[TileKey], on_result: Callable[[TileResult], None],
                     address: str | None = None, log: Any = sys.stderr) -> tuple[int, float]:
    """Compute ``tiles`` on Ray actors, calling ``on_result`` as each finishes.

    Returns:
        (replicas that worked in parallel, start-up seconds: Ray and the actors' model loading).
    """
    cfg = plan.config
    start = time.perf_counter()
    started = ensure_ray(address)
    try:
        replicas_n, gpus, cpus, device = _resources(plan)
        print(f"ray: {replicas_n} replica(s) × {cfg.db_shards} actor(s), {cpus} CPU(s) and {gpus:g} GPU(s) "
              f"per actor, device {device}", file=log)
        # once per run in the object store (Ray copies it once to each node that needs it), owned by a
        # holder actor so that a restarted worker can always fetch it again (see PayloadHolder)
        holder_name = f"range-dist-payload-{uuid.uuid4().hex[:12]}"
        holder = PayloadHolder.options(name=holder_name).remote([ray.put(plan.payload)])  # type: ignore[attr-defined]
        ray.get(holder.payload.remote())  # the holder has its copy: the driver's reference can go
        replicas = [_Replica(plan, holder_name, gpus, cpus, device) for _ in range(replicas_n)]
        ray.get([actor.ready.remote() for replica in replicas for actor in replica.actors])
        startup = time.perf_counter() - start
        queue: deque[TileKey] = deque(tiles)
        attempts: dict[TileKey, int] = {}
        in_flight: dict[Any, tuple[TileKey, int]] = {}

        def fill(index: int) -> None:
            replica = replicas[index]
            while queue and replica.in_flight < cfg.max_in_flight:
                tile = queue.popleft()
                in_flight[replica.submit(plan, tile)] = (tile, index)

        for i in range(len(replicas)):
            fill(i)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            tile, index = in_flight.pop(ref)
            replicas[index].in_flight -= 1
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, RangeDistError):
                    raise exc.cause from None
                raise
            except ray.exceptions.RayError as exc:  # actor died for good, object lost, ...
                attempts[tile] = attempts.get(tile, 0) + 1
                if attempts[tile] >= MAX_TILE_ATTEMPTS:
                    raise RangeDistError(f"{tile} failed {attempts[tile]} times; last error: {exc}") from exc
                print(f"ray: {tile} failed ({type(exc).__name__}); retrying on a fresh replica", file=log)
                replicas[index].kill()
                replicas[index] = _Replica(plan, holder_name, gpus, cpus, device)
                queue.appendleft(tile)
                fill(index)
                continue
            on_result(result)
            fill(index)
        for replica in replicas:
            replica.kill()
        ray.kill(holder, no_restart=True)
        return replicas_n, startup
    finally:
        if started:
            stop_local_ray()


# ---------------------------------------------------------------------------- database build
@ray.remote(num_cpus=0.5, max_retries=3)
def _read_task(batch: list[LocationRow], config: BuildConfig) -> list[ChipOutcome]:
    return read_batch(batch, config, threads=2)


@ray.remote(max_restarts=2, max_task_retries=2)
class EncoderActor:
    """Thin Ray wrapper: holds the key and value encoders; encodes read batches."""

    def __init__(self, config: BuildConfig, threads: int) -> None:
        self.encoder = RowEncoder(config, threads=threads)

    def encode(self, outcomes: list[ChipOutcome]) -> EncodedBatch:
        return self.encoder.encode(outcomes)


def encode_batches_on_ray(plan: BuildPlan, address: str | None = None) -> Iterator[EncodedBatch]:
    """Chip reads as tasks (I/O bound, at most ``2 × num_readers`` in flight), encoding on one actor
    (a GPU when the cluster has one); yields (RowBatch | None, failures) per batch in completion order.

    The driver appends (a single writer, so Zarr appends never race); a batch finished twice by a
    retried task is deduplicated by the done-id check of the next run's plan.
    """
    cfg = plan.config
    started = ensure_ray(address)
    try:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        actor = EncoderActor.options(num_cpus=1.0, num_gpus=gpus).remote(cfg, 1)  # type: ignore[attr-defined]
        pending = deque(plan.batches())
        reads: list[Any] = []
        encodes: list[Any] = []
        max_reads = 2 * cfg.num_readers
        while pending or reads or encodes:
            while pending and len(reads) + len(encodes) < max_reads:
                reads.append(_read_task.remote(pending.popleft(), cfg))
            ready, _ = ray.wait(reads + encodes, num_returns=1)
            ref = ready[0]
            if ref in reads:
                reads.remove(ref)
                encodes.append(actor.encode.remote(ref))
            else:
                encodes.remove(ref)
                yield ray.get(ref)
    finally:
        if started:
            stop_local_ray()


class RayExecutor:
    """Runs the jobs' steps on a Ray cluster: ``address`` None = $RAY_ADDRESS or a new local Ray."""

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def run_tiles(self, plan: GridPlan, tiles: Sequence[TileKey], on_result: Callable[[TileResult], None],
                  log: Any = sys.stderr) -> tuple[int, float]:
        return run_tiles_on_ray(plan, tiles, on_result, self.address, log)

    def encode_batches(self, plan: BuildPlan) -> Iterator[EncodedBatch]:
        return encode_batches_on_ray(plan, self.address)
