"""Append rows to a Zarr v3 retrieval database in batches, crash-safely (I/O edge for ``build-db``).

The layout is :class:`~range_dist.database.store.RetrievalDatabase`'s (``locations``, ``keys``,
``values`` and one (row,) array per provenance column), so a built database opens with
``RetrievalDatabase.open`` and works with ``embed-points`` / ``embed-grid`` / ``export-db``.

Commit protocol: a batch grows every array, writes its rows, and only then raises ``rows`` in
the group attributes. ``rows`` is the truth: on reopen, arrays longer than ``rows`` (a run killed
mid-batch) are cut back, so a rerun never sees half a batch. A ``failures`` subgroup holds the
failure table (location id, reason, detail), rewritten at every batch.

Integrity record (see :mod:`range_dist.database.store`): the digests of the row blocks a batch
touched are recomputed from the rows in memory (the committed head of the last partial block comes
from the previous batch, or is read back once after a resume) and written in the same attributes
update that raises ``rows``. A database begun before records existed gets one on resume, from
what it holds then.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from range_dist.database.store import (
    ATTRS_KEY,
    FORMAT_NAME,
    FORMAT_VERSION,
    INTEGRITY_KEY,
    WRITE_CONFIG,
    block_digest,
    integrity_record,
    record_from_store,
)
from range_dist.errors import DatabaseError, StoreMismatchError
from range_dist.util.jsonable import to_jsonable
from range_dist.util.stores import StoreLocation

_LOG = logging.getLogger(__name__)

#: Provenance columns of a built database and their numpy dtypes ("str" = variable-length string).
PROVENANCE_COLUMNS: dict[str, str] = {
    "location_id": "str",
    "query_lon": "float64",
    "query_lat": "float64",
    "item_id": "str",
    "datetime": "str",
    "processing_baseline": "str",
    "offset_applied": "int32",
    "provider_offset_applied": "bool",
    "scene_cloud_cover": "float32",
    "cloud_fraction": "float32",
    "nodata_fraction": "float32",
    "chip_crs": "str",
}
#: The arrays of a built database that hold rows (and are covered by the integrity record).
DATA_ARRAYS: tuple[str, ...] = ("locations", "keys", "values", *PROVENANCE_COLUMNS)
FAILURE_COLUMNS: tuple[str, ...] = ("location_id", "reason", "detail")
#: Settings that must match between the store and a resumed run.
IDENTITY_KEYS: tuple[str, ...] = ("key_encoder", "value_encoder", "radiometry", "chip_size", "rgb_rendering",
                                  "key_checkpoint_sha256", "value_checkpoint_sha256")


@dataclass(frozen=True)
class RowBatch:
    """Rows to append.

    Attributes:
        locations: (n, 2) float64 chip-centre (lon, lat).
        keys: (n, K) float32. values: (n, D) float32.
        provenance: column -> (n,) array for every :data:`PROVENANCE_COLUMNS` entry.
    """

    locations: npt.NDArray[np.float64]
    keys: npt.NDArray[np.float32]
    values: npt.NDArray[np.float32]
    provenance: Mapping[str, npt.NDArray[Any]]

    def __len__(self) -> int:
        return len(self.locations)


def _joined(pieces: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """Consecutive row pieces as one array (a copy; strings as plain ``str`` values, never cut short)."""
    if any(p.dtype.kind in "OUST" for p in pieces):
        return np.array([v for p in pieces for v in p.tolist()], dtype=str)
    return np.concatenate(pieces)


def _create(group: Any, name: str, shape: tuple[int, ...], dtype: Any, chunk_rows: int, dims: tuple[str, ...]) -> None:
    chunks = (chunk_rows, *shape[1:])
    group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, dimension_names=dims, config=WRITE_CONFIG)


@dataclass(frozen=True)
class ExistingDatabase:
    """What is at a database build's ``--out`` before the run (read-only; see :func:`inspect_database`).

    Attributes:
        action: ``create`` (nothing there), ``resume`` (same identity settings) or ``replace``
            (a range-dist database, and the run was given ``overwrite``).
        rows: committed rows (resume only).
        done_ids: location ids with a committed row (resume only).
    """

    action: str
    rows: int = 0
    done_ids: frozenset[str] = frozenset()


def inspect_database(path: str | Path | StoreLocation, attrs: Mapping[str, Any],
                     overwrite: bool = False) -> ExistingDatabase:
    """Decide what a build will do with ``path`` (local or object storage), reading only: create, resume or replace.

    Raises:
        DatabaseError: the path is a file / object, or a store that is not a range-dist database (never
            deleted, even with ``overwrite``).
        StoreMismatchError: a database built with other identity settings, without ``overwrite``.
        ObjectStoreError: the object store refused or could not serve the reads.
    """
    import zarr

    loc = StoreLocation.parse(path)
    with loc.errors("reading"):
        if not loc.exists():
            return ExistingDatabase("create")
        if loc.is_object():
            raise DatabaseError(f"{loc} exists and is a file, not a Zarr database; choose another --out")
        try:
            group: Any = zarr.open_group(loc.zarr_store(read_only=True), mode="r")
            meta = dict(group.attrs.get(ATTRS_KEY, {}))
        except (FileNotFoundError, ValueError, zarr.errors.BaseZarrError) as exc:
            raise DatabaseError(f"{loc} exists and is not a Zarr database ({type(exc).__name__}); it is never "
                                "deleted for you: choose another --out, or remove it yourself") from exc
        if meta.get("format") != FORMAT_NAME:
            raise DatabaseError(f"{loc} exists and is not a range-dist database; it is never deleted for you: "
                                "choose another --out, or remove it yourself")
        if overwrite:
            return ExistingDatabase("replace")
        diffs = [f"{k}: store {meta.get(k)!r} vs run {attrs.get(k)!r}" for k in IDENTITY_KEYS
                 if k in attrs and meta.get(k) != to_jsonable(attrs.get(k))]
        if diffs:
            raise StoreMismatchError(f"{loc} was built with other settings ({'; '.join(diffs)}); use the same "
                                     "settings to resume, another --out, or --overwrite")
        rows = int(meta.get("rows", 0))
        done = frozenset(str(v) for v in group["location_id"][:rows]) if rows else frozenset()
    return ExistingDatabase("resume", rows, done)


class DatabaseAppender:
    """A Zarr retrieval database being built: open/create, append batches, record failures.

    On object storage (``s3://``, ``gs://``, ``az://``) the commit protocol of the module notes holds as it
    is: every object is written whole (a reader sees its old or its new content), the data chunks and
    the arrays' grown ``zarr.json`` are written before the group's ``zarr.json`` raises ``rows``, and a
    batch rewritten after a kill writes the same keys again (idempotent: no rename is needed). A reader
    mid-run sees the rows committed so far; arrays longer than ``rows`` are never read.
    """

    def __init__(self, path: StoreLocation, group: Any) -> None:
        self.path = path
        self.group = group
        # array -> (first row, pieces) of the last partial row block as committed: the next batch
        # completes that block's digest without reading it back
        self._tails: dict[str, tuple[int, list[npt.NDArray[Any]]]] = {}

    # ------------------------------------------------------------------ open / create
    @classmethod
    def open_or_create(cls, path: str | Path | StoreLocation, key_dim: int, value_dim: int, attrs: Mapping[str, Any],
                       overwrite: bool = False, chunk_rows: int = 1024) -> DatabaseAppender:
        """Open ``path`` (local or object storage) to resume (checking identity settings) or create an empty database.

        Raises:
            StoreMismatchError: the store was built with other encoders / radiometry / chip size.
            DatabaseError: the path exists and is not a range-dist database.
            ObjectStoreError: the object store refused or could not serve a request.
        """
        import zarr

        loc = StoreLocation.parse(path)
        state = inspect_database(loc, attrs, overwrite)
        with loc.errors("writing", writing=True):
            if state.action == "resume":
                appender = cls(loc, zarr.open_group(loc.zarr_store(), mode="r+", zarr_format=3))
                appender._truncate(state.rows)
                if INTEGRITY_KEY not in appender.meta:
                    appender._adopt_record(state.rows)
                return appender
            if state.action == "replace":
                # zarr.json last: a removal cut short is still recognised as a database by a rerun
                loc.remove_tree(last="zarr.json")
            return cls._create(loc, key_dim, value_dim, attrs, chunk_rows)

    @classmethod
    def _create(cls, loc: StoreLocation, key_dim: int, value_dim: int, attrs: Mapping[str, Any],
                chunk_rows: int) -> DatabaseAppender:
        import zarr

        group = zarr.open_group(loc.zarr_store(), mode="w", zarr_format=3)
        _create(group, "locations", (0, 2), "float64", chunk_rows, ("row", "lonlat"))
        _create(group, "keys", (0, key_dim), "float32", chunk_rows, ("row", "key_feature"))
        _create(group, "values", (0, value_dim), "float32", chunk_rows, ("row", "value_feature"))
        for name, dtype in PROVENANCE_COLUMNS.items():
            _create(group, name, (0,), str if dtype == "str" else dtype, chunk_rows, ("row",))
        failures = group.create_group("failures")
        for name in FAILURE_COLUMNS:
            _create(failures, name, (0,), str, chunk_rows, ("failure",))
        record = integrity_record({name: {"chunk_rows": chunk_rows, "digests": []} for name in DATA_ARRAYS})
        meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **to_jsonable(dict(attrs)), "rows": 0,
                "key_dim": key_dim, "value_dim": value_dim, "provenance_columns": sorted(PROVENANCE_COLUMNS),
                "failures": 0, INTEGRITY_KEY: record}
        group.attrs[ATTRS_KEY] = meta
        return cls(loc, group)

    def _truncate(self, rows: int) -> None:
        for name in DATA_ARRAYS:
            arr = self.group[name]
            if arr.shape[0] != rows:
                arr.resize((rows, *arr.shape[1:]))
        self._tails.clear()

    def _adopt_record(self, rows: int) -> None:
        """Give a database begun before integrity records one, from what it holds now (reads every row)."""
        _LOG.warning("%s: no integrity record (begun by an older range-dist); recording the %d committed rows as "
                     "they are now", self.path, rows)
        self._update_meta(**{INTEGRITY_KEY: record_from_store(self.path, self.group, DATA_ARRAYS, rows)})

    # ------------------------------------------------------------------ state
    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.group.attrs[ATTRS_KEY])

    @property
    def rows(self) -> int:
        return int(self.meta["rows"])

    def done_ids(self) -> set[str]:
        """Location ids that already have a committed row."""
        rows = self.rows
        return {str(v) for v in self.group["location_id"][:rows]} if rows else set()

    def failures(self) -> dict[str, tuple[str, str]]:
        """location id -> (reason, detail) of the recorded failures."""
        f = self.group["failures"]
        n = f["location_id"].shape[0]
        if not n:
            return {}
        ids, reasons, details = (f[c][:n] for c in FAILURE_COLUMNS)
        return {str(i): (str(r), str(d)) for i, r, d in zip(ids, reasons, details)}

    # ------------------------------------------------------------------ writes
    def append(self, batch: RowBatch) -> int:
        """Append a batch (all arrays grown, written, then ``rows`` committed). Returns the new row count.

        Raises:
            DatabaseError: a batch with mis-shaped arrays or a missing provenance column.
        """
        n = len(batch)
        if n == 0:
            return self.rows
        meta = self.meta
        start = int(meta["rows"])
        stop = start + n
        missing = [c for c in PROVENANCE_COLUMNS if c not in batch.provenance]
        if missing:
            raise DatabaseError(f"{self.path}: batch lacks provenance column(s) {missing}")
        arrays: dict[str, npt.NDArray[Any]] = {"locations": batch.locations, "keys": batch.keys, "values": batch.values}
        for name, dtype in PROVENANCE_COLUMNS.items():
            col = np.asarray(batch.provenance[name])
            arrays[name] = col.astype(str) if dtype == "str" else col.astype(dtype)
        for name, data in arrays.items():
            arr = self.group[name]
            if data.shape[0] != n or tuple(data.shape[1:]) != tuple(arr.shape[1:]):
                raise DatabaseError(f"{self.path}: batch array {name!r} has shape {data.shape}, expected "
                                    f"({n}, *{tuple(arr.shape[1:])})")
        record = dict(meta[INTEGRITY_KEY])
        record["arrays"] = dict(record["arrays"])
        tails: dict[str, tuple[int, list[npt.NDArray[Any]]]] = {}
        for name, data in arrays.items():
            arr = self.group[name]
            arr.resize((stop, *arr.shape[1:]))
            arr.with_config(WRITE_CONFIG)[start:stop] = data
            record["arrays"][name], tails[name] = self._digests(name, arr, record["arrays"][name], start, data)
        # commit: rows and the record of exactly those rows, in one attributes write, after the data
        self._update_meta(rows=stop, **{INTEGRITY_KEY: record})
        self._tails = tails
        return stop

    def _digests(self, name: str, arr: Any, entry: Mapping[str, Any], start: int, data: npt.NDArray[Any]
                 ) -> tuple[dict[str, Any], tuple[int, list[npt.NDArray[Any]]]]:
        """The array's record entry once ``data`` is written at ``start``, and the new partial tail."""
        chunk_rows = int(entry["chunk_rows"])
        stop = start + len(data)
        first_block = start // chunk_rows
        head: list[npt.NDArray[Any]] = []
        if first_block * chunk_rows < start:  # the batch completes a partial block: its committed head
            tail = self._tails.get(name)
            cached = tail is not None and tail[0] == first_block * chunk_rows and \
                sum(len(p) for p in tail[1]) == start - tail[0]
            head = tail[1] if tail is not None and cached else [np.asarray(arr[first_block * chunk_rows:start])]
        digests = list(entry["digests"][:first_block])
        pieces: list[npt.NDArray[Any]] = []
        for block in range(first_block, (stop - 1) // chunk_rows + 1):
            lo, hi = block * chunk_rows, min((block + 1) * chunk_rows, stop)
            pieces = [*(head if lo < start else []), data[max(lo, start) - start:hi - start]]
            digests.append(block_digest(pieces))
        last = ((stop - 1) // chunk_rows) * chunk_rows
        new_tail = (last, [_joined(pieces)]) if stop - last < chunk_rows else (stop, [])
        updated: dict[str, Any] = {"chunk_rows": chunk_rows, "digests": digests}
        unstored = [b for b in entry.get("unstored", []) if b < first_block]
        if unstored:
            updated["unstored"] = unstored
        return updated, new_tail

    def set_failures(self, failures: Mapping[str, tuple[str, str]]) -> None:
        """Replace the failure table (location id -> (reason, detail))."""
        f = self.group["failures"]
        ids = sorted(failures)
        columns = {"location_id": ids, "reason": [failures[i][0] for i in ids],
                   "detail": [failures[i][1][:500] for i in ids]}
        for name, values in columns.items():
            arr = f[name]
            arr.resize((len(ids),))
            if ids:
                arr[:] = np.asarray(values, dtype=str)
        self._update_meta(failures=len(ids))

    def _update_meta(self, **updates: Any) -> None:
        meta = self.meta
        meta.update(to_jsonable(updates))
        self.group.attrs[ATTRS_KEY] = meta

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Record the run summary (counts, timings) in the attributes."""
        self._update_meta(build_report=dict(summary))


def failure_table(path: str | Path | StoreLocation) -> list[tuple[str, str, str]]:
    """(location id, reason, detail) rows of a built database's failure table (local or object storage)."""
    import zarr

    loc = StoreLocation.parse(path)
    with loc.errors("reading"):
        group: Any = zarr.open_group(loc.zarr_store(read_only=True), mode="r")
        return _failure_rows(group)


def _failure_rows(group: Any) -> list[tuple[str, str, str]]:
    if "failures" not in group:
        return []
    f = group["failures"]
    n = f["location_id"].shape[0]
    return [(str(a), str(b), str(c)) for a, b, c in zip(*(f[c][:n] for c in FAILURE_COLUMNS))] if n else []


