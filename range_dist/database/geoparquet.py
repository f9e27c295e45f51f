"""Export a retrieval database to GeoParquet: one row per chip, WGS84 point geometry (WKB)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from range_dist.database.store import RetrievalDatabase
from range_dist.errors import DatabaseError


def point_wkb(lon: float, lat: float) -> bytes:
    """Little-endian WKB of a 2-D point."""
    return struct.pack("<BIdd", 1, 1, float(lon), float(lat))


def to_geoparquet(db: RetrievalDatabase, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``geometry`` (WKB point, OGC:CRS84), ``lon``, ``lat``, the provenance columns, ``key`` and
    ``value`` (fixed-size float32 lists), with GeoParquet 1.1 ``geo`` metadata.

    Raises:
        DatabaseError: the output exists and ``overwrite`` is false.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.exists() and not overwrite:
        raise DatabaseError(f"{path} already exists; pass --overwrite to replace it")
    lon, lat = db.locations[:, 0], db.locations[:, 1]
    columns: dict[str, pa.Array] = {
        "geometry": pa.array([point_wkb(a, b) for a, b in zip(lon, lat)], type=pa.binary()),
        "lon": pa.array(lon), "lat": pa.array(lat),
    }
    for name, col in sorted(db.provenance.items()):
        arr = np.asarray(col)
        columns[name] = pa.array(arr.astype(str) if arr.dtype.kind in "UOS" else arr)
    for name, mat in (("key", db.keys), ("value", db.values)):
        flat = pa.array(np.ascontiguousarray(mat, np.float32).ravel())
        columns[name] = pa.FixedSizeListArray.from_arrays(flat, mat.shape[1])
    table = pa.table(columns)
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"],
                                    "bbox": [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())]}}}
    meta = {b"geo": json.dumps(geo).encode(),
            b"range_dist_database": json.dumps(db.describe(), default=str).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    pq.write_table(table, path)
    return path
