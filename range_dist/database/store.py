"""The retrieval database: in-memory form, validation, and its npz / Zarr v3 files.

Zarr v3 layout (one group; every array has ``dimension_names`` so ``xr.open_zarr`` reads it):

* ``locations`` (row, lonlat) float64: (lon, lat) degrees of each row's chip centre
* ``keys`` (row, key_feature) float32: SatCLIP image embeddings (stored raw, L2-normalised on use)
* ``values`` (row, value_feature) float32: SatMAE image embeddings
* one (row,) array per provenance column (``source_row``, ``location_id``, ``item_id``, ...)
* group attribute ``range_dist_database``: format version, rows, dims, key/value models, origin,
  radiometry and how rows were made, the list of provenance columns, and the integrity record.

Integrity record (``range_dist_database["integrity"]``): Zarr reads a missing chunk as its fill
value (zeros), so a deleted chunk file would silently become zero rows. For every array, the record
holds the array's ``chunk_rows`` and one digest per row block of that size (block ``i`` is rows
``[i * chunk_rows, min((i + 1) * chunk_rows, rows))``, exactly one chunk row). Design choices:

* the digest is over the *decoded* rows, not the stored chunk bytes: it does not depend on codecs,
  it is computed from the rows in memory while writing (no read back), and it stays valid when the
  appender rewrites the last partial chunk or when a resume cuts back an interrupted batch (both
  change the chunk's bytes, never its committed rows);
* SHA-256 truncated to 128 bits: hardware-accelerated on current CPUs (about 1.6 GB/s here, faster
  than blake2b), far beyond what accidental damage needs;
* it lives in the same attributes write that commits ``rows``, after the data, so a crash leaves
  the previous consistent (rows, record) pair; a block costs 32 characters of attributes.

``open`` makes the cheap check (every recorded chunk file is present, every array holds the
committed rows: a few ``stat`` calls); :func:`verify_database` (``range-dist verify``) recomputes
every digest.

The published RANGE ``.npz`` layout is ``locs`` (M, 2), ``satclip_embeddings`` (M, 256),
``image_embeddings`` (M, 1024).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import shutil
import time
import zipfile
import zlib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from range_dist.errors import DatabaseError, RangeDistError
from range_dist.util.downloads import fetch_input, is_remote, parse_remote
from range_dist.util.hashing import BackgroundSha256
from range_dist.util.jsonable import to_jsonable
from range_dist.util.lease import holder_is_gone, read_holder
from range_dist.util.paths import local_path
from range_dist.util.stores import OBJECT_STORES, StoreLocation

if TYPE_CHECKING:
    from zarr.core.array_spec import ArrayConfigParams

_LOG = logging.getLogger(__name__)

FORMAT_NAME = "range-dist-retrieval-database"
FORMAT_VERSION = 1
ATTRS_KEY = "range_dist_database"

NPZ_LOCATIONS, NPZ_KEYS, NPZ_VALUES = "locs", "satclip_embeddings", "image_embeddings"
NPZ_SAMPLE_NOTE = "range_dist_sample_note"  # extra array in sample databases only

#: The integrity record inside the attributes (see the module docstring).
INTEGRITY_KEY = "integrity"
INTEGRITY_VERSION = 1
DIGEST_NAME = "sha256-128 of each row block's decoded rows"
DIGEST_HEX = 32
#: Array configuration of every database write: an all-zero chunk is stored too, so that every
#: recorded chunk has a file (zarr's default skips chunks equal to the fill value).
WRITE_CONFIG: ArrayConfigParams = {"write_empty_chunks": True}
#: What reading a damaged chunk raises (zstd: RuntimeError; vlen strings: ValueError).
READ_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, ValueError, OSError, TypeError, EOFError)
#: Bytes read at once per array by :func:`verify_database`.
VERIFY_WINDOW_BYTES = 256 * 2**20
#: Meta keys that describe the stored form, not the rows (not carried into ``RetrievalDatabase.attrs``).
STORE_META_KEYS = ("format", "format_version", "rows", "key_dim", "value_dim", "provenance_columns", INTEGRITY_KEY)

#: What the published database's keys and values are (docs/method.md §Published database).
PUBLISHED_KEY_MODEL = "SatCLIP image encoder (ViT-S/16, L40), 256-d"
PUBLISHED_VALUE_MODEL = "SatMAE ViT-L/16 fMoW-RGB pretrain, mean patch token, 1024-d"


def _first_bad_row(mask: Any) -> int:
    return int(np.flatnonzero(mask)[0])


@dataclass
class RetrievalDatabase:
    """Database rows for RANGE retrieval.

    Attributes:
        locations: (M, 2) float64 (lon, lat) degrees.
        keys: (M, K) float32 SatCLIP image embeddings (raw; normalised by the engine).
        values: (M, D) float32 SatMAE embeddings: a view of :attr:`values_with_ones`, so that the
            retrieval engine uses the same rows instead of a second copy (the values are held once).
        provenance: per-row columns, each an array of length M.
        attrs: description: key/value models, origin, radiometry, sample flag, ...
    """

    locations: npt.NDArray[Any]
    keys: npt.NDArray[Any]
    values: npt.NDArray[Any]
    provenance: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        for name in ("locations", "keys", "values"):
            dtype = np.asarray(getattr(self, name)).dtype
            if dtype.kind not in "biuf":
                raise DatabaseError(f"{self.source}: {name} holds {_dtype_words(dtype)}, not numbers; a database's "
                                    "locations, keys and values must be numeric (float) arrays")
        self.locations = np.ascontiguousarray(self.locations, dtype=np.float64)
        self.keys = np.ascontiguousarray(self.keys, dtype=np.float32)
        if np.ndim(self.values) == 2:
            buffer = _with_ones_column(self.values)
            self.values = buffer[:, :-1]
            self.__dict__["_buffer"] = buffer
        else:  # validate() names the bad shape
            self.values = np.ascontiguousarray(self.values, dtype=np.float32)
        self.validate()

    @property
    def values_with_ones(self) -> npt.NDArray[np.float32]:
        """(M, D + 1) float32: the values and a trailing ones column, the buffer :attr:`values` views.

        The retrieval engine's values product reads it as is (the ones column gives the softmax sums
        from the same product), so a process holds the values once, not twice.
        """
        buffer = self.__dict__.get("_buffer")
        v = self.values
        if (buffer is not None and buffer.shape == (v.shape[0], v.shape[1] + 1) and v.strides == buffer.strides
                and v.__array_interface__["data"][0] == buffer.__array_interface__["data"][0]):
            return buffer  # type: ignore[no-any-return]
        buffer = _with_ones_column(v)  # values replaced after construction: a new buffer, kept
        self.values = buffer[:, :-1]
        self.__dict__["_buffer"] = buffer
        return buffer

    def __getstate__(self) -> dict[str, Any]:
        # pickle (Ray's object store) the one buffer, not a contiguous copy of the view; the remembered
        # fingerprint stays behind (the copy's arrays are other objects: it would not be used)
        state = {k: v for k, v in self.__dict__.items() if k not in ("_buffer", "_fingerprint", "_kept")}
        state["values"] = self.values_with_ones
        state["_values_with_ones"] = True
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if state.pop("_values_with_ones", False):
            state["_buffer"] = state["values"]
            state["values"] = state["values"][:, :-1]
        self.__dict__.update(state)

    # ------------------------------------------------------------------ properties
    @property
    def rows(self) -> int:
        return int(self.locations.shape[0])

    @property
    def key_dim(self) -> int:
        return int(self.keys.shape[1])

    @property
    def value_dim(self) -> int:
        return int(self.values.shape[1])

    def describe(self) -> dict[str, Any]:
        """The attributes written to the store, completed with the shape facts."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            **self.attrs,
            "rows": self.rows,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "provenance_columns": sorted(self.provenance),
        }

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check shapes, finiteness, coordinate ranges and key norms.

        Raises:
            DatabaseError: naming the array, the first bad row and the fix.
        """
        src = self.source
        if self.locations.ndim != 2 or self.locations.shape[1] != 2:
            raise DatabaseError(f"{src}: locations must have shape (M, 2) (lon, lat), got {self.locations.shape}")
        m = self.locations.shape[0]
        if m == 0:
            raise DatabaseError(f"{src}: the database has no rows")
        for name, arr in (("keys", self.keys), ("values", self.values)):
            if arr.ndim != 2:
                raise DatabaseError(f"{src}: {name} must be 2-D (M, dim), got shape {arr.shape}")
            if arr.shape[0] != m:
                raise DatabaseError(
                    f"{src}: {name} has {arr.shape[0]} rows but locations has {m}; the arrays must be "
                    "row-aligned (one row per chip)"
                )
        for name, col in self.provenance.items():
            if len(col) != m:
                raise DatabaseError(f"{src}: provenance column {name!r} has {len(col)} rows, expected {m}")
        for name, arr in (("locations", self.locations), ("keys", self.keys), ("values", self.values)):
            bad = _non_finite_rows(arr)
            if bad.any():
                row = _first_bad_row(bad)
                raise DatabaseError(
                    f"{src}: {name} row {row} contains NaN or infinite values ({int(bad.sum())} such rows); "
                    "drop those rows or rebuild them"
                )
        lon, lat = self.locations[:, 0], self.locations[:, 1]
        bad = (np.abs(lon) > 180) | (np.abs(lat) > 90)
        if bad.any():
            row = _first_bad_row(bad)
            raise DatabaseError(
                f"{src}: locations row {row} = ({lon[row]}, {lat[row]}) is outside lon [-180, 180] / "
                "lat [-90, 90]; locations must be (lon, lat) degrees (are the columns swapped?)"
            )
        bad = _zero_rows(self.keys)
        if bad.any():
            row = _first_bad_row(bad)
            raise DatabaseError(
                f"{src}: keys row {row} has zero norm ({int(bad.sum())} such rows); a key must be a "
                "non-zero SatCLIP image embedding. Drop or recompute those rows"
            )

    def check_compatible(self, key_dim: int, value_dim: int | None = None, what: str = "the location encoder") -> None:
        """Raise DatabaseError when the key (or value) width does not match the model's."""
        if self.key_dim != key_dim:
            raise DatabaseError(
                f"{self.source}: keys are {self.key_dim}-d but {what} produces {key_dim}-d embeddings; "
                "the database keys must come from the SatCLIP model whose location encoder you use"
            )
        if value_dim is not None and self.value_dim != value_dim:
            raise DatabaseError(f"{self.source}: values are {self.value_dim}-d, expected {value_dim}-d")

    # ------------------------------------------------------------------ transforms
    def select(self, rows: slice | npt.NDArray[np.int64]) -> RetrievalDatabase:
        """A database of a subset of rows (provenance and attributes follow)."""
        return RetrievalDatabase(
            self.locations[rows],
            self.keys[rows],
            self.values[rows],
            {k: v[rows] for k, v in self.provenance.items()},
            dict(self.attrs),
            source=self.source,
        )

    def shard_bounds(self, shards: int) -> list[tuple[int, int]]:
        """Contiguous (start, stop) row ranges of ``shards`` near-equal shards."""
        if shards < 1 or shards > self.rows:
            raise DatabaseError(f"{self.source}: cannot split {self.rows} rows into {shards} shards")
        edges = np.linspace(0, self.rows, shards + 1).round().astype(int)
        return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]

    def shards(self, shards: int) -> list[RetrievalDatabase]:
        """Split into ``shards`` contiguous row ranges; retrieval over them merges exactly."""
        return [self.select(slice(a, b)) for a, b in self.shard_bounds(shards)]

    def fingerprint(self) -> str:
        """SHA-256 of the row content (locations, keys, values), independent of the file format.

        ``str(shape)`` and then the C-order bytes of each of ``locations`` (float64), ``keys`` and
        ``values`` (float32). A database opened from a file had it computed while its rows were read
        (:meth:`open`, beside the reading) and its arrays made read-only: that digest is returned as
        long as these arrays are still the ones read.
        """
        remembered = self.__dict__.get("_fingerprint")
        if remembered is not None and self._rows_as_read():
            return str(remembered[0])
        with BackgroundSha256() as hashing:  # the blocks' copies here, their hashing on the other core
            for arr in (self.locations, self.keys, self.values):
                hashing.update_array(arr)
        return hashing.hexdigest()

    def _rows_as_read(self) -> bool:
        """Whether the rows are still the read-only arrays read from the file (see :meth:`fingerprint`)."""
        remembered = self.__dict__.get("_fingerprint")
        if remembered is None:
            return False
        current = (self.locations, self.keys, self.values_with_ones)
        return all(a is b and not a.flags.writeable for a, b in zip(remembered[1], current))

    def kept(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()``, kept with these rows by ``key`` while they are the read-only rows read from the file.

        What is made from the rows alone (the retrieval engine's device rows, for one) is then made
        once per process, not by each encoder; a database built in memory, whose arrays may change,
        gets ``make()`` every time. Nothing kept is pickled (Ray's object store).
        """
        if not self._rows_as_read():
            self.__dict__.pop("_kept", None)  # made from rows that are no longer these
            return make()
        kept: dict[Hashable, Any] = self.__dict__.setdefault("_kept", {})
        if key not in kept:
            kept[key] = make()
        return kept[key]

    def drop_kept(self) -> None:
        """Free what :meth:`kept` holds (e.g. on a Ray driver, whose tiles are computed in other processes)."""
        self.__dict__.pop("_kept", None)

    def _remember_fingerprint(self, digest: BackgroundSha256, locations: npt.NDArray[Any], keys: npt.NDArray[Any],
                              values: npt.NDArray[Any]) -> None:
        """Keep the :meth:`fingerprint` of rows hashed as they were read (``digest`` was fed ``locations``,
        ``keys`` and ``values`` as :meth:`fingerprint` feeds them) and make the rows read-only, so that it
        stays their digest. Nothing is kept when construction converted or copied any of them."""
        buffer: npt.NDArray[Any] | None = self.__dict__.get("_buffer")
        if buffer is None or self.locations is not locations or self.keys is not keys or values.base is not buffer:
            return
        for arr in (self.locations, self.keys, buffer, self.values):
            arr.flags.writeable = False
        self.__dict__["_fingerprint"] = (digest.hexdigest(), (self.locations, self.keys, buffer))

    # ------------------------------------------------------------------ I/O
    @classmethod
    def open(cls, path: str | Path) -> RetrievalDatabase:
        """Open a database in the published ``.npz`` form or the Zarr form, local or from a URL.

        Args:
            path: a local path; an ``.npz`` URL (``s3://``, ``gs://``, ``az://``, ``https://``; optionally
                ``#sha256=<hex>``), downloaded once into the cache and SHA-256 checked
                (:mod:`range_dist.util.downloads`); or a Zarr store on ``s3://``, ``gs://``, ``az://``, read in
                place (read-only) with the same integrity checks as a local one. The database's ``source``
                is then the URL (without any secret), not the cache path.

        Raises:
            DatabaseError: missing file, unknown format, missing arrays or bad content.
            AssetError: a download failed or its SHA-256 does not match.
        """
        if isinstance(path, str) and is_remote(path):
            return cls._open_url(path)
        path = local_path(path, "database")
        if not path.exists():
            raise DatabaseError(
                f"database {path} does not exist. Import the published one with `range-dist import-db "
                "range_db_med.npz --out db.zarr`, or write a sample with `range-dist sample-assets DIR`."
            )
        if path.is_file() and path.suffix == ".npz":
            return cls._open_npz(path)
        if path.is_dir() and (path / "zarr.json").exists():
            return cls._open_zarr(path)
        raise DatabaseError(
            f"{path}: not a retrieval database: expected a published-layout .npz file or a Zarr v3 "
            "directory written by range-dist (with zarr.json)"
        )

    @classmethod
    def _open_url(cls, url: str) -> RetrievalDatabase:
        """A database from a URL: an ``.npz`` file downloaded into the cache, or a Zarr store read in place."""
        remote = parse_remote(url, "database")
        assert remote is not None  # is_remote(url) was checked by the caller
        if remote.scheme in OBJECT_STORES and not remote.file_name.endswith(".npz") and remote.pin is None:
            location = StoreLocation.parse(remote.url, "database")
            with location.errors("opening the database"):
                if not location.child("zarr.json").is_object():
                    if location.is_object():
                        raise DatabaseError(f"{location.describe()}: not a retrieval database: a URL's file is read "
                                            "as the published-layout .npz only when its name ends in .npz")
                    raise DatabaseError(f"database {location.describe()} does not exist (no zarr.json there)")
                return cls._open_zarr(location)
        if not remote.file_name.endswith(".npz"):
            raise DatabaseError(
                f"database {remote.public}: a database is read from a URL as a .npz file (downloaded) or as a Zarr "
                "store on s3://, gs:// or az:// (read in place, without #sha256=: its integrity record is checked)")
        fetched = fetch_input(url, "database")
        db = cls._open_npz(fetched.path)
        db.source = fetched.source  # the URL, not the cache path: what messages and provenance name
        return db

    @classmethod
    def _open_npz(cls, path: Path) -> RetrievalDatabase:
        _check_npz_head(path)
        try:
            # the rows are hashed for fingerprint() in a thread while they are read (BackgroundSha256)
            with np.load(path, allow_pickle=False) as npz, BackgroundSha256() as digest:
                missing = [k for k in (NPZ_LOCATIONS, NPZ_KEYS, NPZ_VALUES) if k not in npz.files]
                if missing:
                    raise DatabaseError(
                        f"{path}: missing array(s) {missing} (has {npz.files}); the published RANGE "
                        f"layout has {NPZ_LOCATIONS!r} (M, 2), {NPZ_KEYS!r} (M, 256), {NPZ_VALUES!r} (M, 1024)"
                    )
                # the dtypes the database holds (no conversion left for construction), hashed as such
                locs = np.ascontiguousarray(_npz_numeric(path, npz, NPZ_LOCATIONS), dtype=np.float64)
                keys = np.ascontiguousarray(_npz_numeric(path, npz, NPZ_KEYS), dtype=np.float32)
                digest.update_array(locs)
                digest.update_array(keys)
                values, hashed = _npz_values_with_ones(path, npz, NPZ_VALUES, digest)
                sample_note = str(npz[NPZ_SAMPLE_NOTE]) if NPZ_SAMPLE_NOTE in npz.files else None
        except DatabaseError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise DatabaseError(
                f"{path}: damaged or truncated .npz ({type(exc).__name__}: {exc}); re-download or re-export it"
            ) from exc
        attrs = {
            "origin": f"npz:{path.name}",
            "key_model": PUBLISHED_KEY_MODEL,
            "value_model": PUBLISHED_VALUE_MODEL,
            "rows_made_by": "published RANGE database (S2-100K chips); row alignment not guaranteed upstream",
        }
        if sample_note is not None:
            attrs.update(key_model=sample_note, value_model=sample_note, sample=True,  # type: ignore[call-overload]
                         rows_made_by="synthetic rows (range-dist sample-assets)")
        db = cls(locs, keys, values, {"source_row": np.arange(len(locs), dtype=np.int64)}, attrs, source=str(path))
        if hashed:
            db._remember_fingerprint(digest, locs, keys, values)
        return db

    @classmethod
    def _open_zarr(cls, path: Path | StoreLocation) -> RetrievalDatabase:
        import zarr

        group, meta = _open_database_group(path)
        where = _where(path)
        try:
            return cls._read_zarr(path, group, meta)
        except DatabaseError:
            raise
        except (OSError, ValueError, KeyError, TypeError, zarr.errors.BaseZarrError) as exc:
            raise DatabaseError(f"{where}: cannot read the database's arrays ({type(exc).__name__}: {exc}); an "
                                f"array's zarr.json may be damaged. {_fix_hint(where, meta)}") from exc

    @classmethod
    def _read_zarr(cls, store: Path | StoreLocation, group: Any, meta: dict[str, Any]) -> RetrievalDatabase:
        path = _where(store)
        rows = int(meta.get("rows", 0))
        names = ["locations", "keys", "values"]
        columns = [c for c in meta.get("provenance_columns", []) if c in group]
        for name in names:
            if name not in group:
                raise DatabaseError(f"{path}: missing array {name!r}. {_fix_hint(path, meta)}")
        for name in names + columns:
            if group[name].shape[0] < rows:
                raise DatabaseError(
                    f"{path}: array {name!r} has {group[name].shape[0]} rows but {rows} are committed; the store is "
                    f"damaged. {_fix_hint(path, meta)}"
                )
        record = meta.get(INTEGRITY_KEY)
        if record is None:
            _LOG.warning("%s: no integrity record (written by an older range-dist), so missing chunks cannot be "
                         "detected; re-import or rebuild it to add one", path)
        else:
            _check_chunks_present(store, group, meta, record)
        # Arrays longer than ``rows`` hold an interrupted build's uncommitted rows: never read.
        with BackgroundSha256() as digest:  # the rows hashed for fingerprint() while they are read
            locs, keys = (_read_rows(path, group, name, rows, meta) for name in names[:2])
            hashed = locs.dtype.kind in "biuf" and keys.dtype.kind in "biuf"  # else construction names the dtype
            if hashed:  # the dtypes the database holds (no conversion left for construction), hashed as such
                locs = np.ascontiguousarray(locs, dtype=np.float64)
                keys = np.ascontiguousarray(keys, dtype=np.float32)
                digest.update_array(locs)
                digest.update_array(keys)
            values, values_hashed = _read_values_with_ones(path, group, rows, meta, digest if hashed else None)
            provenance = {c: np.asarray(_read_rows(path, group, c, rows, meta)) for c in columns}
        attrs = {k: v for k, v in meta.items() if k not in STORE_META_KEYS}
        db = cls(locs, keys, values, provenance, attrs, source=str(path))
        if values_hashed:
            db._remember_fingerprint(digest, locs, keys, values)
        return db

    def to_zarr(self, path: str | Path | StoreLocation, overwrite: bool = False,
                rows_per_chunk: int = 8192) -> Path | str:
        """Write the Zarr v3 form, locally or to object storage. Refuses to replace an existing store unless
        ``overwrite``.

        A local store is written to a side folder and renamed into place, so a failure never leaves a
        half-written database. Object stores have no rename: the group's ``zarr.json`` is written first
        with 0 committed rows (a reader opens an empty database, and a rerun with ``--overwrite``
        recognises a range-dist database to replace), then the arrays, then the attributes that commit the
        rows and their integrity record, in one write of ``zarr.json``.

        Returns:
            The local path, or the URL.
        """
        import zarr

        loc = StoreLocation.parse(path, "--out")
        if loc.is_local:
            target = loc.local
            if target.exists() and not overwrite:
                raise DatabaseError(f"{target} already exists; pass --overwrite to replace it")
            tmp = target.with_name(target.name + ".partial")
            if tmp.exists():
                shutil.rmtree(tmp)
            self._write_zarr(zarr.open_group(str(tmp), mode="w", zarr_format=3), rows_per_chunk)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
            return target
        with loc.errors("writing the database to", writing=True):
            if loc.exists():
                if not overwrite:
                    raise DatabaseError(f"{loc} already exists; pass --overwrite to replace it")
                loc.remove_tree(last="zarr.json")  # zarr.json last: a removal cut short is still a database
            group = zarr.open_group(loc.zarr_store(), mode="w", zarr_format=3)
            group.attrs[ATTRS_KEY] = to_jsonable({**self.describe(), "rows": 0, INTEGRITY_KEY: integrity_record({})})
            self._write_zarr(group, rows_per_chunk)
        return loc.describe()

    def _write_zarr(self, group: Any, rows_per_chunk: int) -> None:
        """Write every array into ``group``, then the attributes with the integrity record (after the data)."""
        chunk = min(rows_per_chunk, self.rows)
        specs: dict[str, tuple[npt.NDArray[Any], tuple[str, str]]] = {
            "locations": (self.locations, ("row", "lonlat")),
            "keys": (self.keys, ("row", "key_feature")),
            "values": (self.values, ("row", "value_feature")),
        }
        digests: dict[str, dict[str, Any]] = {}
        for name, (arr, dims) in specs.items():
            out = group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=(chunk, arr.shape[1]),
                                     dimension_names=dims, config=WRITE_CONFIG)
            out[...] = arr
            digests[name] = {"chunk_rows": chunk, "digests": block_digests(arr, chunk)}
        for name, col in self.provenance.items():
            col = np.asarray(col)
            dtype: Any = str if col.dtype.kind in "UOST" else col.dtype
            written = col.astype(str) if dtype is str else col
            out = group.create_array(name, shape=col.shape, dtype=dtype, chunks=(chunk,), dimension_names=("row",),
                                     config=WRITE_CONFIG)
            out[...] = written
            digests[name] = {"chunk_rows": chunk, "digests": block_digests(written, chunk)}
        # The record is written after the data, in the attributes write that commits the rows.
        group.attrs[ATTRS_KEY] = to_jsonable({**self.describe(), INTEGRITY_KEY: integrity_record(digests)})

    def to_npz(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the published ``.npz`` layout (provenance and attributes are not part of it)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise DatabaseError(f"{path} already exists; pass --overwrite to replace it")
        tmp = path.with_name(path.name + ".partial.npz")
        arrays: dict[str, Any] = {NPZ_LOCATIONS: self.locations, NPZ_KEYS: self.keys, NPZ_VALUES: self.values}
        if self.attrs.get("sample"):
            arrays[NPZ_SAMPLE_NOTE] = np.array(str(self.attrs.get("key_model", "sample")))
        np.savez(tmp, **arrays)
        tmp.replace(path)
        return path


# ---------------------------------------------------------------------- reading helpers
def _with_ones_column(values: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """(M, D + 1) float32 buffer of (M, D) values and a ones column: the buffer itself when ``values``
    already is the left part of one (no copy), else a new one (one copy, converted to float32)."""
    v = np.asarray(values)
    base = v.base
    if (isinstance(base, np.ndarray) and base.dtype == np.float32 and base.ndim == 2 and v.dtype == np.float32
            and base.shape == (v.shape[0], v.shape[1] + 1) and v.strides == base.strides
            and v.__array_interface__["data"][0] == base.__array_interface__["data"][0]
            and bool((base[:, -1] == 1.0).all())):
        return base
    aug = _ones_column_buffer(v.shape[0], v.shape[1])
    aug[:, :-1] = v
    return aug


def _ones_column_buffer(rows: int, width: int) -> npt.NDArray[np.float32]:
    """A new (rows, width + 1) float32 buffer whose last column is ones (the values go in the rest)."""
    aug = np.empty((rows, width + 1), dtype=np.float32)
    aug[:, -1] = 1.0
    return aug


#: Value rows read per block when an .npz's values go straight into the ones-column buffer (~4 MiB at
#: D = 1024: a block is still in cache when it is copied and hashed).
_NPZ_READ_ROWS = 1024


def _non_finite_rows(arr: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """(M,) whether each row of a 2-D array holds a NaN or an infinity.

    A row's sum is finite unless the row holds a NaN or an infinity, or its finite values overflow
    the sum; only rows whose sum is not finite are checked element by element. Same answer as
    ``~np.isfinite(arr).all(axis=1)`` without its (M, D) boolean temporary (0.4 s on 100k x 1024).
    """
    if arr.dtype.kind not in "fc":
        return np.zeros(arr.shape[0], dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        suspect = np.flatnonzero(~np.isfinite(arr.sum(axis=1)))
    bad = np.zeros(arr.shape[0], dtype=bool)
    if len(suspect):
        bad[suspect] = ~np.isfinite(arr[suspect]).all(axis=1)
    return bad


def _zero_rows(keys: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """(M,) whether each row's Euclidean norm is below 1e-12 (a zero key).

    A float32 sum of squares screens the rows (a row of norm < 1e-12 sums to < 1e-20 whatever the
    underflow; one of norm ≥ 1e-10 holds an element whose square float32 still represents), and
    only the rows below 1e-20 get the float64 norm: the answer of ``np.linalg.norm`` in float64 on
    every row, without a float64 copy of the keys (0.7 s on 100k x 256).
    """
    if keys.dtype != np.float32:
        return np.linalg.norm(np.asarray(keys, dtype=np.float64), axis=1) < 1e-12
    squares = np.einsum("ij,ij->i", keys, keys, dtype=np.float32)
    bad = np.zeros(keys.shape[0], dtype=bool)
    suspect = np.flatnonzero(~(squares >= 1e-20))  # NaN rows too (refused as non-finite before this)
    if len(suspect):
        bad[suspect] = np.linalg.norm(keys[suspect].astype(np.float64), axis=1) < 1e-12
    return bad


def _npz_values_with_ones(path: Path, npz: Any, key: str, digest: BackgroundSha256) -> tuple[npt.NDArray[Any], bool]:
    """(M, D) values of an open .npz, read block by block into the left part of a ones-column buffer,
    and whether ``digest`` was fed them (as :meth:`RetrievalDatabase.fingerprint` hashes them: float32).

    ``np.load`` has no destination argument: reading the array and then copying it into the
    (M, D + 1) buffer the engine uses (:func:`_with_ones_column`) touched two fresh copies of the
    values (3 s of a 100k-row database's 4.5 s open on the grid benchmark). The member's bytes are
    read once here, through :mod:`zipfile` (which checks the member's CRC at its end). Anything but a
    plain 2-D numeric C-order array takes numpy's own path (and its messages).
    """
    try:
        with npz.zip.open(f"{key}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            if version not in ((1, 0), (2, 0)):  # 3.0 (UTF-8 header) and later: numpy's own reader
                return _npz_numeric(path, npz, key), False
            fmt = np.lib.format
            shape, fortran_order, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else
                                           fmt.read_array_header_2_0)(fh)
            if len(shape) != 2 or fortran_order or dtype.kind not in "biuf" or dtype.hasobject:
                return _npz_numeric(path, npz, key), False
            rows, width = shape
            aug = _ones_column_buffer(rows, width)
            digest.update(str((rows, width)).encode())
            as_read = dtype == np.dtype(np.float32)  # the file's bytes are the buffer's: hashed as read
            for start in range(0, rows, _NPZ_READ_ROWS):
                count = min(_NPZ_READ_ROWS, rows - start)
                data = fh.read(count * width * dtype.itemsize)
                if len(data) != count * width * dtype.itemsize:
                    raise EOFError(f"array {key!r} ends after {start + len(data) // max(1, width * dtype.itemsize)} "
                                   f"of {rows} rows")
                block = aug[start : start + count, :-1]
                block[...] = np.frombuffer(data, dtype=dtype).reshape(count, width)
                digest.update(data if as_read else np.ascontiguousarray(block).view(np.uint8).data)
            if fh.read(1):
                raise ValueError(f"array {key!r} holds more bytes than its header's shape {shape}")
    except KeyError:  # not stored as <key>.npy (checked present by name above): numpy's path
        return _npz_numeric(path, npz, key), False
    return aug[:, :-1], True


def _dtype_words(dtype: np.dtype[Any]) -> str:
    kind = {"U": "strings", "S": "byte strings", "T": "strings", "O": "Python objects", "c": "complex numbers",
            "M": "datetimes", "m": "time deltas", "V": "raw records"}.get(dtype.kind, "non-numeric data")
    return f"{kind} (dtype {dtype})"


def _check_npz_head(path: Path) -> None:
    """Refuse a file that is not a zip archive before numpy guesses (it reports text as pickled data)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot read ({exc.strerror or exc}); check the path and its permissions") from exc
    if not head:
        raise DatabaseError(f"{path}: the file is empty; re-download or re-export the database")
    if head.startswith(b"\x93NUMPY"):
        raise DatabaseError(f"{path}: this is a single-array .npy file renamed .npz; a database .npz holds "
                            f"{NPZ_LOCATIONS!r}, {NPZ_KEYS!r} and {NPZ_VALUES!r} (np.savez)")
    if not head.startswith(b"PK"):
        text = head.split(b"\n")[0][:40].decode("utf-8", errors="ignore").rstrip("\r")
        what = f"it starts with {text!r}, a text file?" if text and text.isprintable() else "it is not a zip archive"
        raise DatabaseError(f"{path}: not an .npz database ({what}); a database .npz is a zip archive of "
                            f"{NPZ_LOCATIONS!r}, {NPZ_KEYS!r} and {NPZ_VALUES!r} arrays (the published RANGE layout)")


def _npz_numeric(path: Path, npz: Any, key: str) -> npt.NDArray[Any]:
    """One array of an open .npz, refused with the key named when it is not numeric."""
    try:
        arr = np.asarray(npz[key])
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        raise DatabaseError(f"{path}: array {key!r} holds Python objects (pickled data), which range-dist never "
                            "loads; save it as a numeric array (np.savez with float arrays)") from exc
    if arr.dtype.kind not in "biuf":
        raise DatabaseError(f"{path}: array {key!r} holds {_dtype_words(arr.dtype)}, not numbers; save it as a "
                            "float array (e.g. arr.astype(np.float32)) and retry")
    return arr


def _open_database_group(store: Path | StoreLocation) -> tuple[Any, dict[str, Any]]:
    """The Zarr group and meta of a range-dist database, or a DatabaseError saying what the path is.

    ``store`` is a local path, or an object-store location opened read-only through its Zarr store.
    """
    import zarr

    path = _where(store)
    try:
        target: Any = str(store) if isinstance(store, Path) else store.zarr_store(read_only=True)
        group: Any = zarr.open_group(target, mode="r")  # zarr's typing of Group indexing is too narrow
        meta: dict[str, Any] = dict(group.attrs.get(ATTRS_KEY, {}))
    except RangeDistError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zarr.errors.BaseZarrError) as exc:
        raise DatabaseError(f"{path}: cannot open as a Zarr group ({type(exc).__name__}: {exc}); its zarr.json "
                            "is damaged or it is not a Zarr store") from exc
    if meta.get("format") != FORMAT_NAME:
        raise DatabaseError(f"{path}: Zarr group without {ATTRS_KEY!r} attributes; not a range-dist database")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise DatabaseError(f"{path}: database format {meta['format_version']} is newer; upgrade range-dist")
    return group, meta


def _where(store: Path | StoreLocation) -> Path | str:
    """How messages name a database store: the local path, or the URL (never an option or a secret)."""
    return store if isinstance(store, Path) else store.describe()


def _fix_hint(path: Path | str, meta: Mapping[str, Any], verify: bool = True) -> str:
    """How to get an intact database back, from what the attributes say made it (and ``verify`` named)."""
    origin = str(meta.get("origin", ""))
    if origin.startswith("npz:"):
        fix = f"Re-import it: `range-dist import-db {origin[4:]} --out {path} --overwrite`"
    elif "key_encoder" in meta or "build_report" in meta:
        fix = f"Rebuild it: `range-dist build-db ... --out {path} --overwrite` (a resume keeps the damaged rows)"
    else:
        fix = "Rebuild or re-import it (`range-dist build-db` / `range-dist import-db ... --overwrite`)"
    return f"{fix}; `range-dist verify {path}` lists every missing or damaged chunk." if verify else f"{fix}."


def _row_ranges(ranges: Sequence[tuple[int, int]], limit: int = 4) -> str:
    """'rows 0-1023, 2048-2999' (inclusive), merged and cut after ``limit`` ranges."""
    merged: list[list[int]] = []
    for a, b in ranges:
        if merged and merged[-1][1] == a:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    text = ", ".join(f"{a}-{b - 1}" for a, b in merged[:limit])
    more = f" and {len(merged) - limit} more range(s)" if len(merged) > limit else ""
    return f"row{'s' if len(merged) > 1 or merged[0][1] - merged[0][0] > 1 else ''} {text}{more}"


def _block_rows(block: int, chunk_rows: int, rows: int) -> tuple[int, int]:
    return block * chunk_rows, min((block + 1) * chunk_rows, rows)


def _chunk_keys(name: str, arr: Any, block: int) -> list[str]:
    """The keys (``name/c/0/1``) of the chunks holding one row block of an array (every chunk along the other axes)."""
    others = [range(math.ceil(s / c)) for s, c in zip(arr.shape[1:], arr.chunks[1:], strict=True)]
    return [f"{name}/{arr.metadata.encode_chunk_key((block, *rest))}" for rest in itertools.product(*others)]


def _expected_blocks(entry: Mapping[str, Any]) -> list[int]:
    unstored = set(entry.get("unstored", []))
    return [i for i in range(len(entry["digests"])) if i not in unstored]


def _check_record_shape(path: Path | str, name: str, entry: Mapping[str, Any], rows: int) -> None:
    chunk_rows = int(entry["chunk_rows"])
    if chunk_rows < 1 or len(entry["digests"]) != math.ceil(rows / chunk_rows):
        raise DatabaseError(f"{path}: the integrity record of {name!r} lists {len(entry['digests'])} blocks of "
                            f"{chunk_rows} rows for {rows} committed rows; the attributes (zarr.json) are damaged")


def _check_chunks_present(store: Path | StoreLocation, group: Any, meta: Mapping[str, Any],
                          record: Mapping[str, Any]) -> None:
    """The cheap check of ``open``: every chunk the record expects is stored (a ``stat`` per chunk locally;
    one listing of the store on object storage, where a request per chunk would be slow).

    Raises:
        DatabaseError: naming the array, the rows the missing chunks held, a file and the fix.
    """
    path = _where(store)
    present = _chunk_presence(store)
    rows = int(meta.get("rows", 0))
    for name, entry in record.get("arrays", {}).items():
        _check_record_shape(path, name, entry, rows)
        if name not in group:
            raise DatabaseError(f"{path}: array {name!r} is missing ({rows} rows recorded). {_fix_hint(path, meta)}")
        arr = group[name]
        chunk_rows = int(entry["chunk_rows"])
        missing = [(b, k) for b in _expected_blocks(entry) for k in _chunk_keys(name, arr, b) if not present(k)]
        if missing:
            ranges = [_block_rows(b, chunk_rows, rows) for b in dict.fromkeys(b for b, _ in missing)]
            example = f"{path}/{missing[0][1]}" if isinstance(path, str) else path.joinpath(*missing[0][1].split("/"))
            raise DatabaseError(
                f"{path}: array {name!r} is missing the chunk(s) that held {_row_ranges(ranges)} "
                f"(e.g. {example}); Zarr would read them as zeros, so these rows would be silently wrong. "
                f"{_fix_hint(path, meta)}"
            )


def _read_rows(path: Path | str, group: Any, name: str, rows: int, meta: Mapping[str, Any]) -> npt.NDArray[Any]:
    try:
        return np.asarray(group[name][:rows])
    except READ_ERRORS as exc:
        raise _undecodable(path, name, exc, meta) from exc


def _undecodable(path: Path | str, name: str, exc: BaseException, meta: Mapping[str, Any]) -> DatabaseError:
    """The message of an array whose chunk zarr cannot decode."""
    return DatabaseError(f"{path}: cannot decode array {name!r} ({type(exc).__name__}: {exc}); a chunk is "
                         f"damaged. {_fix_hint(path, meta)}")


def _read_values_with_ones(path: Path | str, group: Any, rows: int, meta: Mapping[str, Any],
                           digest: BackgroundSha256 | None) -> tuple[npt.NDArray[Any], bool]:
    """(rows, D) values read chunk by chunk into the left part of a ones-column buffer (as
    :func:`_npz_values_with_ones`: one copy of the values in memory, not a read and then a copy),
    and whether ``digest`` (when given) was fed them as :meth:`RetrievalDatabase.fingerprint` hashes them."""
    array = group["values"]
    if len(array.shape) != 2 or array.dtype.kind not in "biuf":
        return _read_rows(path, group, "values", rows, meta), False  # validation names what is wrong
    step = max(1, int(array.chunks[0]))
    aug = _ones_column_buffer(rows, int(array.shape[1]))
    if digest is not None:
        digest.update(str((rows, int(array.shape[1]))).encode())
    try:
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            chunk = np.ascontiguousarray(array[start:stop], dtype=np.float32)  # the decoded rows, as the buffer's
            aug[start:stop, :-1] = chunk
            if digest is not None:
                digest.update(chunk.view(np.uint8).data)
    except READ_ERRORS as exc:
        raise _undecodable(path, "values", exc, meta) from exc
    return aug[:, :-1], digest is not None


# ---------------------------------------------------------------------- the integrity record
def block_digest(pieces: Iterable[npt.NDArray[Any]]) -> str:
    """Digest of one row block given as consecutive pieces (SHA-256, first 128 bits, hex).

    Numbers hash as their little-endian bytes; strings as their UTF-8 lengths then bytes, so the
    ``<U`` array written and the ``StringDType`` array read back hash alike.
    """
    pieces = list(pieces)
    digest = hashlib.sha256()
    if any(p.dtype.kind in "OUST" for p in pieces):
        encoded = [str(v).encode() for p in pieces for v in p.tolist()]
        digest.update(np.fromiter(map(len, encoded), dtype="<i8", count=len(encoded)).tobytes())
        digest.update(b"".join(encoded))
    else:
        for p in pieces:
            digest.update(np.ascontiguousarray(p, dtype=p.dtype.newbyteorder("<")).view(np.uint8).data)
    return digest.hexdigest()[:DIGEST_HEX]


def block_digests(data: npt.NDArray[Any], chunk_rows: int) -> list[str]:
    """Digests of ``data``'s row blocks of ``chunk_rows`` rows (the last one may be partial)."""
    return [block_digest([data[a:a + chunk_rows]]) for a in range(0, len(data), chunk_rows)]


def integrity_record(arrays: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The record stored under ``integrity``: array -> {chunk_rows, digests[, unstored]}."""
    return {"version": INTEGRITY_VERSION, "digest": DIGEST_NAME, "arrays": {k: dict(v) for k, v in arrays.items()}}


def _chunk_presence(store: Path | StoreLocation) -> Callable[[str], bool]:
    """Whether a chunk key (``keys/c/3/0``) is stored: a ``stat`` per chunk locally; on object storage one
    listing of the store up front, where a request per chunk would be slow."""
    if isinstance(store, Path):
        def present(key: str) -> bool:
            return store.joinpath(*key.split("/")).is_file()
        return present
    with store.errors("listing the database"):
        stored = set(store.object_sizes())
    return stored.__contains__


def record_from_store(path: str | Path | StoreLocation, group: Any, names: Sequence[str], rows: int
                      ) -> dict[str, Any]:
    """A record of what a store holds now (reads every committed row): adopts a database written before records.

    Blocks without a chunk file (zarr skipped chunks equal to the fill value) are listed as ``unstored``.
    """
    loc = StoreLocation.parse(path)
    present = _chunk_presence(loc.local if loc.is_local else loc)
    arrays: dict[str, dict[str, Any]] = {}
    for name in names:
        arr = group[name]
        chunk_rows = int(arr.chunks[0])
        digests, unstored = [], []
        for block, (a, b) in enumerate(_block_rows(i, chunk_rows, rows) for i in range(math.ceil(rows / chunk_rows))):
            digests.append(block_digest([np.asarray(arr[a:b])]))
            if not all(present(key) for key in _chunk_keys(name, arr, block)):
                unstored.append(block)
        arrays[name] = {"chunk_rows": chunk_rows, "digests": digests, **({"unstored": unstored} if unstored else {})}
    return integrity_record(arrays)


# ---------------------------------------------------------------------- full verification
@dataclass(frozen=True)
class BlockCheck:
    """The state of one row block of one array (``start``/``stop`` None: the whole array).

    ``status`` is ``ok``, ``missing`` (no chunk file: Zarr would read zeros), ``damaged`` (the rows
    differ from the recorded digest, or cannot be decoded) or ``unrecorded`` (no record to check).
    """

    array: str
    start: int | None
    stop: int | None
    status: str
    detail: str = ""

    @property
    def rows_text(self) -> str:
        if self.start is None or self.stop is None:
            return "all"
        return f"{self.start}-{self.stop - 1}" if self.stop > self.start else "-"


@dataclass
class VerifyReport:
    """What :func:`verify_database` found: one check per row block, plus whole-database problems."""

    path: Path | str
    rows: int | None
    checks: list[BlockCheck]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fix: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.status == "ok" for c in self.checks)

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.checks)

    def table(self) -> str:
        """array / rows / status / detail, consecutive ok blocks of an array merged into one line."""
        lines: list[tuple[str, str, str, str]] = [("array", "rows", "status", "detail")]
        run: list[BlockCheck] = []

        def flush() -> None:
            if run:
                first, last = run[0], run[-1]
                merged = BlockCheck(first.array, first.start, last.stop, "ok")
                lines.append((first.array, merged.rows_text, "ok",
                              f"{len(run)} chunks" if len(run) > 1 else first.detail))
                run.clear()

        for check in self.checks:
            if check.status == "ok" and (not run or run[-1].array == check.array) and check.start is not None:
                run.append(check)
                continue
            flush()
            if check.status == "ok" and check.start is not None:
                run.append(check)
            else:
                lines.append((check.array, check.rows_text, check.status, check.detail))
        flush()
        widths = [max(len(line[i]) for line in lines) for i in range(3)]
        return "\n".join(f"{a:<{widths[0]}}  {r:<{widths[1]}}  {s:<{widths[2]}}  {d}".rstrip() for a, r, s, d in lines)

    def summary(self) -> str:
        if self.ok:
            return (f"{self.path}: OK, {len(self.checks)} chunks of {len({c.array for c in self.checks})} arrays "
                    f"match the integrity record ({self.rows} rows, {self.seconds:.1f} s)")
        counts = ", ".join(f"{n} {s}" for s in ("missing", "damaged", "unrecorded") if (n := self.count(s)))
        parts = [p for p in (counts and f"{counts} chunk(s)", *self.problems) if p]
        return f"{self.path}: NOT OK: {'; '.join(parts)}. {self.fix}".rstrip()


def verify_database(path: str | Path) -> VerifyReport:
    """Check a database completely: every recorded chunk present, every row block's digest recomputed.

    A Zarr database is checked against its integrity record; an ``.npz`` against the zip archive's
    CRC-32 of each member, then opened (shapes, finite rows, key norms).

    Args:
        path: a local ``.npz`` or Zarr database, or a Zarr database on object storage (``s3://``, ``gs://``,
            ``az://``), read in place.

    Raises:
        DatabaseError: the path does not exist or is not a range-dist database.
        ObjectStoreError: the object store refused or could not serve the reads.
    """
    start = time.perf_counter()
    loc = StoreLocation.parse(path, "database")
    if not loc.is_local:
        with loc.errors("verifying"):
            if not loc.child("zarr.json").is_object():
                raise DatabaseError(f"{loc} is not a Zarr database on object storage (no zarr.json there); a "
                                    "published-layout .npz is verified on local disk")
            report = _verify_zarr(loc)
        report.seconds = time.perf_counter() - start
        return report
    path = loc.local
    if not path.exists():
        raise DatabaseError(f"{path} does not exist")
    if path.is_file() and path.suffix == ".npz":
        report = _verify_npz(path)
    elif path.is_dir() and (path / "zarr.json").exists():
        report = _verify_zarr(path)
    else:
        raise DatabaseError(f"{path}: not a range-dist database (a published-layout .npz or a Zarr database "
                            "directory written by range-dist)")
    report.seconds = time.perf_counter() - start
    return report


def _verify_npz(path: Path) -> VerifyReport:
    _check_npz_head(path)
    fix = "Re-download or re-export it."
    checks: list[BlockCheck] = []
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                try:
                    with archive.open(info) as member:
                        while member.read(1 << 24):
                            pass
                    checks.append(BlockCheck(name, None, None, "ok", "zip CRC-32 matches"))
                except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                    checks.append(BlockCheck(name, None, None, "damaged", f"{type(exc).__name__}: {exc}"))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return VerifyReport(path, None, checks, [f"not a complete zip archive, truncated? ({exc})"], fix=fix)
    report = VerifyReport(path, None, checks, fix=fix)
    if report.ok:
        try:
            report.rows = RetrievalDatabase.open(path).rows
        except DatabaseError as exc:
            report.problems.append(str(exc))
    return report


def _verify_zarr(store: Path | StoreLocation) -> VerifyReport:
    group, meta = _open_database_group(store)
    path = _where(store)
    rows = int(meta.get("rows", 0))
    report = VerifyReport(path, rows, [], fix=_fix_hint(path, meta, verify=False))
    holder = read_holder(store)
    if holder is not None and not holder_is_gone(holder):
        report.notes.append(f"a run holds the store's lease ({holder.describe(time.time())}); rows it is writing "
                            "now may show as damaged until it commits")
    record = meta.get(INTEGRITY_KEY)
    if record is None:
        report.problems.append("no integrity record (written by an older range-dist), so chunks cannot be checked; "
                               "re-import it, or resume build-db, to add one")
        report.fix = ""
        names = ["locations", "keys", "values", *meta.get("provenance_columns", [])]
        report.checks = [BlockCheck(n, 0, rows, "unrecorded") for n in names]
        return report
    present = _chunk_presence(store)
    for name, entry in record.get("arrays", {}).items():
        try:
            _check_record_shape(path, name, entry, rows)
        except DatabaseError as exc:
            report.problems.append(str(exc).removeprefix(f"{path}: "))
            continue
        report.checks += _verify_array(group, name, entry, rows, present)
    return report


def _verify_array(group: Any, name: str, entry: Mapping[str, Any], rows: int,
                  present: Callable[[str], bool]) -> list[BlockCheck]:
    chunk_rows = int(entry["chunk_rows"])
    digests: list[str] = list(entry["digests"])
    bounds = [_block_rows(i, chunk_rows, rows) for i in range(len(digests))]
    import zarr

    try:
        arr = group.get(name)
    except (OSError, ValueError, KeyError, TypeError, zarr.errors.BaseZarrError) as exc:
        unreadable = f"array metadata unreadable ({type(exc).__name__})"
        return [BlockCheck(name, a, b, "damaged", unreadable) for a, b in bounds]
    if arr is None:
        return [BlockCheck(name, a, b, "missing", "array not in the store") for a, b in bounds]
    expected = set(_expected_blocks(entry))
    status: dict[int, tuple[str, str]] = {}
    for i, (_, b) in enumerate(bounds):
        if b > arr.shape[0]:
            status[i] = ("missing", f"the array has only {arr.shape[0]} rows")
        elif i in expected:
            absent = [key for key in _chunk_keys(name, arr, i) if not present(key)]
            if absent:
                status[i] = ("missing", f"no chunk file {absent[0]}")
    row_bytes = max(1, arr.dtype.itemsize * math.prod(arr.shape[1:]))
    per_window = max(1, VERIFY_WINDOW_BYTES // (row_bytes * chunk_rows))
    todo = [i for i in range(len(digests)) if i not in status]
    for w in range(0, len(todo), per_window):
        window = todo[w:w + per_window]
        lo, hi = bounds[window[0]][0], bounds[window[-1]][1]
        try:
            data: npt.NDArray[Any] | None = np.asarray(arr[lo:hi])
        except READ_ERRORS:
            data = None  # one chunk cannot be decoded: find it block by block
        for i in window:
            a, b = bounds[i]
            try:
                rows_i = data[a - lo:b - lo] if data is not None else np.asarray(arr[a:b])
            except READ_ERRORS as exc:
                status[i] = ("damaged", f"cannot decode ({type(exc).__name__}: {exc})"[:120])
                continue
            if block_digest([rows_i]) != digests[i]:
                status[i] = ("damaged", "rows differ from the recorded checksum")
    return [BlockCheck(name, a, b, *status.get(i, ("ok", ""))) for i, (a, b) in enumerate(bounds)]
