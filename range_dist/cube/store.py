"""The embedding cube on disk: template, tile (shard) writes, completion record, finalisation.

Layout of ``STORE.zarr`` (Zarr v3):

* ``embedding`` (beta, lat, lon, feature), float16/float32, NaN = not embedded (ocean in
  land-only mode). One shard per tile: the shard is the unit of concurrent writing, so two
  workers never touch the same shard. Inner chunks (1, c, c, feature) keep analysis reads small.
* coordinates ``beta``, ``lat`` (descending), ``lon`` (ascending), ``feature``, with CF attributes,
  and a scalar ``spatial_ref`` (EPSG:4326) that rioxarray reads back with ``decode_coords="all"``.
* ``tile_status`` (tile_row, tile_col) uint8: the completion record, one chunk per tile, written
  after the tile's data: 0 missing, 1 computed, 2 skipped (no land). Chunks equal to the fill
  value are never written by Zarr, so "no data object" cannot mean "done"; this record can.
* attributes: GeoZarr ``proj:`` / ``spatial:``, ``geoemb:``, and ``range_dist:`` provenance with the
  run signature (grid, models, database, β, τ, dtype, tiling): a rerun with the same signature
  resumes, a different one is refused unless overwriting.
"""

from __future__ import annotations

import shutil
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from range_dist.errors import StoreMismatchError, StoreWriteError
from range_dist.grid.spec import GridSpec, TileKey, tile_counts
from range_dist.util.jsonable import to_jsonable

TILE_MISSING, TILE_COMPUTED, TILE_SKIPPED = 0, 1, 2
SIGNATURE_KEY = "range_dist:signature"


@dataclass(frozen=True)
class CubeLayout:
    """Shape and encoding of a cube.

    Attributes:
        grid: the lat/lon grid.
        betas: β coordinate values.
        feature_dim: embedding width (1280 for the published assets).
        dtype: ``float16`` or ``float32``.
        tile_size: cells per shard side.
        chunk_size: cells per inner chunk side.
    """

    grid: GridSpec
    betas: tuple[float, ...]
    feature_dim: int
    dtype: str
    tile_size: int
    chunk_size: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        n_lat, n_lon = self.grid.shape
        return len(self.betas), n_lat, n_lon, self.feature_dim

    @property
    def tiles_shape(self) -> tuple[int, int]:
        return tile_counts(self.grid.shape, self.tile_size)


def _template(layout: CubeLayout, attrs: dict[str, Any]) -> Any:
    import dask.array as da
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    grid = layout.grid
    b, n_lat, n_lon, f = layout.shape
    t = layout.tile_size
    data = da.full(layout.shape, np.nan, dtype=layout.dtype, chunks=(b, min(t, n_lat), min(t, n_lon), f))
    ds = xr.Dataset(
        {"embedding": (("beta", "lat", "lon", "feature"), data)},
        coords={
            "beta": ("beta", np.asarray(layout.betas, dtype=np.float64)),
            "lat": ("lat", grid.lat),
            "lon": ("lon", grid.lon),
            "feature": ("feature", np.arange(f, dtype=np.int32)),
        },
    )
    ds["lat"].attrs.update(standard_name="latitude", long_name="latitude of cell centre", units="degrees_north",
                           axis="Y")
    ds["lon"].attrs.update(standard_name="longitude", long_name="longitude of cell centre", units="degrees_east",
                           axis="X")
    ds["beta"].attrs.update(long_name="RANGE+ beta: weight of the semantic head (0 = spatial, 1 = semantic)",
                            units="1")
    ds["feature"].attrs.update(long_name="embedding feature index",
                               description=attrs.get("geoemb:feature_layout", ""))
    ds["embedding"].attrs.update(long_name="RANGE geo-embedding", units="1")
    ds = ds.rio.write_crs("EPSG:4326").rio.set_spatial_dims(x_dim="lon", y_dim="lat")
    ds.attrs.update(attrs)
    return ds


def _signature_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: store has {old.get(k)!r}, this run {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


@dataclass(frozen=True)
class ExistingCube:
    """What is at a cube's path before a run (read-only inspection; see :func:`inspect_cube`).

    Attributes:
        action: ``create`` (nothing there), ``resume`` (same signature) or ``replace`` (another
            signature, and the run was given ``overwrite``).
        tiles_done: tiles already marked done (resume only).
    """

    action: str
    tiles_done: int = 0


def inspect_cube(path: Path, signature: dict[str, Any], overwrite: bool = False) -> ExistingCube:
    """Decide what a run will do with ``path``, reading only: create, resume or replace.

    Raises:
        StoreMismatchError: the path is a file, a folder that is not a range-dist cube (never
            deleted, even with ``overwrite``), or a cube with another signature without ``overwrite``.
    """
    path = Path(path)
    if not path.exists():
        return ExistingCube("create")
    if not path.is_dir():
        raise StoreMismatchError(f"{path} exists and is a file, not a Zarr store; choose another --out")
    existing = _read_signature(path)
    if existing is None:
        raise StoreMismatchError(
            f"{path} exists but is not a range-dist cube (no {SIGNATURE_KEY!r} attribute); it is never deleted "
            "for you: choose another --out, or remove it yourself")
    if existing == to_jsonable(signature):
        return ExistingCube("resume", int((read_tile_status(path) != TILE_MISSING).sum()))
    if not overwrite:
        diff = "; ".join(_signature_diff(existing, to_jsonable(signature)))
        raise StoreMismatchError(
            f"{path} was made with different settings ({diff}). Use another --out, rerun with the original "
            "settings to resume, or pass --overwrite to replace it.")
    return ExistingCube("replace")


def open_or_create_cube(
    path: Path, layout: CubeLayout, signature: dict[str, Any], attrs: dict[str, Any], overwrite: bool = False
) -> npt.NDArray[np.uint8]:
    """Create the cube's template, or reopen a compatible one to resume.

    Args:
        path: the ``.zarr`` store.
        layout: shape and encoding.
        signature: settings that must match for a resume (grid, models, database, β, τ, ...).
        attrs: attributes to write (provenance, GeoZarr, geoemb).
        overwrite: replace a store with a different signature instead of refusing.

    Returns:
        The completion record (tile_row, tile_col) uint8 as it stands.

    Raises:
        StoreMismatchError: as :func:`inspect_cube`.
    """
    import zarr
    from zarr.codecs import BloscCodec

    state = inspect_cube(path, signature, overwrite)
    if state.action == "resume":
        return read_tile_status(path)
    if state.action == "replace":
        shutil.rmtree(path)
    signature = to_jsonable(signature)
    ds = _template(layout, {**to_jsonable(attrs), SIGNATURE_KEY: signature})
    b, _, _, f = layout.shape
    c, t = layout.chunk_size, layout.tile_size
    n_lat, n_lon = layout.grid.shape
    shard = (b, min(t, n_lat), min(t, n_lon), f)
    # A shard must be a whole number of inner chunks: a grid smaller than a tile gets one chunk per β.
    chunk = (1, c, c, f) if (t <= n_lat and t <= n_lon) else (1, shard[1], shard[2], f)
    encoding = {
        "embedding": {
            "chunks": chunk,
            "shards": shard,
            "grid_mapping": "spatial_ref",  # keep rioxarray's CRS link (encoding replaces attrs)
            # Embeddings barely compress (~1.1×); bit-shuffled LZ4 gets that at ~1.4× zstd's speed.
            "compressors": (BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),),
            "_FillValue": np.nan,
        }
    }
    ds.to_zarr(path, compute=False, zarr_format=3, consolidated=False, encoding=encoding, mode="w")
    group = zarr.open_group(str(path), mode="r+")
    rows, cols = layout.tiles_shape
    try:
        # per-tile integrity, written before the tile's status (range_dist.cube.integrity checks them)
        group.create_array("tile_checksum", shape=(rows, cols), chunks=(1, 1), dtype="uint32", fill_value=0,
                           dimension_names=("tile_row", "tile_col"),
                           attributes={"long_name": "CRC-32 (zlib) of the tile's embedding block as written "
                                                    "(cube dtype, C order, NaN cells included)"})
        group.create_array("tile_cells", shape=(rows, cols), chunks=(1, 1), dtype="int32", fill_value=-1,
                           dimension_names=("tile_row", "tile_col"),
                           attributes={"long_name": "embedded (non-NaN) cells of the tile; -1 = not recorded"})
        group.create_array("tile_status", shape=(rows, cols), chunks=(1, 1), dtype="uint8", fill_value=TILE_MISSING,
                           dimension_names=("tile_row", "tile_col"),
                           attributes={"flag_values": [0, 1, 2], "flag_meanings": "missing computed skipped_no_land",
                                       "long_name": "completion record: one entry per tile (shard)"})
    except (zarr.errors.ContainsArrayError, zarr.errors.ContainsGroupError) as exc:
        # Two drivers created the template at the same moment: the other one made the record first.
        raise StoreMismatchError(
            f"{path}: another run created this cube at the same moment; one driver per store — wait for it to "
            "finish and rerun to resume, or use another --out") from exc
    return read_tile_status(path)


def _read_signature(path: Path) -> dict[str, Any] | None:
    import zarr
    from zarr.errors import ContainsArrayError, GroupNotFoundError

    try:
        group = zarr.open_group(str(path), mode="r")
    except (GroupNotFoundError, ContainsArrayError):  # no Zarr group there: not a cube
        return None
    except (OSError, ValueError, TypeError) as exc:  # unreadable, or a corrupt zarr.json (bad JSON, not an object)
        raise StoreMismatchError(f"{path} is not a readable Zarr store ({type(exc).__name__}: {exc}); it is never "
                                 "deleted for you: choose another --out, or remove it yourself") from exc
    value = group.attrs.get(SIGNATURE_KEY)
    return dict(value) if isinstance(value, dict) else None


def read_tile_status(path: Path) -> npt.NDArray[np.uint8]:
    """The completion record, (tile_row, tile_col) uint8."""
    import zarr

    return np.asarray(zarr.open_array(str(path / "tile_status"), mode="r")[...], dtype=np.uint8)


def block_checksum(block: npt.NDArray[np.floating]) -> tuple[int, int]:
    """(CRC-32 of the block's bytes, embedded cells) of a (beta, h, w, feature) block as stored.

    zlib's CRC-32 runs at several GB/s here; a tile of 256² cells × 3 β × 1280 float16 (0.5 GB) costs
    about 0.1 s, next to minutes of computing it on a CPU.
    """
    data = np.ascontiguousarray(block)
    cells = int((~np.isnan(data[0, :, :, 0])).sum()) if data.size else 0
    return zlib.crc32(data.data), cells


def write_tile(path: Path, tile: TileKey, block: npt.NDArray[np.floating] | None, status: int) -> int:
    """Write one tile's (beta, h, w, feature) block as a whole shard, then mark it in the record.

    Idempotent: writing a tile again replaces the same shard with the same bytes. The tile's checksum
    and cell count, then its status, are written only after the data, so a crash in between leaves
    the tile "missing" and it is redone.

    Returns:
        Bytes of embedding data written (0 for a skipped tile).
    """
    import zarr

    written = 0
    try:
        checksum, cells = 0, 0
        if block is not None:
            arr = zarr.open_array(str(path / "embedding"), mode="r+")
            stored = np.ascontiguousarray(block, dtype=arr.dtype)
            arr[:, tile.y0 : tile.y1, tile.x0 : tile.x1, :] = stored
            written = int(block.size * arr.dtype.itemsize)
            checksum, cells = block_checksum(stored)
        if (path / "tile_checksum").exists():  # cubes made before the integrity record have none
            zarr.open_array(str(path / "tile_checksum"), mode="r+")[tile.row, tile.col] = checksum
            zarr.open_array(str(path / "tile_cells"), mode="r+")[tile.row, tile.col] = cells
        zarr.open_array(str(path / "tile_status"), mode="r+")[tile.row, tile.col] = status
    except OSError as exc:  # disk full, quota, I/O error: say where, and that a rerun resumes
        raise StoreWriteError.of(exc, f"writing tile (row {tile.row}, col {tile.col}) to {path}",
                                 "The tile is not marked done") from exc
    return written


def finalize_cube(path: Path, report: dict[str, Any]) -> None:
    """Record the run report in the attributes and consolidate the metadata."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    group.attrs["range_dist:run_report"] = to_jsonable(report)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec" (xarray reads it)
        zarr.consolidate_metadata(str(path))
