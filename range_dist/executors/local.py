"""The local executor: tiles and build batches in this process, no Ray (the reference, and for debugging)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from range_dist.executors.write_behind import WriteBehind
from range_dist.grid.spec import TileKey
from range_dist.jobs.build.plan import BuildPlan
from range_dist.jobs.build.run import EncodedBatch
from range_dist.jobs.build.steps import RowEncoder, read_batch
from range_dist.jobs.grid.plan import GridPlan
from range_dist.jobs.grid.steps import TileResult, embed_tile, merge_and_write_tile, tile_partials, write_embedded


class LocalExecutor:
    """Runs every step here, one tile at a time, each tile's write overlapping the next tile's compute
    (:class:`~range_dist.executors.write_behind.WriteBehind`; chip reads with ``num_readers`` threads)."""

    name = "local"

    def run_tiles(self, plan: GridPlan, tiles: Sequence[TileKey], on_result: Callable[[TileResult], None],
                  log: Any = sys.stderr) -> tuple[int, float]:
        """Embed and write ``tiles``; with db_shards > 1 the shards are merged as on Ray."""
        cfg = plan.config
        grid = plan.layout.grid
        # cfg.out is a path or a store URL (both go to write_tile as they are; the steps' `store: Path`
        # hints predate URLs, hence the arg-type ignores below)

        def emit(result: TileResult) -> None:  # computed here: no node, no actor, no payload moved
            on_result(replace(result, node_id="local", worker="local"))

        # the β levels and dtype a tile is computed at: the heads layout computes β = 0 and 1 (the heads)
        betas, dtype = plan.compute_betas, plan.compute_dtype
        with WriteBehind(emit) as writer:
            if cfg.db_shards == 1:
                encoder = plan.payload.build("cpu")
                for tile in tiles:
                    embedded = embed_tile(encoder, grid, tile, betas, cfg.land_only, dtype)
                    writer.submit(partial(write_embedded, cfg.out, embedded))
                return 1, 0.0
            shards = [plan.payload.build("cpu", b) for b in plan.payload.database.shard_bounds(cfg.db_shards)]
            for tile in tiles:
                parts = [tile_partials(enc, grid, tile, betas, cfg.land_only) for enc in shards]
                writer.submit(partial(merge_and_write_tile, parts, grid, tile, betas, cfg.variant, cfg.land_only,
                                      cfg.out, dtype))  # type: ignore[arg-type]
        return 1, 0.0

    def encode_batches(self, plan: BuildPlan) -> Iterator[EncodedBatch]:
        """Read each batch with ``num_readers`` threads and encode it here."""
        encoder = RowEncoder(plan.config)
        for batch in plan.batches():
            yield encoder.encode(read_batch(batch, plan.config, threads=plan.config.num_readers))
