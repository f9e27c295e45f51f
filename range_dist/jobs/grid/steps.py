"""Grid-job steps as plain functions (no Ray): embed a tile, or its shard partials, and write it.

The executors (:mod:`range_dist.executors`) run these; their Ray actors are thin wrappers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from range_dist.cube.store import TILE_COMPUTED, TILE_SKIPPED, write_tile
from range_dist.database.store import RetrievalDatabase
from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder
from range_dist.geo.land import land_mask
from range_dist.grid.spec import GridSpec, TileKey, tile_lonlat
from range_dist.retrieval.encoder import RangeEncoder
from range_dist.retrieval.engine import Partials, blend, merge_partials
from range_dist.retrieval.fast.plan import FastPlan
from range_dist.retrieval.fast.retriever import FastStats


@dataclass(frozen=True)
class TileResult:
    """What one finished tile reports back (small: crosses process boundaries).

    The executor fills where the tile was computed: ``node_id`` (a Ray node id; several joined by
    ``+`` when database shards on different nodes computed it; ``local`` for the local executor),
    ``worker`` (the Ray actor id, or ``local``) and ``node_payload_bytes`` (the size of the payload
    copy that node's object store holds: moved to the node once, shared by its actors).
    """

    tile: TileKey
    status: int
    points: int
    kernel_seconds: float
    bytes_written: int
    fast_checks: FastStats | None = None
    node_id: str = ""
    worker: str = ""
    node_payload_bytes: int = 0


@dataclass(frozen=True)
class EncoderPayload:
    """Everything a worker needs to build its RangeEncoder (put once in the object store).

    Attributes:
        location_config: SatCLIP architecture.
        location_state: SatCLIP location weights (float64 arrays).
        database: the full database; a worker keeps only its shard's rows.
        variant, tau_sem, tau_geo: retrieval settings.
        memory_budget_mb: per-worker bound on retrieval working memory.
        fast_plan: the validated fast-mode plan (None: exact mode), for the β levels ``betas``.
        betas: the run's β levels (the plan was validated for them).
        precision: matrix-product precision on CUDA actors (``fp32``, ``tf32``, ``bf16``); CPU actors use fp32.
    """

    location_config: SatCLIPLocationConfig
    location_state: dict[str, npt.NDArray[np.float64]]
    database: RetrievalDatabase
    variant: str
    tau_sem: float | None = None
    tau_geo: float | None = None
    memory_budget_mb: float = 512.0
    fast_plan: FastPlan | None = None
    betas: tuple[float, ...] = ()
    precision: str = "fp32"

    @classmethod
    def from_models(cls, location: SatCLIPLocationEncoder, database: RetrievalDatabase, variant: str,
                    memory_budget_mb: float = 512.0, precision: str = "fp32") -> EncoderPayload:
        state = {k: v.detach().cpu().numpy() for k, v in location.state_dict().items()}
        return cls(location.config, state, database, variant, memory_budget_mb=memory_budget_mb, precision=precision)

    def build(self, device: str = "cpu", shard: tuple[int, int] | None = None) -> RangeEncoder:
        """The encoder over the whole database, or over rows [start, stop) of it."""
        location = SatCLIPLocationEncoder(self.location_config)
        # object-store arrays are read-only views: copy them into the module's own tensors
        location.load_state_dict({k: torch.tensor(v) for k, v in self.location_state.items()})
        db = self.database if shard is None else self.database.select(slice(*shard))
        encoder = RangeEncoder(location, db, self.variant, device, tau_sem=self.tau_sem, tau_geo=self.tau_geo,
                               memory_budget_mb=self.memory_budget_mb, precision=self.precision)
        if self.fast_plan is not None:
            encoder.use_plan(self.fast_plan, self.betas)
        return encoder


def tile_points(
    grid: GridSpec, tile: TileKey, land_only: bool
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Cell centres of a tile and the mask of those to embed (all, or land only)."""
    lonlat = tile_lonlat(grid, tile)
    mask = land_mask(lonlat) if land_only else np.ones(len(lonlat), dtype=bool)
    return lonlat, mask


def _scatter(grid_tile: TileKey, mask: npt.NDArray[np.bool_], emb: npt.NDArray[np.floating]) -> npt.NDArray[Any]:
    """(B, n_masked, F) -> (B, h, w, F) with NaN where the mask is False (no copy when all are True)."""
    h, w = grid_tile.shape
    if mask.all():
        return emb.reshape(emb.shape[0], h, w, emb.shape[2])
    block = tile_block(grid_tile, mask, emb.shape[0], emb.shape[2], emb.dtype)
    block[:, mask] = emb
    return block.reshape(emb.shape[0], h, w, emb.shape[2])


def tile_block(tile: TileKey, mask: npt.NDArray[np.bool_], betas: int, features: int,
               dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """(B, h·w, F) block of a tile to embed into, its cells outside ``mask`` already NaN.

    The encoder writes the masked cells straight into it (``RangeEncoder.encode(out=, rows=)``): one
    block per tile instead of the embeddings and then a scattered copy (503 MB more of fresh memory on
    a 256² tile at 0.1° in float16, 1.8 s of it on 2 cores).
    """
    h, w = tile.shape
    block = np.empty((betas, h * w, features), dtype=dtype)
    if not mask.all():
        block[:, ~mask] = np.nan
    return block


@dataclass(frozen=True)
class EmbeddedTile:
    """A tile computed and not yet written (what the executors hand from the compute to the write).

    Attributes:
        tile: the tile.
        block: (len(betas), h, w, F) in the cube's dtype, NaN outside the embedded cells; None for a
            tile without land (written as skipped).
        points: cells embedded.
        kernel_seconds: seconds of the encoder's work on it.
        fast_checks: this tile's fast-mode check statistics (None in exact mode).
    """

    tile: TileKey
    block: npt.NDArray[Any] | None
    points: int = 0
    kernel_seconds: float = 0.0
    fast_checks: FastStats | None = None


def embed_tile(
    encoder: RangeEncoder, grid: GridSpec, tile: TileKey, betas: Sequence[float], land_only: bool,
    dtype: str = "float32",
) -> EmbeddedTile:
    """Embed one tile at every β in the cube's ``dtype`` (written by :func:`write_embedded`).

    Not reentrant on one ``encoder``: its fast-mode statistics are per call, so a caller that runs
    calls in parallel serialises them (``TileWorker`` does).
    """
    lonlat, mask = tile_points(grid, tile, land_only)
    if not mask.any():
        return EmbeddedTile(tile, None)
    if encoder.fast is not None:  # this tile's own check statistics
        encoder.fast.stats = FastStats()
    start = time.perf_counter()
    block = tile_block(tile, mask, len(betas), encoder.output_dim, dtype)
    encoder.encode(lonlat[mask], betas, out=block, rows=np.flatnonzero(mask))
    kernel = time.perf_counter() - start
    checks = None if encoder.fast is None else encoder.fast.stats
    return EmbeddedTile(tile, block.reshape(len(betas), *tile.shape, -1), int(mask.sum()), kernel, checks)


def write_embedded(store: Path | str, embedded: EmbeddedTile) -> TileResult:
    """Write a computed tile as one shard (idempotent) and mark it: computed, or skipped without land.

    ``store`` is the cube: a local path, or an object-store URL as the config holds it.
    """
    if embedded.block is None:
        write_tile(store, embedded.tile, None, TILE_SKIPPED)
        return TileResult(embedded.tile, TILE_SKIPPED, 0, 0.0, 0)
    written = write_tile(store, embedded.tile, embedded.block, TILE_COMPUTED)
    return TileResult(embedded.tile, TILE_COMPUTED, embedded.points, embedded.kernel_seconds, written,
                      embedded.fast_checks)


def tile_partials(
    encoder: RangeEncoder, grid: GridSpec, tile: TileKey, betas: Sequence[float], land_only: bool
) -> dict[str, Any] | None:
    """One shard's softmax partials for a tile's points (None for a tile without land)."""
    lonlat, mask = tile_points(grid, tile, land_only)
    if not mask.any():
        return None
    start = time.perf_counter()
    partials, q_hat = encoder.partials(lonlat[mask], betas)
    return {**partials.numpy(), "q_hat": q_hat.numpy(), "seconds": time.perf_counter() - start}


def merge_and_write_tile(
    parts: Sequence[dict[str, Any] | None], grid: GridSpec, tile: TileKey, betas: Sequence[float], variant: str,
    land_only: bool, store: Path, dtype: str = "float32",
) -> TileResult:
    """Merge the shards' partials of a tile exactly, blend the β levels and write the shard."""
    if parts[0] is None:
        write_tile(store, tile, None, TILE_SKIPPED)
        return TileResult(tile, TILE_SKIPPED, 0, 0.0, 0)
    present = [p for p in parts if p is not None]
    merged = merge_partials([Partials.from_numpy(p) for p in present])
    emb = blend(merged, torch.from_numpy(present[0]["q_hat"]), betas, variant).to(getattr(torch, dtype)).numpy()
    _, mask = tile_points(grid, tile, land_only)
    written = write_tile(store, tile, _scatter(tile, mask, emb), TILE_COMPUTED)
    kernel = max(float(p["seconds"]) for p in present)
    return TileResult(tile, TILE_COMPUTED, int(mask.sum()), kernel, written)
