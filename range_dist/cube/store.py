"""The embedding cube on disk: template, tile (shard) writes, completion record, finalisation.

Layout of ``STORE.zarr`` (Zarr v3):

* the embedding arrays of the cube's layout and encoding (:mod:`range_dist.cube.encoding`): by
  default ``embedding`` (beta, lat, lon, feature), float16/float32, NaN = not embedded (ocean in
  land-only mode); with ``layout=heads`` ``H_geo`` / ``H_sem`` / ``q_hat`` (lat, lon, ·); with
  ``quantize=int8`` int8 codes plus ``*_scale`` float32 arrays. One shard per tile in every array:
  the shard is the unit of concurrent writing, so two workers never touch the same shard. Inner
  chunks (1, c, c, ·) keep analysis reads small.
* coordinates ``beta`` (beta layout), ``lat`` (descending), ``lon`` (ascending), ``feature``, with CF
  attributes, and a scalar ``spatial_ref`` (EPSG:4326) that rioxarray reads back with
  ``decode_coords="all"``.
* ``tile_status`` (tile_row, tile_col) uint8: the completion record, one chunk per tile, written
  after the tile's data: 0 missing, 1 computed, 2 skipped (no land). Chunks equal to the fill
  value are never written by Zarr, so "no data object" cannot mean "done"; this record can.
* attributes: the Zarr conventions ``proj`` and ``spatial`` (registered in ``zarr_conventions``, built
  and validated with zarr-cm: :func:`geozarr_attrs`), ``geoemb:``, the encoding record
  (``range_dist:cube_encoding``, ``emb:quantization``), and ``range_dist:`` provenance with the run
  signature (grid, models, database, β, τ, dtype, layout, quantisation, tiling): a rerun with the
  same signature resumes, a different one is refused unless overwriting.

The store is a local folder or an object-store prefix (``s3://``, ``gs://``, ``az://``: every function
here takes a path, URL text or a :class:`~range_dist.util.stores.StoreLocation`). Object stores have no
rename, so nothing here relies on one; each write stays idempotent as follows:

* a tile's data is one whole shard per array, written in one PUT: a rewrite (a retried tile, a
  resume) replaces the same objects with the same bytes, and a reader sees the old object or the new
  one, never half of one;
* the tile's checksum and cell count, then its ``tile_status`` entry (one object per tile each), are
  written after its data: a run cut short in between leaves the tile "missing", and it is redone;
* the template (array metadata and attributes) is written once at creation; the run report and the
  consolidated metadata only at the end (:func:`finalize_cube`).

A reader mid-run (``xr.open_zarr(url)``) therefore sees a complete template, each finished tile's
values, NaN (the fill value) where a tile is not written yet, and in ``tile_status`` which tiles are
done; without consolidated metadata until the run ends (xarray falls back to reading each array's
``zarr.json``). ``--overwrite`` removes the old store object by object with its root ``zarr.json``
last, so a removal cut short is still recognised as a range-dist store and finished by the rerun.
"""

from __future__ import annotations

import base64
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from range_dist.cube.encoding import ENCODING_KEY, CubeEncoding, Variable
from range_dist.errors import StoreMismatchError, StoreWriteError
from range_dist.grid.spec import GridSpec, TileKey, tile_counts
from range_dist.util.jsonable import to_jsonable
from range_dist.util.stores import StoreLocation

#: What a store argument may be: a local path, URL text (``s3://...``) or a parsed location.
StoreLike = str | Path | StoreLocation

TILE_MISSING, TILE_COMPUTED, TILE_SKIPPED = 0, 1, 2
SIGNATURE_KEY = "range_dist:signature"
#: Signature entries added after cubes were first written: an older cube's signature lacks them and
#: is compared as if it held these values (so it still resumes).
SIGNATURE_DEFAULTS = {"layout": "beta", "quantize": "none"}
KEY_DIM = 256


#: The CRS of every cube (cell centres in degrees of WGS 84).
CRS_CODE = "EPSG:4326"
#: Where each stored variable's CRS is described (rioxarray's and CF's ``grid_mapping`` variable).
GRID_MAPPING = "spatial_ref"


def affine_transform(grid: GridSpec) -> list[float]:
    """The cell-edge affine ``[a, b, c, d, e, f]`` of the spatial convention (pixel registration).

    ``x = a·col + b·row + c``, ``y = d·col + e·row + f`` with (col, row) = (0, 0) the north-west
    corner of cell (0, 0): ``[res, 0, west, 0, -res, north]`` (rasterio's ``Affine`` order, not
    GDAL's geotransform order).
    """
    res = float(grid.resolution)
    west, north = float(grid.lon[0] - res / 2), float(grid.lat[0] + res / 2)
    return [res, 0.0, west, 0.0, -res, north]


def geozarr_attrs(grid: GridSpec) -> dict[str, Any]:
    """The ``spatial`` and ``proj`` convention attributes of a cube on ``grid``, with their
    ``zarr_conventions`` registration, built and validated by zarr-cm (the conventions' library)."""
    import zarr_cm
    from zarr_cm import proj, spatial

    res = float(grid.resolution)
    west, north = float(grid.lon[0] - res / 2), float(grid.lat[0] + res / 2)
    east, south = float(grid.lon[-1] + res / 2), float(grid.lat[-1] - res / 2)
    data = {
        "spatial": spatial.create(dimensions=["lat", "lon"], bbox=[west, south, east, north],
                                  transform_type="affine", transform=affine_transform(grid),
                                  shape=[int(n) for n in grid.shape], registration="pixel"),
        "proj": proj.create(code=CRS_CODE),
    }
    return dict(zarr_cm.create_many(data))  # type: ignore[arg-type]


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
        layout: ``beta`` (one embedding per β level) or ``heads`` (H_geo, H_sem, q̂ once per cell).
        quantize: ``none`` or ``int8`` (codes + float32 scale per cell and part).
        heads: retrieval heads stored in the heads layout (RANGE: ``("sem",)``).
    """

    grid: GridSpec
    betas: tuple[float, ...]
    feature_dim: int
    dtype: str
    tile_size: int
    chunk_size: int
    layout: str = "beta"
    quantize: str = "none"
    heads: tuple[str, ...] = ("geo", "sem")

    @property
    def encoding(self) -> CubeEncoding:
        return CubeEncoding(self.layout, self.dtype, self.quantize, self.feature_dim - KEY_DIM, KEY_DIM, self.betas,
                            self.heads)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(β levels, lat, lon, feature) of the decoded embedding (the stored β levels in beta layout)."""
        n_lat, n_lon = self.grid.shape
        return len(self.betas), n_lat, n_lon, self.feature_dim

    @property
    def nbytes(self) -> int:
        """Stored bytes before compression (values and scales)."""
        n_lat, n_lon = self.grid.shape
        return n_lat * n_lon * self.encoding.bytes_per_cell()

    @property
    def tiles_shape(self) -> tuple[int, int]:
        return tile_counts(self.grid.shape, self.tile_size)


def _var_shape(layout: CubeLayout, var: Variable) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(shape, shard, inner chunk) of a stored variable: one shard per tile, whole trailing axes."""
    n_lat, n_lon = layout.grid.shape
    t, c = layout.tile_size, layout.chunk_size
    lead = (len(layout.betas),) if var.dims[0] == "beta" else ()
    shape = (*lead, n_lat, n_lon, *var.trailing)
    shard = (*lead, min(t, n_lat), min(t, n_lon), *var.trailing)
    # A shard must be a whole number of inner chunks: a grid smaller than a tile gets one chunk per β.
    side = (c, c) if (t <= n_lat and t <= n_lon) else (shard[len(lead)], shard[len(lead) + 1])
    chunk = (*(1,) * len(lead), *side, *var.trailing)
    return shape, shard, chunk


def crs_attrs() -> dict[str, Any]:
    """The ``spatial_ref`` variable's attributes, as ``rioxarray``'s ``write_crs`` makes them: pyproj's CF
    grid-mapping record, with GDAL's WKT (rasterio's) as ``crs_wkt`` and ``spatial_ref``."""
    import pyproj
    from rasterio.crs import CRS

    crs = CRS.from_user_input(CRS_CODE)
    attrs: dict[str, Any] = pyproj.CRS.from_user_input(crs).to_cf()
    wkt = crs.to_wkt()
    attrs["spatial_ref"] = wkt  # for GDAL
    attrs["crs_wkt"] = wkt
    return attrs


def _cf_fill(value: float) -> str:
    """A float ``_FillValue`` attribute as xarray writes it to Zarr v3: the float64's bytes, base64
    (``xarray.backends.zarr.FillValueCoder``), whatever the array's float dtype."""
    return base64.standard_b64encode(struct.pack("<d", float(value))).decode()


def _write_template(group: Any, layout: CubeLayout, feature_layout: str) -> None:
    """The cube's arrays into an empty Zarr v3 ``group``: coordinates with their values, the CRS variable, and
    each stored variable's metadata (no chunk: tiles write their shards). ``feature_layout`` describes the
    ``feature`` coordinate (the root's ``geoemb:feature_layout``).

    This is the metadata ``xarray.Dataset.to_zarr(compute=False)`` writes for the cube's Dataset (dask
    arrays of the fill value, ``rio.write_crs``; ``tests/test_cube_template.py`` checks every document
    against it). Written with zarr directly because xarray writes metadata only for dask-backed
    variables (pydata/xarray#8343): importing xarray, dask and rioxarray cost every run ~0.7 s before.
    """
    from zarr.codecs import BloscCodec

    grid, enc = layout.grid, layout.encoding
    nan = _cf_fill(np.nan)

    def coordinate(name: str, values: npt.NDArray[Any], attrs: dict[str, Any]) -> None:
        fill = {"_FillValue": nan} if values.dtype.kind == "f" else {}
        group.create_array(name, data=values, chunks=values.shape, fill_value=np.nan if fill else None,
                           attributes={**attrs, **fill}, dimension_names=(name,))

    coordinate("lat", np.asarray(grid.lat, dtype=np.float64),
               {"standard_name": "latitude", "long_name": "latitude of cell centre", "units": "degrees_north",
                "axis": "Y"})
    coordinate("lon", np.asarray(grid.lon, dtype=np.float64),
               {"standard_name": "longitude", "long_name": "longitude of cell centre", "units": "degrees_east",
                "axis": "X"})
    if enc.layout == "beta":
        coordinate("beta", np.asarray(layout.betas, dtype=np.float64),
                   {"long_name": "RANGE+ beta: weight of the semantic head (0 = spatial, 1 = semantic)",
                    "units": "1"})
        coordinate("feature", np.arange(layout.feature_dim, dtype=np.int32),
                   {"long_name": "embedding feature index",
                    "description": feature_layout})
    # a scalar equal to its fill value: metadata only, as xarray writes it
    group.create_array(GRID_MAPPING, shape=(), dtype="int64", fill_value=0, attributes=crs_attrs())
    for var in enc.variables():
        shape, shard, chunk = _var_shape(layout, var)
        floating = np.dtype(var.dtype).kind == "f"
        group.create_array(
            var.name, shape=shape, dtype=var.dtype, chunks=chunk, shards=shard,
            # int8 codes: no CF fill value, or a reader would mask the code 0 (the scale says "not embedded")
            fill_value=var.fill if floating else None,
            # Embeddings barely compress (~1.1×); bit-shuffled LZ4 gets that at ~1.4× zstd's speed.
            compressors=(BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),),
            attributes={**var.attrs, "grid_mapping": GRID_MAPPING, **({"_FillValue": _cf_fill(var.fill)}
                                                                       if floating else {})},
            dimension_names=var.dims)


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


def _zarr(loc: StoreLocation, read_only: bool) -> Any:
    """What zarr opens ``loc`` with: the local path as text (as always), or the object store's ``FsspecStore``."""
    return str(loc.local) if loc.is_local else loc.zarr_store(read_only=read_only)


def inspect_cube(path: StoreLike, signature: dict[str, Any], overwrite: bool = False) -> ExistingCube:
    """Decide what a run will do with ``path``, reading only: create, resume or replace.

    Raises:
        StoreMismatchError: the path is a file, a folder that is not a range-dist cube (never
            deleted, even with ``overwrite``), or a cube with another signature without ``overwrite``.
        ObjectStoreError: an object store refused or could not serve the reads.
    """
    path = StoreLocation.parse(path)
    if not path.exists():
        return ExistingCube("create")
    if path.is_object():
        raise StoreMismatchError(f"{path} exists and is a file, not a Zarr store; choose another --out")
    existing = _read_signature(path)
    if existing is not None:  # an older cube: the entries added since, at the values it was made with
        existing = {**SIGNATURE_DEFAULTS, **existing}
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
    path: StoreLike, layout: CubeLayout, signature: dict[str, Any], attrs: dict[str, Any], overwrite: bool = False
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
        ObjectStoreError: an object store refused or could not serve a request.
    """
    import zarr

    path = StoreLocation.parse(path)
    state = inspect_cube(path, signature, overwrite)
    if state.action == "resume":
        return read_tile_status(path)
    if state.action == "replace":  # validated above: a range-dist cube (never anything else)
        path.remove_tree(last="zarr.json")
    signature = to_jsonable(signature)
    root_attrs = {**to_jsonable(attrs), **layout.encoding.to_attrs(), SIGNATURE_KEY: signature}
    with path.errors("creating the cube", writing=True), warnings.catch_warnings():
        # an object store may list the "folders" of a just-removed store for a moment (SeaweedFS): zarr
        # warns that they are no Zarr nodes, and mode="w" clears them anyway
        warnings.filterwarnings("ignore", message="Object at .* is not recognized as a component")
        group = zarr.open_group(_zarr(path, read_only=False), mode="w", zarr_format=3, attributes=root_attrs)
        _write_template(group, layout, str(root_attrs.get("geoemb:feature_layout", "")))
    rows, cols = layout.tiles_shape
    try:
        # per-tile integrity, written before the tile's status (range_dist.cube.integrity checks them)
        group.create_array("tile_checksum", shape=(rows, cols), chunks=(1, 1), dtype="uint32", fill_value=0,
                           dimension_names=("tile_row", "tile_col"),
                           attributes={"long_name": "CRC-32 (zlib) of the tile's blocks as written, chained over "
                                                    "the embedding arrays in the order of range_dist:cube_encoding "
                                                    "variables (stored dtype, C order, NaN cells included)"})
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


def _read_signature(path: StoreLocation) -> dict[str, Any] | None:
    import zarr
    from zarr.errors import ContainsArrayError, GroupNotFoundError

    try:
        with path.errors("reading"):
            group = zarr.open_group(_zarr(path, read_only=True), mode="r")
    except (GroupNotFoundError, ContainsArrayError):  # no Zarr group there: not a cube
        return None
    except (OSError, ValueError, TypeError) as exc:  # unreadable, or a corrupt zarr.json (bad JSON, not an object)
        raise StoreMismatchError(f"{path} is not a readable Zarr store ({type(exc).__name__}: {exc}); it is never "
                                 "deleted for you: choose another --out, or remove it yourself") from exc
    value = group.attrs.get(SIGNATURE_KEY)
    return dict(value) if isinstance(value, dict) else None


def read_tile_status(path: StoreLike) -> npt.NDArray[np.uint8]:
    """The completion record, (tile_row, tile_col) uint8."""
    import zarr

    loc = StoreLocation.parse(path)
    with loc.errors("reading the completion record of"):
        return np.asarray(zarr.open_array(_zarr(loc, read_only=True), path="tile_status", mode="r")[...],
                          dtype=np.uint8)


def open_cube_group(path: StoreLike, mode: str = "r") -> Any:
    """The cube's root Zarr group (``mode`` ``r`` or ``r+``), local or on an object store."""
    import zarr

    loc = StoreLocation.parse(path)
    with loc.errors("opening", writing=mode != "r"):
        return zarr.open_group(_zarr(loc, read_only=mode == "r"), mode=mode)  # type: ignore[arg-type]


def read_encoding(path: StoreLike, group: Any = None) -> CubeEncoding:
    """The encoding a cube records (a cube made before the record: a float beta-layout cube)."""
    group = open_cube_group(path) if group is None else group
    attrs = dict(group.attrs)
    if ENCODING_KEY in attrs:
        return CubeEncoding.from_attrs(attrs)
    emb = group["embedding"]
    return CubeEncoding.from_attrs(attrs, str(emb.dtype), int(emb.shape[-1]),
                                   tuple(np.asarray(group["beta"][...], dtype=float)) if "beta" in group else ())


def tile_region(dims: tuple[str, ...], tile: TileKey) -> tuple[slice, ...]:
    """The index of a tile in an array with dimensions ``dims`` (lat/lon sliced, the rest whole)."""
    return tuple(slice(tile.y0, tile.y1) if d == "lat" else slice(tile.x0, tile.x1) if d == "lon" else slice(None)
                 for d in dims)


def stored_checksum(encoding: CubeEncoding, stored: dict[str, npt.NDArray[Any]]) -> tuple[int, int]:
    """(CRC-32 of a tile's stored blocks chained in variable order, embedded cells).

    For a float beta-layout cube this is the CRC-32 of the ``embedding`` block alone, as before
    the other layouts existed. zlib's CRC-32 runs at several GB/s here; a tile of 256² cells × 3 β
    × 1280 float16 (0.5 GB) costs about 0.1 s, next to minutes of computing it on a CPU.
    """
    crc = 0
    for var in encoding.variables():
        crc = zlib.crc32(np.ascontiguousarray(stored[var.name]).data, crc)
    return crc, encoding.embedded_cells(stored)


def block_checksum(block: npt.NDArray[np.floating]) -> tuple[int, int]:
    """(CRC-32 of the block's bytes, embedded cells) of a float (beta, h, w, feature) block as stored."""
    data = np.ascontiguousarray(block)
    cells = int((~np.isnan(data[0, :, :, 0])).sum()) if data.size else 0
    return zlib.crc32(data.data), cells


#: Array configuration of a tile write (see :func:`write_tile`).
TILE_WRITE_CONFIG = {"write_empty_chunks": True}


def write_tile(path: StoreLike, tile: TileKey, block: npt.NDArray[np.floating] | None, status: int) -> int:
    """Write one tile as whole shards of the cube's arrays, then mark it in the record.

    Args:
        path: the cube.
        tile: the tile.
        block: (len(compute β), h, w, D+256) as computed (the stored β levels, or (0, 1) for the
            heads layout: :attr:`CubeEncoding.compute_betas`); None for a skipped tile. It is
            encoded here in the cube's layout and encoding (read from the store's record).
        status: the completion status to record.

    Idempotent: writing a tile again replaces the same shards with the same bytes. The tile's checksum
    and cell count, then its status, are written only after the data, so a crash in between leaves
    the tile "missing" and it is redone. On an object store each shard is one object written whole
    (one PUT: atomic for a reader, no rename needed), and so is each record entry (chunks of 1 × 1).

    ``path`` may also be a ``Path`` made of an object-store URL (``s3:/bucket/cube.zarr``: executors
    that pass the store on as a path); it is read back as the URL (:meth:`StoreLocation.parse`).

    Returns:
        Bytes of embedding data written (0 for a skipped tile).
    """
    import zarr

    loc = StoreLocation.parse(path)
    written = 0
    doing = f"writing tile (row {tile.row}, col {tile.col}) to"
    try:
        with loc.errors(doing, writing=True):
            checksum, cells = 0, 0
            # zarr_format=3: every cube is Zarr v3, and without it zarr probes the v2 metadata files
            # first (on an object store 6 requests more per tile, each tile reopening the group)
            group: Any = zarr.open_group(_zarr(loc, read_only=False), mode="r+", zarr_format=3)
            if block is not None:
                encoding = read_encoding(loc, group)
                stored = encoding.encode_block(np.asarray(block))
                for var in encoding.variables():
                    # every inner chunk stored, all-fill (ocean) ones too: zarr's test of each chunk against
                    # the NaN fill took 1.3-3 s of a 0.1° tile's 3-5 s write (float16, 503 MB), and an
                    # all-NaN chunk compresses to a few hundred bytes
                    arr: Any = group[var.name].with_config(TILE_WRITE_CONFIG)
                    arr[tile_region(var.dims, tile)] = stored[var.name]
                    written += int(stored[var.name].nbytes)
                checksum, cells = stored_checksum(encoding, stored)
            try:
                record = group["tile_checksum"]  # one lookup: `in` and then `[]` would open it twice
            except KeyError:  # cubes made before the integrity record have none
                record = None
            if record is not None:
                record[tile.row, tile.col] = checksum
                group["tile_cells"][tile.row, tile.col] = cells
            group["tile_status"][tile.row, tile.col] = status  # last: the tile is done only now
    except OSError as exc:  # disk full, quota, I/O error: say where, and that a rerun resumes
        raise StoreWriteError.of(exc, f"{doing} {loc}", "The tile is not marked done") from exc
    return written


def finalize_cube(path: StoreLike, report: dict[str, Any]) -> None:
    """Record the run report in the attributes and consolidate the metadata."""
    import zarr

    loc = StoreLocation.parse(path)
    with loc.errors("finishing", writing=True):
        group = zarr.open_group(_zarr(loc, read_only=False), mode="r+")
        group.attrs["range_dist:run_report"] = to_jsonable(report)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec" (xarray reads it)
            zarr.consolidate_metadata(_zarr(loc, read_only=False))
