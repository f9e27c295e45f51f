"""The retrieval database: in-memory form, validation, and its npz / Zarr v3 files.

Zarr v3 layout (one group; every array has ``dimension_names`` so ``xr.open_zarr`` reads it):

* ``locations`` (row, lonlat) float64: (lon, lat) degrees of each row's chip centre
* ``keys`` (row, key_feature) float32: SatCLIP image embeddings (stored raw, L2-normalised on use)
* ``values`` (row, value_feature) float32: SatMAE image embeddings
* one (row,) array per provenance column (``source_row``, ``location_id``, ``item_id``, ...)
* group attribute ``range_dist_database``: format version, rows, dims, key/value models, origin,
  radiometry and how rows were made, and the list of provenance columns.

The published RANGE ``.npz`` layout is ``locs`` (M, 2), ``satclip_embeddings`` (M, 256),
``image_embeddings`` (M, 1024).
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from range_dist.errors import DatabaseError
from range_dist.util.jsonable import to_jsonable

FORMAT_NAME = "range-dist-retrieval-database"
FORMAT_VERSION = 1
ATTRS_KEY = "range_dist_database"

NPZ_LOCATIONS, NPZ_KEYS, NPZ_VALUES = "locs", "satclip_embeddings", "image_embeddings"
NPZ_SAMPLE_NOTE = "range_dist_sample_note"  # extra array in sample databases only

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
        values: (M, D) float32 SatMAE embeddings.
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
        self.locations = np.ascontiguousarray(self.locations, dtype=np.float64)
        self.keys = np.ascontiguousarray(self.keys, dtype=np.float32)
        self.values = np.ascontiguousarray(self.values, dtype=np.float32)
        self.validate()

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
            bad = ~np.isfinite(arr).all(axis=1)
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
        norms = np.linalg.norm(self.keys.astype(np.float64), axis=1)
        bad = norms < 1e-12
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
        """SHA-256 of the row content (locations, keys, values), independent of the file format."""
        digest = hashlib.sha256()
        for arr in (self.locations, self.keys, self.values):
            digest.update(str(arr.shape).encode())
            digest.update(np.ascontiguousarray(arr).view(np.uint8).data)
        return digest.hexdigest()

    # ------------------------------------------------------------------ I/O
    @classmethod
    def open(cls, path: str | Path) -> RetrievalDatabase:
        """Open a database in the published ``.npz`` form or the Zarr form.

        Raises:
            DatabaseError: missing file, unknown format, missing arrays or bad content.
        """
        path = Path(path)
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
    def _open_npz(cls, path: Path) -> RetrievalDatabase:
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [k for k in (NPZ_LOCATIONS, NPZ_KEYS, NPZ_VALUES) if k not in npz.files]
                if missing:
                    raise DatabaseError(
                        f"{path}: missing array(s) {missing} (has {npz.files}); the published RANGE "
                        f"layout has {NPZ_LOCATIONS!r} (M, 2), {NPZ_KEYS!r} (M, 256), {NPZ_VALUES!r} (M, 1024)"
                    )
                locs, keys, values = npz[NPZ_LOCATIONS], npz[NPZ_KEYS], npz[NPZ_VALUES]
                sample_note = str(npz[NPZ_SAMPLE_NOTE]) if NPZ_SAMPLE_NOTE in npz.files else None
        except (OSError, ValueError) as exc:
            raise DatabaseError(f"{path}: cannot read as .npz ({exc}); re-download or re-export it") from exc
        attrs = {
            "origin": f"npz:{path.name}",
            "key_model": PUBLISHED_KEY_MODEL,
            "value_model": PUBLISHED_VALUE_MODEL,
            "rows_made_by": "published RANGE database (S2-100K chips); row alignment not guaranteed upstream",
        }
        if sample_note is not None:
            attrs.update(key_model=sample_note, value_model=sample_note, sample=True,  # type: ignore[call-overload]
                         rows_made_by="synthetic rows (range-dist sample-assets)")
        return cls(locs, keys, values, {"source_row": np.arange(len(locs), dtype=np.int64)}, attrs, source=str(path))

    @classmethod
    def _open_zarr(cls, path: Path) -> RetrievalDatabase:
        import zarr

        group: Any = zarr.open_group(str(path), mode="r")  # zarr's typing of Group indexing is too narrow
        meta: dict[str, Any] = dict(group.attrs.get(ATTRS_KEY, {}))
        if meta.get("format") != FORMAT_NAME:
            raise DatabaseError(f"{path}: Zarr group without {ATTRS_KEY!r} attributes; not a range-dist database")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise DatabaseError(f"{path}: database format {meta['format_version']} is newer; upgrade range-dist")
        arrays = {}
        for name in ("locations", "keys", "values"):
            if name not in group:
                raise DatabaseError(f"{path}: missing array {name!r}")
            arrays[name] = group[name][...]
        provenance = {c: np.asarray(group[c][...]) for c in meta.get("provenance_columns", []) if c in group}
        attrs = {k: v for k, v in meta.items() if k not in ("format", "format_version", "rows", "key_dim",
                                                             "value_dim", "provenance_columns")}
        return cls(arrays["locations"], arrays["keys"], arrays["values"], provenance, attrs, source=str(path))

    def to_zarr(self, path: str | Path, overwrite: bool = False, rows_per_chunk: int = 8192) -> Path:
        """Write the Zarr v3 form. Refuses to replace an existing path unless ``overwrite``."""
        import zarr

        path = Path(path)
        if path.exists() and not overwrite:
            raise DatabaseError(f"{path} already exists; pass --overwrite to replace it")
        tmp = path.with_name(path.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        chunk = min(rows_per_chunk, self.rows)
        specs: dict[str, tuple[npt.NDArray[Any], tuple[str, str]]] = {
            "locations": (self.locations, ("row", "lonlat")),
            "keys": (self.keys, ("row", "key_feature")),
            "values": (self.values, ("row", "value_feature")),
        }
        for name, (arr, dims) in specs.items():
            out = group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=(chunk, arr.shape[1]),
                                     dimension_names=dims)
            out[...] = arr
        for name, col in self.provenance.items():
            col = np.asarray(col)
            dtype: Any = str if col.dtype.kind in "UOS" else col.dtype
            out = group.create_array(name, shape=col.shape, dtype=dtype, chunks=(chunk,), dimension_names=("row",))
            out[...] = col.astype(str) if dtype is str else col
        group.attrs[ATTRS_KEY] = to_jsonable(self.describe())
        # Write to a side directory and swap in, so a failure never leaves a half-written database.
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
        return path

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
