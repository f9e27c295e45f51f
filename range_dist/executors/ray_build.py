"""Run a database build on Ray: chip reads as tasks, encoding on one actor (thin wrappers only).

Reads are I/O bound: each task reads one batch of locations (``read_batch``); at most
``2 × num_readers`` are in flight. The encoder actor loads both models once (a GPU when the cluster
has one) and turns each read batch, passed by reference, into rows. The driver appends: a single
writer, so Zarr appends never race; a batch finished twice (a retried task) is deduplicated by the
driver's done-id check in :func:`~range_dist.database.build.run_build`'s commit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import ray

from range_dist.database.build import BuildConfig, BuildPlan, ChipOutcome, RowEncoder, read_batch
from range_dist.executors.ray_executor import ensure_ray


@ray.remote(num_cpus=0.5, max_retries=3)
def _read_task(batch: list[tuple[str, float, float]], config: BuildConfig) -> list[ChipOutcome]:
    return read_batch(batch, config, threads=2)


@ray.remote(max_restarts=2, max_task_retries=2)
class EncoderActor:
    """Holds the key and value encoders; encodes read batches."""

    def __init__(self, config: BuildConfig, threads: int) -> None:
        self.encoder = RowEncoder(config, threads=threads)

    def encode(self, outcomes: list[ChipOutcome]) -> tuple[Any, list[ChipOutcome]]:
        return self.encoder.encode(outcomes)


def run_ray(plan: BuildPlan) -> Iterator[tuple[Any, list[ChipOutcome]]]:
    """Yield (RowBatch | None, failures) per batch, in completion order."""
    cfg = plan.config
    started = ensure_ray(cfg.ray_address)
    try:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        cpus = 1.0
        actor = EncoderActor.options(num_cpus=cpus, num_gpus=gpus).remote(cfg, 1)  # type: ignore[attr-defined]
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
            ray.shutdown()
