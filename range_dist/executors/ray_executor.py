"""The Ray executor: grid tiles on actors and database-build batches on tasks + an encoder actor.

This is the only module of range_dist that imports ray; the jobs say WHAT, this says HOW.

Grid tiles:

Each replica of the database is one actor (``db_shards`` = 1) or a group of ``db_shards`` actors
that each hold a contiguous slice of the rows; their partial softmax statistics for a tile are
merged exactly by a small task that also writes the tile. The payload (location weights and
database) is put in the object store once, owned by a holder actor (so that a restarted actor can
fetch it again), and every actor builds its encoder from it once, moving its rows to its device (a
GPU when it was given one).

Several nodes: the actors are placed with Ray's ``SPREAD`` strategy, so replicas go to different
nodes while there are nodes with room (one replica per node where each node has room for one),
and the payload is moved to each node once: the first ``ray.get`` on a node pulls it into that
node's object store, and every other actor of the node maps the same copy (numpy arrays are
zero-copy). Each actor reads, from Ray's own object location record (the owner's list of the
nodes holding a copy, and the object's size), the size of the copy its node holds; each tile
reports its node, actor and that size, and the run report sums one copy per node. Tiles carry only
their key and settings: the driver never sends payload bytes per tile.

Why SPREAD and not one actor pinned per node: SPREAD needs no knowledge of the nodes, honours
each actor's CPU/GPU request (several GPU actors fill a GPU node, as they should), places a
replacement wherever there is room, and still puts one replica per node when each node has room
for one.

Dispatch keeps at most ``max_in_flight`` tiles queued per replica. Actors restart when their
process dies (``max_restarts``) and Ray retries the interrupted call (``max_task_retries``); tile
writes are idempotent, so a tile finished by an actor that died before answering is simply
written again. A tile that still fails is retried on a fresh replica, up to ``MAX_TILE_ATTEMPTS``.

A lost node (its raylet gone) takes its actors with it, and Ray would restart them only where
there is room, which on a full cluster is nowhere (the calls would wait forever). So the driver
checks the cluster's live nodes every ``NODE_CHECK_SECONDS``: a replica on a dead node is
killed, its tiles go back to the queue for the other replicas, and a replacement is started that
joins only once Ray has placed it (e.g. when a node comes back).
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
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

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
    embed_tile,
    merge_and_write_tile,
    tile_partials,
    write_embedded,
)
from range_dist.retrieval.encoder import RangeEncoder
from range_dist.util import fault_injection
from range_dist.util.memory import numpy_without_huge_pages

MAX_TILE_ATTEMPTS = 3
ACTOR_MAX_RESTARTS = 3
NODE_CHECK_SECONDS = 2.0


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


def _payload_copies(ref: Any) -> tuple[int, list[str]]:
    """(object size in bytes, ids of the nodes whose object store holds a copy), from Ray's own record."""
    location = ray.experimental.get_object_locations([ref]).get(ref) or {}
    return int(location.get("object_size") or 0), [str(n) for n in location.get("node_ids") or []]


@ray.remote(max_restarts=ACTOR_MAX_RESTARTS, max_task_retries=ACTOR_MAX_RESTARTS)
class TileWorker:
    """Thin Ray wrapper: holds a RangeEncoder over (a shard of) the database; calls the plain functions."""

    def __init__(self, holder: str, shard: tuple[int, int] | None, device: str, threads: int) -> None:
        import torch

        numpy_without_huge_pages()  # as the driver's command: before the encoder's large arrays
        torch.set_num_threads(max(1, threads))
        context = ray.get_runtime_context()
        self.node_id: str = context.get_node_id()
        self.actor_id: str = context.get_actor_id() or ""
        box: list[Any] = ray.get(ray.get_actor(holder).payload.remote())
        # the first get on a node pulls the payload into the node's object store; later ones (other
        # actors, restarts) map that same copy
        payload: EncoderPayload = ray.get(box[0])
        size, nodes = _payload_copies(box[0])
        # the owner learns of a new copy asynchronously: give Ray's record a moment to list this node
        deadline = time.monotonic() + 10
        while size and self.node_id not in nodes and time.monotonic() < deadline:  # size 0: Ray has no record
            time.sleep(0.1)
            size, nodes = _payload_copies(box[0])
        # the size of the one copy this node's object store holds (0: Ray does not list it there)
        self.payload_bytes: int = size if self.node_id in nodes else 0
        self.encoder: RangeEncoder = payload.build(device, shard)
        self.tiles_done: int = 0
        self._count_lock: threading.Lock = threading.Lock()
        self._compute_lock: threading.Lock = threading.Lock()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # raised inside Ray's own accessor
            self.reconstructed: bool = context.was_current_actor_reconstructed

    def ready(self) -> dict[str, Any]:
        """Where this actor runs and what its payload fetch moved (the driver logs and watches it)."""
        return {"pid": os.getpid(), "node_id": self.node_id, "actor_id": self.actor_id,
                "payload_bytes": self.payload_bytes}

    def _after_tile(self) -> None:
        # two calls run at once (max_concurrency=2): the count and the fault hook go together under
        # the lock, so the hook sees 1, 2, ... in order (a kill after N tiles happens at N, not N + 1)
        with self._count_lock:
            self.tiles_done += 1
            fault_injection.after_tile(self.tiles_done, self.reconstructed)  # no-op outside tests
        # RANGE_DIST_TEST_FAULTS sleep_after_batch also slows tiles, so that a test can lose a node
        # mid-run (no-op outside tests)
        fault_injection.after_batch()

    def _placed(self, result: TileResult) -> TileResult:
        return replace(result, node_id=self.node_id, worker=self.actor_id, node_payload_bytes=self.payload_bytes)

    def embed_tile(self, grid: GridSpec, tile: TileKey, betas: Sequence[float], land_only: bool,
                   store: Path | str, dtype: str) -> TileResult:
        # the store as the config holds it: a local path, or a URL that Path() would mangle
        # Two calls run at once (max_concurrency=2), one computing: the other's write overlaps it. Two
        # computes at once would only share the same cores (each with its own thread team) and mix the
        # encoder's per-tile fast-mode statistics.
        with self._compute_lock:
            embedded = embed_tile(self.encoder, grid, tile, betas, land_only, dtype)
        result = write_embedded(store, embedded)
        self._after_tile()
        return self._placed(result)

    def partials(self, grid: GridSpec, tile: TileKey, betas: Sequence[float], land_only: bool) -> Any:
        """(node id, actor id, node payload bytes, this shard's partials) of one tile."""
        with self._compute_lock:  # one compute at a time, as embed_tile
            result = tile_partials(self.encoder, grid, tile, betas, land_only)
        self._after_tile()
        return self.node_id, self.actor_id, self.payload_bytes, result


@ray.remote(num_cpus=0, max_retries=3)
def _merge_and_write(grid: GridSpec, tile: TileKey, betas: Sequence[float], variant: str, land_only: bool,
                     store: Path | str, dtype: str, *placed: Any) -> TileResult:
    nodes, workers, payload_bytes, parts = zip(*placed, strict=True)
    result = merge_and_write_tile(parts, grid, tile, betas, variant, land_only, store, dtype)  # type: ignore[arg-type]
    # the shards' nodes and actors (the tile was computed on all of them)
    return replace(result, node_id="+".join(sorted(set(nodes))), worker="+".join(workers),
                   node_payload_bytes=max(payload_bytes))


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
    """One database replica: one actor, or ``db_shards`` actors holding a slice of the rows each.

    It starts ``starting`` (its actors' ``ready`` calls pending: Ray may not have placed them yet),
    becomes ``live`` when all answered, and ``lost`` once its node is gone or it was replaced.
    """

    def __init__(self, plan: GridPlan, holder: str, gpus: float, cpus: float, device: str) -> None:
        cfg = plan.config
        bounds = plan.payload.database.shard_bounds(cfg.db_shards) if cfg.db_shards > 1 else [None]
        self.actors = [
            # Two calls at a time per actor: one tile's Zarr write (compression, in C, GIL released)
            # overlaps the next tile's compute (computes take turns: TileWorker's lock). SPREAD:
            # replicas go to different nodes while there are nodes with room, so a run uses every
            # node and one lost node costs one replica.
            TileWorker.options(num_cpus=cpus, num_gpus=gpus, max_concurrency=2,  # type: ignore[attr-defined]
                               scheduling_strategy="SPREAD", runtime_env=fault_injection.runtime_env()).remote(
                holder, b, device, max(1, int(cpus)))
            for b in bounds
        ]
        self.pending: list[Any] = [actor.ready.remote() for actor in self.actors]
        self.info: list[dict[str, Any]] = []
        self.state = "starting"
        self.in_flight = 0

    @property
    def nodes(self) -> set[str]:
        """The nodes this replica's actors run on (known once they are ready)."""
        return {str(i["node_id"]) for i in self.info}

    def submit(self, plan: GridPlan, tile: TileKey) -> Any:
        cfg = plan.config
        grid, store = plan.layout.grid, cfg.out
        # the β levels and dtype a tile is computed at (heads layout: β = 0 and 1, the two heads)
        betas, dtype = plan.compute_betas, plan.compute_dtype
        self.in_flight += 1
        if len(self.actors) == 1:
            return self.actors[0].embed_tile.remote(grid, tile, betas, cfg.land_only, store, dtype)
        parts = [a.partials.remote(grid, tile, betas, cfg.land_only) for a in self.actors]
        return _merge_and_write.remote(grid, tile, betas, cfg.variant, cfg.land_only, store, dtype, *parts)

    def kill(self) -> None:
        self.state = "lost"
        for actor in self.actors:
            ray.kill(actor, no_restart=True)


def _alive_nodes() -> set[str]:
    return {str(n["NodeID"]) for n in ray.nodes() if n.get("Alive")}


def _describe_nodes(replicas: Sequence[_Replica]) -> str:
    """One line per node: its actors and the payload copy its object store holds."""
    by_node: dict[str, list[dict[str, Any]]] = {}
    for info in (i for r in replicas for i in r.info):
        by_node.setdefault(str(info["node_id"]), []).append(info)
    return "\n".join(
        f"ray: node {node[:8]}: {len(infos)} actor(s) sharing one payload copy of "
        f"{max(i['payload_bytes'] for i in infos) / 2**20:.1f} MiB in the node's object store"
        for node, infos in sorted(by_node.items()))


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
              f"per actor, device {device}, spread over {len(_alive_nodes())} node(s)", file=log)
        # once per run in the object store (Ray copies it once to each node that needs it), owned by a
        # holder actor so that a restarted worker can always fetch it again (see PayloadHolder). The
        # holder stays on the driver's node: losing any other node must not lose the payload's owner.
        holder_name = f"range-dist-payload-{uuid.uuid4().hex[:12]}"
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        # the planner's device rows and error sketches, kept with the database for a local run's tiles, are no
        # use to workers in other processes: the driver does not hold them (150 MB at 100k rows) while they run
        plan.payload.database.drop_kept()
        payload_ref = ray.put(plan.payload)
        holder = PayloadHolder.options(name=holder_name, scheduling_strategy=here).remote(  # type: ignore[attr-defined]
            [payload_ref])
        # the workers start while the holder does (each is a new process importing torch: ~3 s apiece on
        # the benchmark machine, one after the other before); a worker's first call waits for the holder's copy
        replicas = [_Replica(plan, holder_name, gpus, cpus, device) for _ in range(replicas_n)]
        ray.get(holder.payload.remote())  # the holder has its copy: the driver's reference can go
        del payload_ref
        for replica in replicas:
            replica.info = ray.get(replica.pending)
            replica.pending, replica.state = [], "live"
        print(_describe_nodes(replicas), file=log, flush=True)
        startup = time.perf_counter() - start
        _dispatch(plan, tiles, on_result, replicas, (holder_name, gpus, cpus, device), log)
        for replica in replicas:
            replica.kill()
        ray.kill(holder, no_restart=True)
        return replicas_n, startup
    finally:
        if started:
            stop_local_ray()


def _dispatch(plan: GridPlan, tiles: Sequence[TileKey], on_result: Callable[[TileResult], None],
              replicas: list[_Replica], spec: tuple[str, float, float, str], log: Any) -> None:
    """Feed ``tiles`` to the live replicas until all are done; replace failed replicas, drop lost nodes."""
    cfg = plan.config
    queue: deque[TileKey] = deque(tiles)
    attempts: dict[TileKey, int] = {}
    in_flight: dict[Any, tuple[TileKey, _Replica]] = {}
    next_check = time.monotonic() + NODE_CHECK_SECONDS

    def fill() -> None:
        for replica in replicas:
            while queue and replica.state == "live" and replica.in_flight < cfg.max_in_flight:
                tile = queue.popleft()
                in_flight[replica.submit(plan, tile)] = (tile, replica)

    def replace_replica(old: _Replica, why: str) -> None:
        old.kill()
        replicas.remove(old)
        replicas.append(_Replica(plan, *spec))
        print(f"ray: {why}; a replacement replica joins once Ray has placed it", file=log, flush=True)

    fill()
    while in_flight or queue:
        starting = {ref: r for r in replicas if r.state == "starting" for ref in r.pending}
        waiting = [*in_flight, *starting]
        if not waiting:
            raise RangeDistError(f"{len(queue)} tile(s) left but no Ray replica to compute them")
        ready, _ = ray.wait(waiting, num_returns=1, timeout=NODE_CHECK_SECONDS)
        if time.monotonic() >= next_check or not ready:
            next_check = time.monotonic() + NODE_CHECK_SECONDS
            alive = _alive_nodes()
            for replica in [r for r in replicas if r.state == "live" and not r.nodes <= alive]:
                lost = ", ".join(n[:8] for n in sorted(replica.nodes - alive))
                replace_replica(replica, f"node {lost} is gone: its replica is dropped and its "
                                         f"{replica.in_flight} tile(s) in flight go back to the queue")
        if not ready:
            continue
        ref = ready[0]
        if ref in starting:
            replica = starting[ref]
            replica.pending.remove(ref)
            try:
                replica.info.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                replace_replica(replica, f"a replacement replica failed to start ({type(exc).__name__})")
                continue
            if not replica.pending and replica.state == "starting":
                replica.state = "live"
                print(_describe_nodes([replica]), file=log, flush=True)
                fill()
            continue
        tile, replica = in_flight.pop(ref)
        replica.in_flight -= 1
        try:
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, RangeDistError):
                raise exc.cause from None
            raise
        except ray.exceptions.RayError as exc:  # actor died for good, node lost, object lost, ...
            attempts[tile] = attempts.get(tile, 0) + 1
            if attempts[tile] >= MAX_TILE_ATTEMPTS:
                raise RangeDistError(f"{tile} failed {attempts[tile]} times; last error: {exc}") from exc
            queue.appendleft(tile)
            if replica.state == "live":
                replace_replica(replica, f"{tile} failed ({type(exc).__name__}); it is retried on another replica")
            fill()
            continue
        on_result(result)
        fill()


# ---------------------------------------------------------------------------- database build
@ray.remote(num_cpus=0.5, max_retries=3)
def _read_task(batch: list[LocationRow], config: BuildConfig) -> list[ChipOutcome]:
    return read_batch(batch, config, threads=2)


@ray.remote(max_restarts=2, max_task_retries=2)
class EncoderActor:
    """Thin Ray wrapper: holds the key and value encoders; encodes read batches."""

    def __init__(self, config: BuildConfig, threads: int) -> None:
        numpy_without_huge_pages()
        self.encoder = RowEncoder(config, threads=threads)

    def node(self) -> str:
        """The node this actor runs on (the driver replaces the actor when that node is lost)."""
        return str(ray.get_runtime_context().get_node_id())

    def encode(self, outcomes: list[ChipOutcome]) -> EncodedBatch:
        return self.encoder.encode(outcomes)


class _Encoder:
    """The build's encoder actor, its node once known, and a way to start a fresh one."""

    def __init__(self, config: BuildConfig, gpus: float, log: Any) -> None:
        self.config, self.gpus, self.log = config, gpus, log
        self.actor: Any = None
        self.node_ref: Any = None
        self.node_id: str | None = None
        self.start()

    def start(self) -> None:
        if self.actor is not None:
            ray.kill(self.actor, no_restart=True)
        # half a CPU, like a read (it runs one torch thread): with a whole one, a cluster left with a
        # single CPU after losing a node would give it to the encoder, and the reads that feed it
        # would wait forever
        self.actor = EncoderActor.options(num_cpus=0.5, num_gpus=self.gpus).remote(  # type: ignore[attr-defined]
            self.config, 1)
        self.node_ref, self.node_id = self.actor.node.remote(), None

    def placed(self) -> str | None:
        """The actor's node id once Ray has placed it (None before, or when the actor died first:
        then its encode calls fail and the driver replaces it)."""
        if self.node_id is None and self.node_ref is not None and ray.wait([self.node_ref], timeout=0)[0]:
            try:
                self.node_id = str(ray.get(self.node_ref))
            except ray.exceptions.RayError:
                self.node_ref = None
                return None
            print(f"ray: encoder actor on node {self.node_id[:8]}", file=self.log, flush=True)
        return self.node_id


def encode_batches_on_ray(plan: BuildPlan, address: str | None = None, log: Any = None) -> Iterator[EncodedBatch]:
    """Chip reads as tasks (I/O bound, at most ``2 × num_readers`` in flight, spread over the nodes),
    encoding on one actor (a GPU when the cluster has one); yields (RowBatch | None, failures) per
    batch in completion order.

    The driver appends (a single writer, so Zarr appends never race); a batch finished twice by a
    retried task is deduplicated by the done-id check of the next run's plan. A read lost with its
    node is re-run by Ray (``max_retries``); a batch whose encoding failed (its actor's node lost,
    or the actor dead for good) is read and encoded again on a fresh actor, up to
    ``MAX_TILE_ATTEMPTS`` times; the actor is also replaced as soon as its node is seen dead, since
    Ray could only restart it where there is room.
    """
    cfg = plan.config
    log = sys.stderr if log is None else log  # looked up per call: tests and callers swap sys.stderr
    started = ensure_ray(address)
    try:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        encoder = _Encoder(cfg, gpus, log)
        pending: deque[list[LocationRow]] = deque(plan.batches())
        reads: dict[Any, list[LocationRow]] = {}
        encodes: dict[Any, list[LocationRow]] = {}
        attempts: dict[int, int] = {}
        max_reads = 2 * cfg.num_readers
        read = _read_task.options(scheduling_strategy="SPREAD")  # type: ignore[attr-defined]

        def retry(batch: list[LocationRow], why: str) -> None:
            attempts[id(batch)] = attempts.get(id(batch), 0) + 1
            if attempts[id(batch)] >= MAX_TILE_ATTEMPTS:
                raise RangeDistError(f"a batch of {len(batch)} location(s) failed {attempts[id(batch)]} times: {why}")
            pending.appendleft(batch)

        def replace_encoder(why: str) -> None:
            print(f"ray: {why}; {len(encodes)} batch(es) go back to be read and encoded on a fresh encoder actor",
                  file=log, flush=True)
            for batch in encodes.values():
                retry(batch, why)
            encodes.clear()
            encoder.start()

        while pending or reads or encodes:
            while pending and len(reads) + len(encodes) < max_reads:
                batch = pending.popleft()
                reads[read.remote(batch, cfg)] = batch
            ready, _ = ray.wait([*reads, *encodes], num_returns=1, timeout=NODE_CHECK_SECONDS)
            node = encoder.placed()
            if node is not None and node not in _alive_nodes():
                replace_encoder(f"node {node[:8]} (the encoder actor's) is gone")
                continue
            if not ready:
                continue
            ref = ready[0]
            if ref in reads:
                encodes[encoder.actor.encode.remote(ref)] = reads.pop(ref)
                continue
            batch = encodes.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, RangeDistError):
                    raise exc.cause from None
                raise
            except ray.exceptions.ActorDiedError as exc:  # dead for good: a fresh actor
                retry(batch, f"{type(exc).__name__}: {exc}")
                replace_encoder(f"the encoder actor died ({type(exc).__name__})")
                continue
            except ray.exceptions.RayError as exc:  # unavailable for now, a lost read result, ...
                retry(batch, f"{type(exc).__name__}: {exc}")
                print(f"ray: a batch failed ({type(exc).__name__}); it is read and encoded again", file=log, flush=True)
                continue
            yield result
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
