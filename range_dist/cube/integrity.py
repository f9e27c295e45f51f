"""Per-tile integrity of a cube: what the completion record promises, checked against what is stored.

Every tile written records, before its status, the CRC-32 of its blocks as written (stored dtype,
C order, chained over the arrays of the cube's layout and encoding: ``embedding``, or the heads,
and the int8 scales) and its count of embedded cells. Two checks:

* cheap (every resume): each tile marked computed has the shard object of every array, non-empty;
* full (``range-dist verify``, ``embed-grid --verify``): each done tile is read back and its
  checksum and cell count compared (a truncated or damaged shard also fails its read: zarr checks
  the shard index's CRC-32C).

A tile that fails is reset to missing (:func:`reset_tiles`), so the next run recomputes exactly it.

On an object store the cheap check lists the shard objects of each array once (one paginated
listing per array, not one request per tile) and compares their sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from range_dist.cube.store import (
    TILE_COMPUTED,
    TILE_MISSING,
    TILE_SKIPPED,
    StoreLike,
    open_cube_group,
    read_encoding,
    read_tile_status,
    stored_checksum,
    tile_region,
)
from range_dist.grid.spec import TileKey
from range_dist.util.stores import StoreLocation


@dataclass(frozen=True)
class TileCheck:
    """The check of one tile: ``state`` is ok, missing_data, unreadable, checksum_mismatch or cells_mismatch."""

    row: int
    col: int
    status: int
    state: str
    detail: str = ""


def shard_path(store: Path, row: int, col: int, variable: str = "embedding",
               dims: tuple[str, ...] = ("beta", "lat", "lon", "feature")) -> Path:
    """The local file of a tile's shard of one array (Zarr v3 default chunk keys: ``c/`` and ``/``
    separators; the lat/lon shard indices are the tile's row and column, every other axis is one shard)."""
    index = [str(row) if d == "lat" else str(col) if d == "lon" else "0" for d in dims]
    return Path(store).joinpath(variable, "c", *index)


def _shard_key(row: int, col: int, variable: str, dims: tuple[str, ...]) -> str:
    """The key of a tile's shard of one array inside the store (as :func:`shard_path`)."""
    index = [str(row) if d == "lat" else str(col) if d == "lon" else "0" for d in dims]
    return "/".join([variable, "c", *index])


def check_tiles(store: StoreLike, full: bool = False) -> list[TileCheck]:
    """Check every tile marked done; ``full`` reads each back (see the module notes)."""
    loc = StoreLocation.parse(store)
    status = read_tile_status(loc)
    group: Any = open_cube_group(loc)
    encoding = read_encoding(loc, group)
    variables = encoding.variables()
    recorded = "tile_checksum" in group
    checksums = np.asarray(group["tile_checksum"][...]) if recorded else None
    cells = np.asarray(group["tile_cells"][...]) if recorded else None
    first = group[variables[0].name]
    lat_axis = variables[0].dims.index("lat")
    # per axis: a grid smaller than a tile on one axis has shards of its own size on that axis only
    tile_h, tile_w = (int(n) for n in (first.shards or first.chunks)[lat_axis:lat_axis + 2])
    n_lat, n_lon = int(first.shape[lat_axis]), int(first.shape[lat_axis + 1])
    # object store: the sizes of every shard object, one listing per array (a local store stats files)
    sizes = {} if loc.is_local else {f"{v.name}/{k}": n for v in variables for k, n in
                                     loc.child(v.name).object_sizes().items()}
    checks = []
    for row, col in zip(*np.nonzero(status != TILE_MISSING)):
        row, col, st = int(row), int(col), int(status[row, col])
        if st == TILE_SKIPPED:
            checks.append(TileCheck(row, col, st, "ok", "skipped (no land)"))
            continue
        if loc.is_local:
            shards = [shard_path(loc.local, row, col, v.name, v.dims) for v in variables]
            gone = [str(s.relative_to(loc.local)) for s in shards if not s.is_file() or s.stat().st_size == 0]
        else:
            keys = [_shard_key(row, col, v.name, v.dims) for v in variables]
            gone = [k for k in keys if not sizes.get(k)]
        if gone:
            checks.append(TileCheck(row, col, st, "missing_data", "no shard object " + ", ".join(gone)))
            continue
        if not full:
            checks.append(TileCheck(row, col, st, "ok"))
            continue
        key = TileKey(row, col, row * tile_h, min((row + 1) * tile_h, n_lat), col * tile_w,
                      min((col + 1) * tile_w, n_lon))
        try:
            with loc.errors(f"reading tile (row {row}, col {col}) of"):
                stored = {v.name: np.asarray(group[v.name][tile_region(v.dims, key)]) for v in variables}
        except (OSError, ValueError, RuntimeError) as exc:  # zarr/numcodecs decode errors, shard index CRC
            checks.append(TileCheck(row, col, st, "unreadable", f"{type(exc).__name__}: {exc}"))
            continue
        crc, n = stored_checksum(encoding, stored)
        if checksums is None or cells is None:
            checks.append(TileCheck(row, col, st, "ok", "readable (no checksum recorded: an older cube)"))
        elif int(cells[row, col]) != n:
            checks.append(TileCheck(row, col, st, "cells_mismatch", f"{n} embedded cells, {cells[row, col]} recorded"))
        elif int(checksums[row, col]) != crc:
            checks.append(TileCheck(row, col, st, "checksum_mismatch", f"CRC-32 {crc:08x}, recorded "
                                                                       f"{int(checksums[row, col]):08x}"))
        else:
            checks.append(TileCheck(row, col, st, "ok"))
    return checks


def reset_tiles(store: StoreLike, tiles: list[tuple[int, int]]) -> None:
    """Mark ``tiles`` missing, so that the next run recomputes exactly them."""
    loc = StoreLocation.parse(store)
    record = open_cube_group(loc, mode="r+")["tile_status"]
    with loc.errors("resetting tiles of", writing=True):
        for row, col in tiles:
            record[row, col] = TILE_MISSING


def summary_table(checks: list[TileCheck]) -> str:
    """A short table: counts per state, then one line per bad tile."""
    from collections import Counter

    counts = Counter(c.state for c in checks)
    computed = sum(1 for c in checks if c.status == TILE_COMPUTED)
    lines = [f"{len(checks)} tiles marked done ({computed} computed): "
             + ", ".join(f"{state} {n}" for state, n in sorted(counts.items()))]
    lines += [f"  tile (row {c.row}, col {c.col}): {c.state} — {c.detail}" for c in checks if c.state != "ok"]
    return "\n".join(lines)
