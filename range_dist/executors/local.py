"""Run tiles in this process, one at a time: the reference executor (no Ray)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from range_dist.grid.spec import TileKey
from range_dist.grid.tiles import TileResult, embed_and_write_tile, merge_and_write_tile, tile_partials

if TYPE_CHECKING:
    from range_dist.grid.job import GridPlan


def run_tiles_locally(plan: GridPlan, tiles: Sequence[TileKey]) -> Iterator[TileResult]:
    """Embed and write ``tiles`` here; with db_shards > 1 the shards are merged as on Ray."""
    cfg = plan.config
    grid = plan.layout.grid
    if cfg.db_shards == 1:
        encoder = plan.payload.build("cpu")
        for tile in tiles:
            yield embed_and_write_tile(encoder, grid, tile, cfg.betas, cfg.land_only, cfg.out, cfg.dtype)
        return
    bounds = plan.payload.database.shard_bounds(cfg.db_shards)
    shards = [plan.payload.build("cpu", b) for b in bounds]
    for tile in tiles:
        parts = [tile_partials(enc, grid, tile, cfg.betas, cfg.land_only) for enc in shards]
        yield merge_and_write_tile(parts, grid, tile, cfg.betas, cfg.variant, cfg.land_only, cfg.out, cfg.dtype)
