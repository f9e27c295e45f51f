"""Overview pyramid of a cube: coarser levels by NaN-aware 2 × 2 averaging, as a GeoZarr ``multiscales`` group.

Layout inside ``STORE.zarr``:

* ``overviews/<k>`` (k ≥ 1) is level k, 2^k times coarser than the root. It holds the same arrays as
  the root, with the same dtype, codecs, fill value, dimension names and attributes (``embedding``,
  or the heads / int8 variables of other layouts, ``beta``, ``feature``, ``spatial_ref``), its own
  ``lat`` / ``lon`` cell centres, and its own completion record ``tile_status`` (0 missing,
  1 computed, 2 skipped: all four source tiles were skipped) — plus ``tile_checksum`` /
  ``tile_cells`` when the root has them, so ``range_dist.cube.integrity`` can check a level like a cube.
* Each level's group attributes are the root's, with its own ``spatial:`` fields (built with
  zarr-cm: ``spatial:transform`` = ``[res_k, 0, west, 0, -res_k, north]``, pixel registration) and
  ``range_dist:overview`` (level, factor, source, resampling, the root signature it was made from).
* The root gets a ``multiscales`` attribute (zarr-cm builder, registered in ``zarr_conventions``):
  level 0 is the root group itself (asset ``"."``), level k the group ``overviews/<k>``, derived from
  level k - 1 with ``scale [2, 2]``, ``translation [0, 0]`` (the top-left cell edges coincide).

Averaging (docs/method.md: a linear blend commutes with a mean): a coarse cell is the mean of the
non-NaN cells of its 2 × 2 block of the level below, NaN when all four are NaN (ocean in land-only
cubes). On a grid with an odd number of rows or columns the last coarse row / column averages the
cells that exist (a partial block); its cell edge then extends past the root's bbox by one fine cell.
Values are averaged in float32 after decoding (int8 cubes are decoded with their scales and the
averages re-quantised per cell), so heads-layout cubes average each head and ``q_hat`` separately,
which is exact for every β because the β blend is linear.

Resumable: a level's tiles are written one whole shard at a time and marked in its record after
the data; a rerun skips done tiles and done levels. A level is read from the level below in strips
of rows (at most ``read_budget`` bytes decoded at once), never the whole cube.

The cube may be a local folder or an object-store URL (``s3://``, ``gs://``, ``az://``): every read and
write goes through :class:`~range_dist.util.stores.StoreLocation`, and an object-store failure is one
line (:meth:`StoreLocation.errors`). A level's shard is one object written whole, as in the root.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from range_dist.cube.encoding import CubeEncoding
from range_dist.cube.store import (
    CRS_CODE,
    SIGNATURE_KEY,
    TILE_COMPUTED,
    TILE_MISSING,
    TILE_SKIPPED,
    read_encoding,
    tile_region,
    write_tile,
)
from range_dist.errors import ConfigError, StoreMismatchError, StoreWriteError
from range_dist.grid.spec import TileKey
from range_dist.util.jsonable import to_jsonable
from range_dist.util.stores import StoreLocation

OVERVIEWS_GROUP = "overviews"
OVERVIEW_KEY = "range_dist:overview"
#: Default: stop before a level coarser than this (degrees); a 0.1° cube gets 0.2, 0.4, 0.8 and 1.6°.
DEFAULT_MIN_RESOLUTION = 2.0
RESAMPLING = "mean of the non-NaN cells of each 2x2 block of the level below (NaN if all are NaN)"
RECORD_ARRAYS = ("tile_status", "tile_checksum", "tile_cells")
#: Decoded float32 bytes read from the level below at once (one strip of rows of one tile).
READ_BUDGET = 128 * 2**20


@dataclass(frozen=True)
class LevelSpec:
    """Geometry of one pyramid level (cell edges, pixel registration).

    Attributes:
        level: 0 for the root, k for ``overviews/<k>``.
        resolution: cell size in degrees (root resolution × 2^k).
        shape: (rows, columns).
        west: western edge of column 0, degrees.
        north: northern edge of row 0, degrees.
    """

    level: int
    resolution: float
    shape: tuple[int, int]
    west: float
    north: float

    @property
    def path(self) -> str:
        """The level's group, relative to the root (``"."`` for the root)."""
        return "." if self.level == 0 else f"{OVERVIEWS_GROUP}/{self.level}"

    @property
    def transform(self) -> list[float]:
        """``spatial:transform`` ``[a, b, c, d, e, f]``: x = a·col + b·row + c, y = d·col + e·row + f."""
        return [self.resolution, 0.0, self.west, 0.0, -self.resolution, self.north]

    @property
    def bbox(self) -> list[float]:
        """[west, south, east, north] of the cell edges (may pass the root's bbox by one fine cell)."""
        rows, cols = self.shape
        return [self.west, self.north - rows * self.resolution, self.west + cols * self.resolution, self.north]

    @property
    def lat(self) -> npt.NDArray[np.float64]:
        """Cell-centre latitudes, descending."""
        return np.asarray(self.north - (np.arange(self.shape[0]) + 0.5) * self.resolution, dtype=np.float64)

    @property
    def lon(self) -> npt.NDArray[np.float64]:
        """Cell-centre longitudes, ascending."""
        return np.asarray(self.west + (np.arange(self.shape[1]) + 0.5) * self.resolution, dtype=np.float64)

    def coarser(self) -> LevelSpec:
        rows, cols = self.shape
        return LevelSpec(self.level + 1, self.resolution * 2, (-(-rows // 2), -(-cols // 2)), self.west, self.north)


def plan_levels(root: LevelSpec, min_resolution: float = DEFAULT_MIN_RESOLUTION) -> list[LevelSpec]:
    """The overview levels of a root grid: halve until the next level would be coarser than ``min_resolution``.

    Args:
        root: level 0.
        min_resolution: coarsest cell size allowed, degrees (a 0.1° root and 2° give 0.2 … 1.6°).

    Returns:
        Levels 1, 2, … (empty when even level 1 would be too coarse or the root is a single cell).
    """
    if not (math.isfinite(min_resolution) and min_resolution > 0):
        raise ConfigError(f"--min-resolution {min_resolution}: expected a positive cell size in degrees, e.g. 2")
    levels: list[LevelSpec] = []
    level = root
    while level.shape != (1, 1):
        nxt = level.coarser()
        if nxt.resolution > min_resolution * (1 + 1e-9):
            break
        levels.append(nxt)
        level = nxt
    return levels


def coarsen_nanmean(block: npt.NDArray[np.floating], lat_axis: int, lon_axis: int) -> npt.NDArray[np.float32]:
    """NaN-aware 2 × 2 mean over two axes.

    Args:
        block: any array; ``lat_axis`` / ``lon_axis`` of odd length are padded with NaN (a partial block
            averages the cells that exist).
        lat_axis, lon_axis: the two axes to halve.

    Returns:
        float32 array with those axes ceil(n / 2) long: the mean of the non-NaN values of each block,
        NaN where all four are NaN.
    """
    x = np.asarray(block, dtype=np.float32)
    pad = [(0, 0)] * x.ndim
    pad[lat_axis] = (0, x.shape[lat_axis] % 2)
    pad[lon_axis] = (0, x.shape[lon_axis] % 2)
    if any(p[1] for p in pad):
        x = np.pad(x, pad, constant_values=np.nan)
    # split each halved axis into (n/2, 2), the later axis first so the earlier one's index stays valid
    first, second = sorted((lat_axis, lon_axis))
    shape = list(x.shape)
    shape[second : second + 1] = [shape[second] // 2, 2]
    shape[first : first + 1] = [shape[first] // 2, 2]
    x = x.reshape(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice": all four NaN -> NaN, wanted
        out = np.asarray(np.nanmean(x, axis=(first + 1, second + 2)), dtype=np.float32)
    # one NaN bit pattern (0/0 gives the negative "default NaN" on x86): an all-NaN chunk then equals the
    # fill value, is not stored, and reads back with the same bytes (the tile checksum depends on it)
    out[np.isnan(out)] = np.nan
    return out


# ----------------------------------------------------------------------------------------------- store I/O


def _open_group(loc: StoreLocation, mode: str = "r") -> Any:
    import zarr

    with loc.errors("opening", writing=mode != "r"):
        # never the consolidated metadata: it is stale while levels are being added
        return zarr.open_group(loc.zarr_store(read_only=mode == "r"), mode=mode,  # type: ignore[arg-type]
                               use_consolidated=False)


def _at(root: StoreLocation, spec: LevelSpec) -> StoreLocation:
    """The group of a level: the root itself for level 0 (``child(".")`` would name an object ``.``)."""
    return root if spec.level == 0 else root.child(spec.path)


def _dims(arr: Any) -> tuple[str, ...]:
    return tuple(arr.metadata.dimension_names or ())


def root_level(path: str | Path | StoreLocation) -> LevelSpec:
    """Level 0 of a cube, from its ``lat`` / ``lon`` coordinates (and ``range_dist:grid`` for a 1-cell axis).

    Args:
        path: the cube: a local path, or an object-store URL (``s3://bucket/cube.zarr``).

    Raises:
        ConfigError: the path is not a cube (no group, no lat/lon, or an irregular grid).
        ObjectStoreError: the object store refused or could not serve the reads.
    """
    path = StoreLocation.parse(path, "cube")
    path.check_bucket()  # a missing bucket or a refused key is named as such, not as a missing cube
    if not path.exists():
        raise ConfigError(f"cube {path} does not exist; pass the .zarr store written by `range-dist embed-grid`")
    try:
        group = _open_group(path)
        with path.errors("reading the coordinates of"):
            lat = np.asarray(group["lat"][...], dtype=np.float64)
            lon = np.asarray(group["lon"][...], dtype=np.float64)
    except (OSError, ValueError, KeyError) as exc:  # no group (GroupNotFoundError is both), no lat/lon
        raise ConfigError(f"cube {path} is not a range-dist cube ({type(exc).__name__}: {exc}); pass the .zarr "
                          "store written by `range-dist embed-grid`") from exc
    grid = group.attrs.get("range_dist:grid") or {}
    res = float(grid["resolution"]) if "resolution" in grid else float(abs(lat[0] - lat[1]) if len(lat) > 1
                                                                          else abs(lon[1] - lon[0]))
    steps_ok = (len(lat) < 2 or np.allclose(np.diff(lat), -res, rtol=1e-6)) and (
        len(lon) < 2 or np.allclose(np.diff(lon), res, rtol=1e-6))
    if not steps_ok:
        raise ConfigError(f"cube {path}: lat/lon are not a regular north-up {res}° grid; overviews need one")
    return LevelSpec(0, res, (len(lat), len(lon)), float(lon[0] - res / 2), float(lat[0] + res / 2))


def _tile_size(group: Any) -> int:
    signature = group.attrs.get(SIGNATURE_KEY) or {}
    if "tile_size" in signature:
        return int(signature["tile_size"])
    for name in _spatial_arrays(group):
        arr = group[name]
        grid = arr.shards or arr.chunks
        return int(grid[_dims(arr).index("lat")])
    raise ConfigError("the cube has no array with lat and lon dimensions")


def _spatial_arrays(group: Any) -> list[str]:
    """Data arrays over (…, lat, …, lon, …): the ones a level averages (coordinates excluded)."""
    return sorted(name for name, arr in group.arrays()
                  if {"lat", "lon"} <= set(_dims(arr)) and name not in ("lat", "lon"))


def _level_chunks(arr: Any, dims: tuple[str, ...], shape: tuple[int, ...], tile: int) -> tuple[Any, Any]:
    """(inner chunks, shards) of a level's array: the root's rule (one shard per tile, whole inner chunks)."""
    shards_src = arr.shards
    inner_src = arr.chunks
    outer = list(shards_src or inner_src)
    inner = list(inner_src)
    fits = all(tile <= shape[dims.index(d)] for d in ("lat", "lon"))
    for d in ("lat", "lon"):
        i = dims.index(d)
        outer[i] = min(tile, shape[i])
    for d in ("lat", "lon"):
        i = dims.index(d)
        inner[i] = inner_src[i] if fits and outer[i] % inner_src[i] == 0 else outer[i]
    if shards_src is None:
        return tuple(outer), None
    return tuple(inner), tuple(outer)


def _copy_array_meta(src: Any, shape: tuple[int, ...], chunks: Any, shards: Any) -> dict[str, Any]:
    return {"shape": shape, "dtype": src.dtype, "chunks": chunks, "shards": shards, "compressors": src.compressors,
            "serializer": src.serializer, "filters": src.filters, "fill_value": src.fill_value,
            "dimension_names": src.metadata.dimension_names, "attributes": dict(src.attrs)}


def _level_attrs(root_attrs: dict[str, Any], spec: LevelSpec) -> dict[str, Any]:
    import zarr_cm

    attrs = {k: v for k, v in root_attrs.items() if k not in ("multiscales", "range_dist:run_report")}
    # the multiscales declaration belongs to the root only
    attrs["zarr_conventions"] = [c for c in attrs.get("zarr_conventions", [])
                                 if c.get("uuid") != zarr_cm.multiscales.UUID]
    if not attrs["zarr_conventions"]:
        del attrs["zarr_conventions"]
    spatial = zarr_cm.spatial.create(dimensions=["lat", "lon"], shape=list(spec.shape), transform=spec.transform,
                                     bbox=spec.bbox, registration="pixel")
    attrs = zarr_cm.spatial.insert(attrs, spatial, overwrite=True)
    if "proj:code" not in attrs:
        attrs = zarr_cm.proj.insert(attrs, zarr_cm.proj.create(code=CRS_CODE), overwrite=True)
    source = "." if spec.level == 1 else f"{OVERVIEWS_GROUP}/{spec.level - 1}"
    attrs[OVERVIEW_KEY] = {"level": spec.level, "factor": 2**spec.level, "resolution": spec.resolution,
                           "derived_from": source, "resampling": RESAMPLING,
                           "root_signature": root_attrs.get(SIGNATURE_KEY)}
    return dict(to_jsonable(attrs))


def _create_level(root: StoreLocation, spec: LevelSpec, tile: int) -> None:
    """Create ``overviews/<k>``: every root array re-shaped for the level, empty records, attributes."""
    with root.errors(f"creating overview level {spec.level} in", writing=True):
        _create_level_arrays(root, spec, tile)


def _create_level_arrays(root: StoreLocation, spec: LevelSpec, tile: int) -> None:
    src = _open_group(root)
    # an explicit parent group: Zarr v3 has no implicit groups, and consolidation must find the levels
    parent = _open_group(root, mode="r+").require_group(OVERVIEWS_GROUP)
    group = parent.create_group(str(spec.level), attributes=_level_attrs(dict(src.attrs), spec), overwrite=True)
    n_lat, n_lon = spec.shape
    tiles = (-(-n_lat // tile), -(-n_lon // tile))
    for name, arr in src.arrays():
        dims = _dims(arr)
        if name in RECORD_ARRAYS:
            group.create_array(name, **_copy_array_meta(arr, tiles, (1, 1), None))
        elif name in ("lat", "lon"):
            values = spec.lat if name == "lat" else spec.lon
            new = group.create_array(name, **_copy_array_meta(arr, values.shape, values.shape, None))
            new[...] = values.astype(arr.dtype)
        elif {"lat", "lon"} <= set(dims):
            shape = tuple(n_lat if d == "lat" else n_lon if d == "lon" else s for d, s in zip(dims, arr.shape))
            chunks, shards = _level_chunks(arr, dims, shape, tile)
            group.create_array(name, **_copy_array_meta(arr, shape, chunks, shards))
        else:  # beta, feature, spatial_ref, …: the same values
            new = group.create_array(name, **_copy_array_meta(arr, arr.shape, arr.chunks, arr.shards))
            new[...] = arr[...]


def _iter_tiles(shape: tuple[int, int], tile: int) -> Iterator[tuple[int, int, slice, slice]]:
    for r in range(-(-shape[0] // tile)):
        for c in range(-(-shape[1] // tile)):
            yield r, c, slice(r * tile, min((r + 1) * tile, shape[0])), slice(c * tile, min((c + 1) * tile, shape[1]))


def _average_tile(below: Any, encoding: CubeEncoding, rows: slice, cols: slice, shape_below: tuple[int, int],
                  read_budget: int) -> npt.NDArray[np.floating]:
    """A level's tile as computed, (len(compute β), h, w, F), from the level below read in strips of rows.

    The level below is decoded to its computed form (the stored β levels, or [H_geo | q̂] and
    [H_sem | q̂] for the heads layout: β = 0 and 1 select a head exactly, no blend arithmetic),
    averaged in float32 and kept in the cube's compute dtype until :func:`write_tile` encodes it.
    """
    n_b, feat = len(encoding.compute_betas), encoding.feature_dim
    src_cols = slice(2 * cols.start, min(2 * cols.stop, shape_below[1]))
    per_out_row = 2 * (src_cols.stop - src_cols.start) * n_b * feat * 4  # decoded float32 bytes
    strip = max(1, read_budget // max(1, per_out_row))
    out = np.empty((n_b, rows.stop - rows.start, cols.stop - cols.start, feat), dtype=encoding.compute_dtype)
    for start in range(rows.start, rows.stop, strip):
        stop = min(start + strip, rows.stop)
        src = TileKey(0, 0, 2 * start, min(2 * stop, shape_below[0]), src_cols.start, src_cols.stop)
        arrays = {v.name: np.asarray(below[v.name][tile_region(v.dims, src)]) for v in encoding.variables()}
        values = np.asarray(encoding.decoded(arrays, encoding.compute_betas), dtype=np.float32)
        out[:, start - rows.start : stop - rows.start] = coarsen_nanmean(values, 1, 2)
    return out


@dataclass(frozen=True)
class LevelReport:
    """What :func:`build_overviews` did for one level: tiles computed / skipped now, and already done."""

    level: int
    resolution: float
    shape: tuple[int, int]
    computed: int
    skipped: int
    already_done: int


def _matching_level(root: StoreLocation, spec: LevelSpec, signature: Any) -> bool:
    loc = _at(root, spec)
    # is_object: one request on an object store (a "folder" there is only the objects under it)
    if not loc.child("zarr.json").is_object():
        return False
    try:
        attrs = dict(_open_group(loc).attrs)
    except (OSError, ValueError):
        return False
    info = attrs.get(OVERVIEW_KEY) or {}
    return bool(info.get("root_signature") == to_jsonable(signature) and info.get("level") == spec.level
                and list(attrs.get("spatial:shape", [])) == list(spec.shape)
                and loc.child("tile_status/zarr.json").is_object())


def multiscales_attrs(levels: list[LevelSpec]) -> dict[str, Any]:
    """The root's ``multiscales`` value (zarr-cm builder): level 0 = the root, then ``overviews/<k>``."""
    import zarr_cm

    layout: list[Any] = []
    for spec in levels:
        entry: dict[str, Any] = {"asset": spec.path, "spatial:shape": list(spec.shape),
                                 "spatial:transform": spec.transform}
        if spec.level == 0:
            entry["transform"] = {"scale": [1.0, 1.0], "translation": [0.0, 0.0]}
        else:
            entry["derived_from"] = levels[spec.level - 1].path
            entry["transform"] = {"scale": [2.0, 2.0], "translation": [0.0, 0.0]}
            entry["resampling_method"] = "mean"
        layout.append(entry)
    return dict(zarr_cm.multiscales.create(layout=tuple(layout), resampling_method="mean"))


def _check_root_complete(root: StoreLocation) -> None:
    from range_dist.cube.store import read_tile_status

    status = read_tile_status(root)
    missing = int((status == TILE_MISSING).sum())
    if missing:
        raise StoreMismatchError(
            f"cube {root} is not complete ({missing} of {status.size} tiles missing); overviews average the "
            "finished cube: rerun `range-dist embed-grid` with the same settings to finish it first")


def _build_level(root: StoreLocation, spec: LevelSpec, below: LevelSpec, encoding: CubeEncoding, tile: int,
                 read_budget: int, on_tile: Callable[[int, int, int], None] | None) -> LevelReport:
    """Compute the missing tiles of one level from the level below (which is complete)."""
    here = _at(root, spec)
    below_group = _open_group(_at(root, below))
    level = _open_group(here, mode="r+")
    with root.errors(f"reading the completion records of overview level {spec.level} in"):
        below_status = np.asarray(below_group["tile_status"][...])
        status = np.asarray(level["tile_status"][...])
    done, computed, skipped = int((status != TILE_MISSING).sum()), 0, 0
    for r, c, rows, cols in _iter_tiles(spec.shape, tile):
        if status[r, c] != TILE_MISSING:
            continue
        if np.all(below_status[2 * r : 2 * r + 2, 2 * c : 2 * c + 2] == TILE_SKIPPED):  # no land below
            with here.errors(f"recording tile (row {r}, col {c}) in", writing=True):
                level["tile_status"][r, c] = TILE_SKIPPED
            skipped += 1
        else:
            with root.errors(f"reading overview level {below.level} of"):
                block = _average_tile(below_group, encoding, rows, cols, below.shape, read_budget)
            # the cube's own tile writer: the same encoding (int8 re-quantised per cell), checksum and record
            write_tile(here, TileKey(r, c, rows.start, rows.stop, cols.start, cols.stop), block, TILE_COMPUTED)
            computed += 1
        if on_tile is not None:
            on_tile(spec.level, r, c)
    return LevelReport(spec.level, spec.resolution, spec.shape, computed, skipped, done)


def _complete(root: StoreLocation, spec: LevelSpec, signature: Any) -> bool:
    if not _matching_level(root, spec, signature):
        return False
    with root.errors(f"reading the completion record of overview level {spec.level} in"):
        return bool(np.all(np.asarray(_open_group(_at(root, spec))["tile_status"][...]) != TILE_MISSING))


def build_overviews(
    path: str | Path | StoreLocation, *, min_resolution: float = DEFAULT_MIN_RESOLUTION, read_budget: int = READ_BUDGET,
    on_tile: Callable[[int, int, int], None] | None = None,
) -> list[LevelReport]:
    """Compute (or resume) the overview levels of a finished cube and record them in ``multiscales``.

    Holds the store's lease (:class:`~range_dist.util.lease.StoreLease`) while writing: never beside a
    running ``embed-grid`` or another ``overviews`` on the same cube. Levels coarser than
    ``min_resolution`` left by an earlier run are kept, and listed while they are complete.

    Args:
        path: the cube: a local path, or an object-store URL (``s3://bucket/cube.zarr``; a ``Path`` made of
            one is read back as the URL).
        min_resolution: coarsest level's largest cell size, degrees.
        read_budget: decoded bytes read from the level below at once.
        on_tile: called with (level, row, column) after each tile is written (progress; tests use it).

    Returns:
        One :class:`LevelReport` per level of the plan.

    Raises:
        ConfigError: not a cube, or a bad ``min_resolution``.
        StoreMismatchError: the cube is not finished (tiles missing).
        StoreBusyError: another run holds the store's lease.
        StoreWriteError: a write failed (disk full, …); done tiles are kept and a rerun resumes.
        ObjectStoreError: an object store refused or could not serve a request (one line; done tiles are kept).
    """
    import zarr
    import zarr_cm

    from range_dist.util.lease import StoreLease

    root = StoreLocation.parse(path, "cube")
    spec0 = root_level(root)
    root_group = _open_group(root)
    with root.errors("reading"):
        has_record = "tile_status" in root_group
        signature = root_group.attrs.get(SIGNATURE_KEY)
        tile = _tile_size(root_group)
        encoding = read_encoding(root, root_group)
    if not has_record:
        raise ConfigError(f"cube {root} has no completion record (tile_status); pass a cube written by embed-grid")
    levels = plan_levels(spec0, min_resolution)
    _check_root_complete(root)
    reports = []
    with StoreLease(root, f"overviews -> {root}"):
        try:
            chain = [spec0]
            for spec in levels:
                if not _matching_level(root, spec, signature):
                    stale = root.child(spec.path)
                    if stale.exists():  # made from another root or with another geometry: redo it
                        stale.remove_tree()
                    _create_level(root, spec, tile)
                reports.append(_build_level(root, spec, chain[-1], encoding, tile, read_budget, on_tile))
                chain.append(spec)
            while chain[-1].shape != (1, 1) and _complete(root, chain[-1].coarser(), signature):
                chain.append(chain[-1].coarser())  # coarser levels of an earlier run stay listed
            updated = zarr_cm.multiscales.insert(dict(root_group.attrs), multiscales_attrs(chain),  # type: ignore[call-overload]
                                                 overwrite=True)
            with root.errors("recording the overviews of", writing=True):
                _open_group(root, mode="r+").attrs.update({"multiscales": updated["multiscales"],
                                                           "zarr_conventions": updated["zarr_conventions"]})
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec" (xarray)
                    zarr.consolidate_metadata(root.zarr_store())
        except OSError as exc:
            raise StoreWriteError.of(exc, f"writing overviews of {root}", "Finished tiles are kept") from exc
    return reports


def present_levels(path: str | Path | StoreLocation) -> list[int]:
    """The overview levels stored in a cube (``overviews/<k>`` with its ``zarr.json``), ascending.

    One listing on an object store (which has no folders to glob: the keys under ``overviews/``).
    """
    loc = StoreLocation.parse(path, "cube").child(OVERVIEWS_GROUP)
    if loc.is_local:
        root = loc.local
        return sorted(int(p.name) for p in root.glob("*") if p.name.isdigit()) if root.is_dir() else []
    return sorted({int(key.split("/")[0]) for key in loc.object_sizes()
                   if key.count("/") == 1 and key.endswith("/zarr.json") and key.split("/")[0].isdigit()})


def level_path(path: str | Path | StoreLocation, level: int) -> Path | str:
    """The group of pyramid level ``level`` (0 = the root).

    Args:
        path: the cube: a local path or an object-store URL.
        level: 0 for the root, k for ``overviews/<k>``.

    Returns:
        The group's local ``Path`` for a local cube, its URL text for a cube on an object store.

    Raises:
        ConfigError: no such level (the levels present are named).
        ObjectStoreError: the object store refused or could not serve the reads.
    """
    root = StoreLocation.parse(path, "cube")
    if level == 0:
        return root.as_arg()
    target = root.child(f"{OVERVIEWS_GROUP}/{level}")
    if not target.child("zarr.json").is_object():
        have = ", ".join(str(k) for k in [0, *present_levels(root)])
        raise ConfigError(f"level={level}: cube {root} has no such overview level (levels: {have}); "
                          "run `range-dist overviews CUBE` to make them")
    return target.as_arg()
